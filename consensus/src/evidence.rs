//! Equivocation evidence and the slashing rule.
//!
//! **Evidence.** Two messages signed by the same validator for this run at the same height and
//! round that conflict: two votes of the same type naming different values (nil counts as a
//! value), or two different proposal headers.
//!
//! **Slashing rule.** Evidence travels inside a proposal's [`crate::context::Value`]. When the
//! block at height `h` that carries it is committed, the offender loses **all** of its stake
//! from height `h + 1` on: it leaves the validator set, its votes stop counting, and it can no
//! longer be chosen as proposer. Each offender is slashed once; evidence against a validator
//! that is already slashed, or that had no stake, is refused as invalid. Removing all stake is
//! the simplest rule that keeps the < 1/3 faulty-stake assumption true after a detected fault.

use malachitebft_core_types::{Round, SignedMessage};
use serde::{Deserialize, Serialize};

use crate::context::{Height, ProposalHeader, SignedVote, TabswarmContext, Vote};
use crate::identity::{Address, Signature};

/// A vote with its signature, in wire form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignedVoteMsg {
    /// The vote.
    pub vote: Vote,
    /// Its signature.
    pub signature: Signature,
}

impl From<SignedVote> for SignedVoteMsg {
    fn from(v: SignedVote) -> Self {
        Self {
            vote: v.message,
            signature: v.signature,
        }
    }
}

impl From<SignedVoteMsg> for SignedVote {
    fn from(v: SignedVoteMsg) -> Self {
        SignedMessage::new(v.vote, v.signature)
    }
}

/// A proposal header with its signature.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignedHeader {
    /// The header.
    pub header: ProposalHeader,
    /// The proposer's signature over it.
    pub signature: Signature,
}

/// Proof that a validator signed two conflicting messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Evidence {
    /// Two votes of one type at one height and round for different values.
    DoubleVote {
        /// The lesser of the two (by canonical order).
        first: SignedVoteMsg,
        /// The greater.
        second: SignedVoteMsg,
    },
    /// Two different proposals at one height and round.
    DoubleProposal {
        /// The lesser of the two.
        first: SignedHeader,
        /// The greater.
        second: SignedHeader,
    },
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The two messages are by different validators or at different heights, rounds or types.
    #[error("the two messages are not at the same height, round and kind by one signer")]
    NotComparable,
    /// The two messages do not conflict.
    #[error("the two messages do not conflict")]
    NoConflict,
    /// The pair is not in canonical order, so the same fault could be counted twice.
    #[error("the pair is not in canonical order")]
    NotCanonical,
    /// A signature does not verify for this run.
    #[error("a signature does not verify for this run")]
    BadSignature,
}

impl Evidence {
    /// Evidence from two conflicting votes in any order.
    pub fn double_vote(a: SignedVoteMsg, b: SignedVoteMsg) -> Self {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Evidence::DoubleVote { first, second }
    }

    /// Evidence from two conflicting proposal headers in any order.
    pub fn double_proposal(a: SignedHeader, b: SignedHeader) -> Self {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Evidence::DoubleProposal { first, second }
    }

    /// The validator at fault.
    pub fn offender(&self) -> Address {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.validator,
            Evidence::DoubleProposal { first, .. } => first.header.proposer,
        }
    }

    /// Height of the fault.
    pub fn height(&self) -> Height {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.height,
            Evidence::DoubleProposal { first, .. } => first.header.height,
        }
    }

    /// Round of the fault.
    pub fn round(&self) -> Round {
        match self {
            Evidence::DoubleVote { first, .. } => first.vote.round,
            Evidence::DoubleProposal { first, .. } => first.header.round,
        }
    }

    /// Checks the pair conflicts and both signatures verify in `ctx`'s run.
    pub fn verify(&self, ctx: &TabswarmContext) -> Result<(), EvidenceError> {
        match self {
            Evidence::DoubleVote { first, second } => {
                let (a, b) = (&first.vote, &second.vote);
                if a.validator != b.validator
                    || a.height != b.height
                    || a.round != b.round
                    || a.vote_type != b.vote_type
                {
                    return Err(EvidenceError::NotComparable);
                }
                if a.value == b.value {
                    return Err(EvidenceError::NoConflict);
                }
                if first >= second {
                    return Err(EvidenceError::NotCanonical);
                }
                let ok = |m: &SignedVoteMsg| ctx.verify_vote(&m.clone().into());
                if !ok(first) || !ok(second) {
                    return Err(EvidenceError::BadSignature);
                }
                Ok(())
            }
            Evidence::DoubleProposal { first, second } => {
                let (a, b) = (&first.header, &second.header);
                if a.proposer != b.proposer || a.height != b.height || a.round != b.round {
                    return Err(EvidenceError::NotComparable);
                }
                if a == b {
                    return Err(EvidenceError::NoConflict);
                }
                if first >= second {
                    return Err(EvidenceError::NotCanonical);
                }
                let ok = |m: &SignedHeader| {
                    m.signature
                        .verify(&m.header.proposer, &ctx.proposal_signing_bytes(&m.header))
                };
                if !ok(first) || !ok(second) {
                    return Err(EvidenceError::BadSignature);
                }
                Ok(())
            }
        }
    }
}

/// Whether two votes conflict (same signer, height, round, type; different values).
pub fn votes_conflict(a: &Vote, b: &Vote) -> bool {
    a.validator == b.validator
        && a.height == b.height
        && a.round == b.round
        && a.vote_type == b.vote_type
        && a.value != b.value
}
