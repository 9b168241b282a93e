//! The stake table at a height and stake-weighted proposer selection.

use ed25519_dalek::VerifyingKey;
use malachitebft_core_types::{Round, VotingPower};
use sha2::{Digest, Sha256};

use super::{Height, TabswarmContext};
use crate::identity::Address;

/// A validator with its stake as voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Address (its public key bytes).
    pub address: Address,
    /// Public key.
    pub public_key: VerifyingKey,
    /// Stake.
    pub power: VotingPower,
}

impl malachitebft_core_types::Validator<TabswarmContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// Validators with positive stake, sorted by address, plus the proposer seed for the height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total: VotingPower,
    /// Hash of the previous block (or the run id at height 1): seeds proposer choice, so
    /// nobody can pick stakes to be proposer at a chosen height before that block exists.
    seed: [u8; 32],
}

impl ValidatorSet {
    /// Builds a set from `(address, stake)`; zero-stake entries and invalid keys are dropped.
    pub fn new(entries: impl IntoIterator<Item = (Address, u64)>, seed: [u8; 32]) -> Self {
        let mut validators: Vec<Validator> = entries
            .into_iter()
            .filter(|(_, power)| *power > 0)
            .filter_map(|(address, power)| {
                Some(Validator {
                    address,
                    public_key: address.public_key()?,
                    power,
                })
            })
            .collect();
        validators.sort_by_key(|v| v.address);
        validators.dedup_by_key(|v| v.address);
        let total = validators.iter().map(|v| v.power).sum();
        Self {
            validators,
            total,
            seed,
        }
    }

    /// The same validators and stakes with another proposer seed (no key is decompressed
    /// again).
    pub fn with_seed(&self, seed: [u8; 32]) -> Self {
        Self {
            validators: self.validators.clone(),
            total: self.total,
            seed,
        }
    }

    /// The validators, sorted by address.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Stake of `address` (0 if absent).
    pub fn power_of(&self, address: &Address) -> VotingPower {
        self.get(address).map_or(0, |v| v.power)
    }

    /// Look up a validator.
    pub fn get(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by_key(address, |v| v.address)
            .ok()
            .and_then(|i| self.validators.get(i))
    }

    /// Proposer for `(height, round)`: a stake-weighted draw from
    /// `sha256(domain || seed || height || round)`, so each validator proposes a share of
    /// rounds equal to its share of stake, and anyone can recompute the choice.
    pub fn proposer(&self, height: Height, round: Round) -> Option<&Validator> {
        if self.total == 0 {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"tabswarm/proposer/v1\0");
        h.update(self.seed);
        h.update(height.0.to_le_bytes());
        h.update(round.as_i64().to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut word = [0u8; 16];
        word.copy_from_slice(&digest[..16]);
        // 128-bit draw reduced mod total: bias below 2^-64, negligible.
        let ticket = (u128::from_le_bytes(word) % u128::from(self.total)) as u64;
        let mut acc = 0u64;
        self.validators.iter().find(|v| {
            acc += v.power;
            ticket < acc
        })
    }
}

impl malachitebft_core_types::ValidatorSet<TabswarmContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.total
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}
