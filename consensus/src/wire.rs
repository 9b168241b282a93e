//! Consensus messages on the wire: one enum, a version byte, a size limit per kind.
//!
//! Decoding checks, in order: overall size, version, postcard structure, trailing bytes, the
//! per-kind limit and canonical form. Signatures are checked later by the consensus core
//! (through [`crate::node`]'s effect handler), where the validator set is known.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::context::{Proposal, SignedProposal, TabswarmContext};
use crate::evidence::{Evidence, SignedVoteMsg};
use crate::identity::Signature;

/// Largest vote encoding.
pub const VOTE_LIMIT: usize = 256;
/// Largest proposal encoding (up to [`crate::context::MAX_UPDATES`] updates plus evidence).
pub const PROPOSAL_LIMIT: usize = 400 * 1024;
/// Largest evidence encoding.
pub const EVIDENCE_LIMIT: usize = 1024;
/// Largest message of any kind; checked before parsing anything.
pub const MAX_MESSAGE: usize = PROPOSAL_LIMIT;

/// A signed proposal in wire form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposalMsg {
    /// The proposal (with its full value).
    pub proposal: Proposal,
    /// Signature over the proposal's header.
    pub signature: Signature,
}

impl From<SignedProposal> for SignedProposalMsg {
    fn from(p: SignedProposal) -> Self {
        Self {
            proposal: p.message,
            signature: p.signature,
        }
    }
}

impl From<SignedProposalMsg> for SignedProposal {
    fn from(p: SignedProposalMsg) -> Self {
        SignedProposal::new(p.proposal, p.signature)
    }
}

/// Every message a validator gossips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A prevote or precommit.
    Vote(SignedVoteMsg),
    /// A proposal.
    Proposal(SignedProposalMsg),
    /// Equivocation evidence.
    Evidence(Evidence),
}

impl Message {
    /// The size limit of this message's kind.
    pub fn limit(&self) -> usize {
        match self {
            Message::Vote(_) => VOTE_LIMIT,
            Message::Proposal(_) => PROPOSAL_LIMIT,
            Message::Evidence(_) => EVIDENCE_LIMIT,
        }
    }

    /// Short name of the kind, for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Vote(_) => "vote",
            Message::Proposal(_) => "proposal",
            Message::Evidence(_) => "evidence",
        }
    }

    /// Canonical bytes: version byte then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode(self, self.limit())
    }

    /// Parse bytes, never panicking, saying why they were refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg: Message = codec::decode(bytes, MAX_MESSAGE)?;
        if bytes.len() > msg.limit() {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                limit: msg.limit(),
            });
        }
        if let Message::Proposal(p) = &msg {
            p.proposal.value.check_canonical()?;
        }
        Ok(msg)
    }

    /// Whether the signatures inside verify for `ctx`'s run (evidence also checks the conflict).
    pub fn verify(&self, ctx: &TabswarmContext) -> bool {
        match self {
            Message::Vote(v) => ctx.verify_vote(&v.clone().into()),
            Message::Proposal(p) => ctx.verify_proposal(&p.clone().into()),
            Message::Evidence(e) => e.verify(ctx).is_ok(),
        }
    }
}
