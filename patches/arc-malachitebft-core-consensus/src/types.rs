use derive_where::derive_where;
use thiserror::Error;

use malachitebft_core_types::{
    Context, PolkaCertificate, Proposal, Round, RoundCertificate, Signature, SignedProposal,
    SignedVote, Validity, Vote,
};

pub use malachitebft_core_types::ValuePayload;

pub use malachitebft_peer::PeerId;
pub use multiaddr::Multiaddr;

/// The role that the node is playing in the consensus protocol during a round.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node is the proposer for the current round.
    Proposer,
    /// The node is a validator for the current round.
    Validator,
    /// The node is not participating in the consensus protocol for the current round.
    None,
}

/// A signed consensus message, ie. a signed vote or a signed proposal.
#[derive_where(Clone, Debug, PartialEq, Eq)]
pub enum SignedConsensusMsg<Ctx: Context> {
    Vote(SignedVote<Ctx>),
    Proposal(SignedProposal<Ctx>),
}

impl<Ctx: Context> SignedConsensusMsg<Ctx> {
    pub fn height(&self) -> Ctx::Height {
        match self {
            SignedConsensusMsg::Vote(msg) => msg.height(),
            SignedConsensusMsg::Proposal(msg) => msg.height(),
        }
    }

    pub fn round(&self) -> Round {
        match self {
            SignedConsensusMsg::Vote(msg) => msg.round(),
            SignedConsensusMsg::Proposal(msg) => msg.round(),
        }
    }

    pub fn signature(&self) -> &Signature<Ctx> {
        match self {
            SignedConsensusMsg::Vote(msg) => &msg.signature,
            SignedConsensusMsg::Proposal(msg) => &msg.signature,
        }
    }
}

/// A message that can be sent by the consensus layer
#[derive_where(Clone, Debug, PartialEq, Eq)]
pub enum ConsensusMsg<Ctx: Context> {
    Vote(Ctx::Vote),
    Proposal(Ctx::Proposal),
}

/// A value to propose by the current node.
/// Used only when the node is the proposer.
#[derive_where(Clone, Debug, PartialEq, Eq)]
pub struct LocallyProposedValue<Ctx: Context> {
    pub height: Ctx::Height,
    pub round: Round,
    pub value: Ctx::Value,
}

impl<Ctx: Context> LocallyProposedValue<Ctx> {
    pub fn new(height: Ctx::Height, round: Round, value: Ctx::Value) -> Self {
        Self {
            height,
            round,
            value,
        }
    }
}

/// A value proposed by a validator (typically delivered from the application / value builder).
///
/// `round` and `valid_round` are **metadata** the app attaches for its own streaming and
/// lock context (e.g. WAL replay, sync). When matching a completed
/// value to a signed gossip `Proposal` in **proposal-only** or **proposal-and-parts** mode,
/// Malachite correlates primarily by **height** and **value** (`value` / `id(value)`):
/// any stored payload at this height with the same id may form a full proposal with a proposal
/// for that id, regardless of whether `round` / `valid_round` match the proposal’s `round` /
/// `pol_round`. The signed proposal still carries the authoritative consensus rounds for the driver.
#[derive_where(Clone, Debug, PartialEq, Eq)]
pub struct ProposedValue<Ctx: Context> {
    pub height: Ctx::Height,
    pub round: Round,
    pub valid_round: Round,
    pub proposer: Ctx::Address,
    pub value: Ctx::Value,
    pub validity: Validity,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VoteExtensionError {
    #[error("Invalid vote extension signature")]
    InvalidSignature,
    #[error("Invalid vote extension")]
    InvalidVoteExtension,
}

/// The application's verdict on each vote extension it was asked about, paired
/// with the address of the validator that produced it.
pub type VoteExtensionVerdicts<Ctx> =
    Vec<(<Ctx as Context>::Address, Result<(), VoteExtensionError>)>;

#[derive_where(Clone, Debug, PartialEq, Eq)]
pub enum LivenessMsg<Ctx: Context> {
    Vote(SignedVote<Ctx>),
    PolkaCertificate(PolkaCertificate<Ctx>),
    SkipRoundCertificate(RoundCertificate<Ctx>),
}

/// Misbehavior evidence collected during a height.
///
/// Contains both proposal and vote equivocation records indexed by validator addr.
#[derive_where(Clone, Debug)]
pub struct MisbehaviorEvidence<Ctx: Context> {
    pub proposals: malachitebft_core_driver::proposal_keeper::EvidenceMap<Ctx>,
    pub votes: malachitebft_core_votekeeper::EvidenceMap<Ctx>,
}

impl<Ctx: Context> MisbehaviorEvidence<Ctx> {
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty() && self.votes.is_empty()
    }
}
