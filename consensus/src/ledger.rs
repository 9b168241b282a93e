//! The ledger: a hash chain of committed blocks, checkable from genesis (DESIGN.md, "A round",
//! steps 5 and 6).
//!
//! A block's hash covers its height, parent hash, value id and credits, but not its commit
//! certificate: two honest peers can collect different (equally valid) sets of precommits for
//! the same decision, and their chains must still hash the same.

use std::collections::{BTreeMap, BTreeSet};

use malachitebft_core_types::{
    CommitCertificate, Height as _, NilOrVal, Round, Value as _, VoteType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::context::{Height, TabswarmContext, ValidatorSet, Value, ValueId, Vote};
use crate::evidence::{Evidence, EvidenceError};
use crate::genesis::Genesis;
use crate::identity::{Address, Signature};

/// Precommits for one value at one height and round from more than 2/3 of stake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCert {
    /// Height.
    pub height: Height,
    /// Round of the decision.
    pub round: Round,
    /// The decided value.
    pub value_id: ValueId,
    /// Signers and their precommit signatures.
    pub signatures: Vec<(Address, Signature)>,
}

impl From<&CommitCertificate<TabswarmContext>> for CommitCert {
    fn from(c: &CommitCertificate<TabswarmContext>) -> Self {
        Self {
            height: c.height,
            round: c.round,
            value_id: c.value_id,
            signatures: c
                .commit_signatures
                .iter()
                .map(|s| (s.address, s.signature))
                .collect(),
        }
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A signer is not a validator at this height.
    #[error("signer {0} has no stake at this height")]
    UnknownSigner(Address),
    /// A signer appears twice.
    #[error("signer {0} appears twice")]
    DuplicateSigner(Address),
    /// A signature does not verify.
    #[error("precommit signature of {0} does not verify")]
    BadSignature(Address),
    /// Not more than 2/3 of stake signed.
    #[error("signed stake {signed} of {total} is not more than 2/3")]
    NoQuorum {
        /// Stake that signed.
        signed: u64,
        /// Total stake.
        total: u64,
    },
}

impl CommitCert {
    /// Checks every precommit signature and that signers hold more than 2/3 of `set`'s stake.
    pub fn verify(&self, ctx: &TabswarmContext, set: &ValidatorSet) -> Result<(), CertError> {
        self.verify_with(set, |v| ctx.verify_vote(v))
    }

    /// As [`Self::verify`], with `check` judging each precommit's signature (a node that
    /// already verified some of these precommits answers from memory).
    pub fn verify_with(
        &self,
        set: &ValidatorSet,
        mut check: impl FnMut(&crate::context::SignedVote) -> bool,
    ) -> Result<(), CertError> {
        let mut seen = BTreeSet::new();
        let mut signed: u64 = 0;
        for vote in self.votes() {
            let address = vote.message.validator;
            let power = set.power_of(&address);
            if power == 0 {
                return Err(CertError::UnknownSigner(address));
            }
            if !seen.insert(address) {
                return Err(CertError::DuplicateSigner(address));
            }
            if !check(&vote) {
                return Err(CertError::BadSignature(address));
            }
            signed += power;
        }
        let total = malachitebft_core_types::ValidatorSet::total_voting_power(set);
        // Quorum in integers: 3 * signed > 2 * total (total <= u64::MAX / 3 by genesis rule).
        if u128::from(signed) * 3 <= u128::from(total) * 2 {
            return Err(CertError::NoQuorum { signed, total });
        }
        Ok(())
    }

    /// The signed precommits this certificate is made of.
    pub fn votes(&self) -> Vec<crate::context::SignedVote> {
        self.signatures
            .iter()
            .map(|(address, signature)| {
                let vote = Vote {
                    height: self.height,
                    round: self.round,
                    vote_type: VoteType::Precommit,
                    value: NilOrVal::Val(self.value_id),
                    validator: *address,
                };
                crate::context::SignedVote::new(vote, *signature)
            })
            .collect()
    }
}

/// One committed block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Height (1 for the first block).
    pub height: Height,
    /// Hash of the previous block, or the run id at height 1.
    pub parent: [u8; 32],
    /// The decided value: the round proposal and the evidence it carries.
    pub value: Value,
    /// Proof the value was decided.
    pub certificate: CommitCert,
    /// Contribution credits: one per included update, per trainer, sorted by trainer.
    pub credits: Vec<([u8; 32], u32)>,
}

impl Block {
    /// The hash that the next block names as parent.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tabswarm/block/v1\0");
        h.update(codec::canonical(&(
            self.height,
            self.parent,
            self.value.id(),
            &self.credits,
        )));
        h.finalize().into()
    }
}

/// Credits for a value: one per included update to its trainer.
pub fn credits_for(value: &Value) -> Vec<([u8; 32], u32)> {
    let mut map: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    for u in &value.proposal.updates {
        *map.entry(u.trainer).or_default() += 1;
    }
    map.into_iter().collect()
}

/// Why a value cannot be decided on top of this ledger (honest validators vote nil).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The base parameters are not the ledger's current parameters.
    #[error("base parameter hash is not the current one")]
    WrongBase,
    /// The aggregation rule differs from the genesis rule.
    #[error("aggregation rule differs from genesis")]
    WrongRule,
    /// Update ids not sorted and unique, or too many.
    #[error("update list is not canonical")]
    NotCanonical,
    /// Evidence does not verify.
    #[error("evidence invalid: {0}")]
    Evidence(#[from] EvidenceError),
    /// Evidence against a validator that is already slashed or never had stake.
    #[error("evidence against {0}, who has no stake to slash")]
    NothingToSlash(Address),
    /// Evidence from the future.
    #[error("evidence for a height not yet reached")]
    FutureEvidence,
    /// Two evidence items against one offender, or not sorted.
    #[error("evidence list is not sorted with one item per offender")]
    EvidenceNotCanonical,
}

/// Why a block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Not the next height.
    #[error("expected height {expected}, got {got}")]
    Height {
        /// The next height.
        expected: u64,
        /// What the block says.
        got: u64,
    },
    /// Wrong parent hash.
    #[error("parent hash does not match the tip")]
    Parent,
    /// The certificate is for another height or value.
    #[error("certificate is for another height or value")]
    CertMismatch,
    /// The certificate is invalid.
    #[error("certificate: {0}")]
    Cert(#[from] CertError),
    /// The value is invalid.
    #[error("value: {0}")]
    Value(#[from] ValueError),
    /// Credits do not match the included updates.
    #[error("credits do not match the included updates")]
    Credits,
}

/// Why a chain failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block at index {index}: {error}")]
pub struct ChainError {
    /// Position of the bad block.
    pub index: usize,
    /// What was wrong.
    pub error: BlockError,
}

/// The committed chain and the state it implies (stakes, parameters, credits).
#[derive(Clone, Debug)]
pub struct Ledger {
    genesis: Genesis,
    ctx: TabswarmContext,
    blocks: Vec<Block>,
    stakes: BTreeMap<Address, u64>,
    param_hash: [u8; 32],
    credits: BTreeMap<[u8; 32], u64>,
    /// `stakes` as a validator set (keys decompressed once, not at every height).
    set: ValidatorSet,
    /// Hash of the last block (or the run id).
    tip: [u8; 32],
}

impl Ledger {
    /// An empty ledger at genesis.
    pub fn new(genesis: Genesis) -> Self {
        let ctx = TabswarmContext::new(genesis.run_id());
        let run = genesis.run_id().0;
        Self {
            set: ValidatorSet::new(genesis.validators.iter().copied(), run),
            tip: run,
            stakes: genesis.validators.iter().copied().collect(),
            param_hash: genesis.initial_param_hash,
            genesis,
            ctx,
            blocks: Vec::new(),
            credits: BTreeMap::new(),
        }
    }

    /// Replays `blocks` from genesis, checking every link, certificate, value and credit: what a
    /// late joiner does before trusting a chain.
    pub fn verify_chain(genesis: Genesis, blocks: &[Block]) -> Result<Self, ChainError> {
        let mut ledger = Self::new(genesis);
        for (index, block) in blocks.iter().enumerate() {
            ledger
                .append(block.clone())
                .map_err(|error| ChainError { index, error })?;
        }
        Ok(ledger)
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The committed blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Height of the last block (0 at genesis).
    pub fn height(&self) -> Height {
        Height(self.blocks.len() as u64)
    }

    /// Hash of the last block, or the run id at genesis.
    pub fn tip_hash(&self) -> [u8; 32] {
        self.tip
    }

    /// Current parameter hash: the base the next proposal must build on.
    pub fn param_hash(&self) -> [u8; 32] {
        self.param_hash
    }

    /// Current stake of each validator (slashed ones absent).
    pub fn stakes(&self) -> &BTreeMap<Address, u64> {
        &self.stakes
    }

    /// Credits earned so far by each trainer.
    pub fn credits(&self) -> &BTreeMap<[u8; 32], u64> {
        &self.credits
    }

    /// The validator set that decides the next height.
    pub fn next_validator_set(&self) -> ValidatorSet {
        self.set.with_seed(self.tip)
    }

    /// Whether `value` may be decided at the next height (honest validators vote nil if not).
    pub fn check_value(&self, value: &Value) -> Result<(), ValueError> {
        if value.proposal.base_param_hash != self.param_hash {
            return Err(ValueError::WrongBase);
        }
        if value.proposal.aggregation_rule != self.genesis.aggregation_rule {
            return Err(ValueError::WrongRule);
        }
        if value.check_canonical().is_err() {
            return Err(ValueError::NotCanonical);
        }
        if !value
            .evidence
            .windows(2)
            .all(|w| w[0].offender() < w[1].offender())
        {
            return Err(ValueError::EvidenceNotCanonical);
        }
        let next = self.height().0 + 1;
        for e in &value.evidence {
            e.verify(&self.ctx)?;
            if e.height().0 >= next {
                return Err(ValueError::FutureEvidence);
            }
            if !self.stakes.contains_key(&e.offender()) {
                return Err(ValueError::NothingToSlash(e.offender()));
            }
        }
        Ok(())
    }

    /// Whether this evidence could still be included (valid and the offender still staked).
    pub fn evidence_is_useful(&self, e: &Evidence) -> bool {
        e.verify(&self.ctx).is_ok()
            && e.height() <= self.height().increment()
            && self.stakes.contains_key(&e.offender())
    }

    /// Appends a block after checking it fully; applies slashing and credits.
    pub fn append(&mut self, block: Block) -> Result<(), BlockError> {
        let ctx = self.ctx;
        self.append_with(block, |v| ctx.verify_vote(v))
    }

    /// As [`Self::append`], with `check` judging each precommit signature of the certificate
    /// (see [`CommitCert::verify_with`]); every other check is made as in `append`.
    pub fn append_with(
        &mut self,
        block: Block,
        check: impl FnMut(&crate::context::SignedVote) -> bool,
    ) -> Result<(), BlockError> {
        let expected = self.height().0 + 1;
        if block.height.0 != expected {
            return Err(BlockError::Height {
                expected,
                got: block.height.0,
            });
        }
        if block.parent != self.tip_hash() {
            return Err(BlockError::Parent);
        }
        if block.certificate.height != block.height
            || block.certificate.value_id != block.value.id()
        {
            return Err(BlockError::CertMismatch);
        }
        block
            .certificate
            .verify_with(&self.next_validator_set(), check)?;
        self.check_value(&block.value)?;
        if block.credits != credits_for(&block.value) {
            return Err(BlockError::Credits);
        }
        for e in &block.value.evidence {
            self.stakes.remove(&e.offender());
        }
        if !block.value.evidence.is_empty() {
            self.set = ValidatorSet::new(self.stakes.iter().map(|(a, s)| (*a, *s)), self.tip);
        }
        self.tip = block.hash();
        for (trainer, n) in &block.credits {
            *self.credits.entry(*trainer).or_default() += u64::from(*n);
        }
        self.param_hash = block.value.proposal.result_param_hash;
        self.blocks.push(block);
        Ok(())
    }
}
