//! Consensus messages on the wire: one enum, a version byte, a size limit per kind.
//!
//! Decoding checks, in order: overall size, version, postcard structure, trailing bytes, the
//! per-kind limit and canonical form. Signatures are checked later by the consensus core
//! (through [`crate::node`]'s effect handler), where the validator set is known.

use malachitebft_core_types::{
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, VoteType,
};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::context::{Height, Proposal, SignedProposal, TabswarmContext, ValueId};
use crate::evidence::{Evidence, SignedVoteMsg};
use crate::identity::{Address, Signature};
use crate::ledger::Block;

/// Largest vote encoding.
pub const VOTE_LIMIT: usize = 256;
/// Largest proposal encoding (up to [`crate::context::MAX_UPDATES`] updates plus evidence).
pub const PROPOSAL_LIMIT: usize = 400 * 1024;
/// Largest evidence encoding.
pub const EVIDENCE_LIMIT: usize = 1024;
/// Largest block encoding: a proposal plus a certificate of up to ~4000 signatures.
pub const BLOCK_LIMIT: usize = PROPOSAL_LIMIT + 400 * 1024;
/// Largest certificate encoding (~1500 signers).
pub const CERT_LIMIT: usize = 200 * 1024;
/// Largest message of any kind; checked before parsing anything.
pub const MAX_MESSAGE: usize = BLOCK_LIMIT;

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
    /// A committed block, sent to a peer seen voting at an older height so it can catch up.
    Block(Box<Block>),
    /// Prevotes from more than 2/3 of stake for one value in one round (Malachite's
    /// `PolkaCertificate`): lets peers that lost some of those prevotes accept a re-proposal.
    Polka(PolkaCert),
    /// Votes that justify moving to a later round (Malachite's `RoundCertificate`).
    RoundCert(RoundCert),
}

/// Wire form of Malachite's `PolkaCertificate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolkaCert {
    /// Height.
    pub height: Height,
    /// Round of the prevotes.
    pub round: Round,
    /// The value they prevoted.
    pub value_id: ValueId,
    /// Signers and their prevote signatures.
    pub signatures: Vec<(Address, Signature)>,
}

/// Wire form of Malachite's `RoundCertificate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundCert {
    /// Height.
    pub height: Height,
    /// Round of the votes.
    pub round: Round,
    /// Skip (f+1 votes from a later round) or precommit-any (2f+1 precommits).
    pub cert_type: RoundCertificateType,
    /// Each vote's type, value, signer and signature.
    pub signatures: Vec<(VoteType, NilOrVal<ValueId>, Address, Signature)>,
}

impl From<PolkaCertificate<TabswarmContext>> for PolkaCert {
    fn from(c: PolkaCertificate<TabswarmContext>) -> Self {
        Self {
            height: c.height,
            round: c.round,
            value_id: c.value_id,
            signatures: c
                .polka_signatures
                .into_iter()
                .map(|s| (s.address, s.signature))
                .collect(),
        }
    }
}

impl From<PolkaCert> for PolkaCertificate<TabswarmContext> {
    fn from(c: PolkaCert) -> Self {
        Self {
            height: c.height,
            round: c.round,
            value_id: c.value_id,
            polka_signatures: c
                .signatures
                .into_iter()
                .map(|(a, s)| PolkaSignature::new(a, s))
                .collect(),
        }
    }
}

impl From<RoundCertificate<TabswarmContext>> for RoundCert {
    fn from(c: RoundCertificate<TabswarmContext>) -> Self {
        Self {
            height: c.height,
            round: c.round,
            cert_type: c.cert_type,
            signatures: c
                .round_signatures
                .into_iter()
                .map(|s| (s.vote_type, s.value_id, s.address, s.signature))
                .collect(),
        }
    }
}

impl From<RoundCert> for RoundCertificate<TabswarmContext> {
    fn from(c: RoundCert) -> Self {
        Self {
            height: c.height,
            round: c.round,
            cert_type: c.cert_type,
            round_signatures: c
                .signatures
                .into_iter()
                .map(|(t, v, a, s)| RoundSignature::new(t, v, a, s))
                .collect(),
        }
    }
}

impl Message {
    /// The size limit of this message's kind.
    pub fn limit(&self) -> usize {
        match self {
            Message::Vote(_) => VOTE_LIMIT,
            Message::Proposal(_) => PROPOSAL_LIMIT,
            Message::Evidence(_) => EVIDENCE_LIMIT,
            Message::Block(_) => BLOCK_LIMIT,
            Message::Polka(_) | Message::RoundCert(_) => CERT_LIMIT,
        }
    }

    /// Short name of the kind, for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Vote(_) => "vote",
            Message::Proposal(_) => "proposal",
            Message::Evidence(_) => "evidence",
            Message::Block(_) => "block",
            Message::Polka(_) => "polka",
            Message::RoundCert(_) => "round-cert",
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
        match &msg {
            Message::Proposal(p) => p.proposal.value.check_canonical()?,
            Message::Block(b) => b.value.check_canonical()?,
            _ => {}
        }
        Ok(msg)
    }

    /// Whether the signatures inside verify for `ctx`'s run (evidence also checks the conflict).
    ///
    /// This proves only who signed, not that the signers count: use [`crate::gate::judge`]
    /// (membership, proposer, stake) before relaying anything. A certificate without
    /// signatures never verifies.
    pub fn verify(&self, ctx: &TabswarmContext) -> bool {
        let all = |votes: Vec<crate::context::SignedVote>| {
            !votes.is_empty() && votes.iter().all(|v| ctx.verify_vote(v))
        };
        match self {
            Message::Vote(v) => ctx.verify_vote(&v.clone().into()),
            Message::Proposal(p) => ctx.verify_proposal(&p.clone().into()),
            Message::Evidence(e) => e.verify(ctx).is_ok(),
            Message::Polka(c) => {
                let c: PolkaCertificate<TabswarmContext> = c.clone().into();
                all(c.votes(ctx).collect())
            }
            Message::RoundCert(c) => {
                let c: RoundCertificate<TabswarmContext> = c.clone().into();
                all(c.votes(ctx).collect())
            }
            // A block is checked against the ledger (certificate and stake) when applied.
            Message::Block(b) => all(b.certificate.votes()),
        }
    }
}
