//! `TabswarmContext`: the types Malachite runs on, one file per type as in Malachite's own
//! test context (`code/crates/test/src/`).

mod height;
mod proposal;
mod signing;
mod validators;
mod value;
mod vote;

use malachitebft_core_types::{LinearTimeouts, NilOrVal, Round, SignedMessage, VoteType};

pub use height::Height;
pub use proposal::{NoParts, Proposal, ProposalHeader};
pub use signing::{Ed25519, KeyDecodeError};
pub use validators::{Validator, ValidatorSet};
pub use value::{IncludedUpdate, MAX_EVIDENCE, MAX_UPDATES, RoundProposal, Value, ValueId};
pub use vote::Vote;

use crate::codec;
use crate::genesis::{RunId, TimeoutsMs};
use crate::identity::{Address, Keypair};
use crate::sign::{Domain, signing_bytes};

/// A vote with its signature.
pub type SignedVote = SignedMessage<TabswarmContext, Vote>;
/// A proposal with its signature.
pub type SignedProposal = SignedMessage<TabswarmContext, Proposal>;

/// The Malachite context for one run: the run id binds every signature to it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TabswarmContext {
    run: RunId,
}

impl TabswarmContext {
    /// The context of run `run`.
    pub fn new(run: RunId) -> Self {
        Self { run }
    }

    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// Sign a vote for this run.
    pub fn sign_vote(&self, key: &Keypair, vote: Vote) -> SignedVote {
        let bytes = signing_bytes(Domain::Vote, &self.run, &codec::canonical(&vote));
        SignedMessage::new(vote, key.sign_raw(&bytes))
    }

    /// Sign a proposal for this run. The signed bytes are its [`ProposalHeader`], which names
    /// the value by hash, so evidence of a double proposal stays small.
    pub fn sign_proposal(&self, key: &Keypair, proposal: Proposal) -> SignedProposal {
        let signature = key.sign_raw(&self.proposal_signing_bytes(&proposal.header()));
        SignedMessage::new(proposal, signature)
    }

    /// The bytes a proposal signature covers.
    pub fn proposal_signing_bytes(&self, header: &ProposalHeader) -> Vec<u8> {
        signing_bytes(Domain::Proposal, &self.run, &codec::canonical(header))
    }

    /// Whether `vote` is signed by its validator for this run.
    pub fn verify_vote(&self, vote: &SignedVote) -> bool {
        let bytes = signing_bytes(Domain::Vote, &self.run, &codec::canonical(&vote.message));
        vote.signature.verify(&vote.message.validator, &bytes)
    }

    /// As [`Self::verify_vote`], with the signer's key already decompressed (it must be the
    /// key of `vote`'s validator; the caller checks that).
    pub fn verify_vote_with_key(
        &self,
        key: &ed25519_dalek::VerifyingKey,
        vote: &SignedVote,
    ) -> bool {
        let bytes = signing_bytes(Domain::Vote, &self.run, &codec::canonical(&vote.message));
        vote.signature.verify_with_key(key, &bytes)
    }

    /// As [`Self::verify_proposal`], with the proposer's key already decompressed.
    pub fn verify_proposal_with_key(
        &self,
        key: &ed25519_dalek::VerifyingKey,
        proposal: &SignedProposal,
    ) -> bool {
        let bytes = self.proposal_signing_bytes(&proposal.message.header());
        proposal.signature.verify_with_key(key, &bytes)
    }

    /// Whether `proposal` is signed by its proposer for this run.
    pub fn verify_proposal(&self, proposal: &SignedProposal) -> bool {
        let bytes = self.proposal_signing_bytes(&proposal.message.header());
        proposal
            .signature
            .verify(&proposal.message.proposer, &bytes)
    }
}

/// Malachite's linear timeouts from the genesis milliseconds: each grows by its delta per round.
pub fn timeouts(ms: &TimeoutsMs) -> LinearTimeouts {
    use core::time::Duration;
    LinearTimeouts {
        propose: Duration::from_millis(ms.propose),
        propose_delta: Duration::from_millis(ms.propose_delta),
        prevote: Duration::from_millis(ms.prevote),
        prevote_delta: Duration::from_millis(ms.prevote_delta),
        precommit: Duration::from_millis(ms.precommit),
        precommit_delta: Duration::from_millis(ms.precommit_delta),
        rebroadcast: Duration::from_millis(ms.rebroadcast),
        max_timeout: Duration::from_millis(ms.max),
    }
}

impl malachitebft_core_types::Context for TabswarmContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = Value;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        // Malachite's signature returns a reference, so an empty set has no answer; the host
        // never starts a height with an empty set (checked in `Node::start_height`).
        #[allow(clippy::expect_used)]
        validator_set
            .proposer(height, round)
            .or_else(|| validator_set.validators().first())
            .expect("validator set is never empty while consensus runs")
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Value,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: Address,
    ) -> Vote {
        Vote {
            height,
            round,
            vote_type: VoteType::Prevote,
            value: value_id,
            validator: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: Address,
    ) -> Vote {
        Vote {
            height,
            round,
            vote_type: VoteType::Precommit,
            value: value_id,
            validator: address,
        }
    }
}
