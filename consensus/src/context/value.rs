//! The value validators agree on: one round's proposal plus the evidence it carries.

use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, DecodeError};
use crate::evidence::Evidence;
use crate::genesis::AggregationRule;

/// Most updates one round may include; bounds the proposal size.
pub const MAX_UPDATES: usize = 4096;
/// Most evidence items one block may carry.
pub const MAX_EVIDENCE: usize = 64;

/// A trainer's update accepted into a round.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IncludedUpdate {
    /// Hash identifying the update announcement.
    pub id: [u8; 32],
    /// The trainer to credit (its peer key).
    pub trainer: [u8; 32],
}

/// What a round proposes (DESIGN.md, "A round", step 3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoundProposal {
    /// Hash of the parameters the updates were trained from.
    pub base_param_hash: [u8; 32],
    /// Included updates, sorted by id, no id twice.
    pub updates: Vec<IncludedUpdate>,
    /// The rule used to aggregate them.
    pub aggregation_rule: AggregationRule,
    /// Hash of the parameters after applying the aggregate.
    pub result_param_hash: [u8; 32],
}

impl RoundProposal {
    /// Whether the update list is sorted by id with no duplicates and within the limit.
    pub fn is_canonical(&self) -> bool {
        self.updates.len() <= MAX_UPDATES && self.updates.windows(2).all(|w| w[0].id < w[1].id)
    }
}

/// The value decided at a height.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Value {
    /// The round's proposal.
    pub proposal: RoundProposal,
    /// Equivocation evidence the proposer includes; it slashes from the next height.
    ///
    /// It is part of the agreed value (not added after the decision) so every honest peer
    /// builds the same block and the same hash chain.
    pub evidence: Vec<Evidence>,
}

impl Value {
    /// A value with no evidence.
    pub fn new(proposal: RoundProposal) -> Self {
        Self {
            proposal,
            evidence: Vec::new(),
        }
    }

    /// Checks the structural rules a decoder enforces.
    pub fn check_canonical(&self) -> Result<(), DecodeError> {
        if !self.proposal.is_canonical() {
            return Err(DecodeError::NotCanonical(
                "update ids must be sorted and unique",
            ));
        }
        if self.evidence.len() > MAX_EVIDENCE {
            return Err(DecodeError::NotCanonical("too much evidence"));
        }
        Ok(())
    }
}

/// Hash of a [`Value`]'s canonical bytes: what votes name.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueId(pub [u8; 32]);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueId({self})")
    }
}

impl malachitebft_core_types::Value for Value {
    type Id = ValueId;

    fn id(&self) -> ValueId {
        let mut h = Sha256::new();
        h.update(b"tabswarm/value/v1\0");
        h.update(codec::canonical(self));
        ValueId(h.finalize().into())
    }
}
