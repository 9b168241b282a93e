//! Byte encoding of what a node persists: [`Record`]s and write-ahead-log entries.
//!
//! A host that stores records on disk (a redb table, a file) keeps these bytes. Malachite's
//! `Input` has no serde support and most of its variants are never logged, so the encoding
//! goes through a mirror enum holding only the inputs Malachite 0.8.2 appends to the WAL
//! (`Effect::WalAppend` in `core-consensus/src/handle/{vote,proposal,proposed_value,
//! propose,liveness,timeout}.rs`): votes, proposals, proposed values, polka certificates and
//! elapsed timeouts. Asking to encode any other input (`StartHeight`, `Propose`,
//! `RoundCertificate`, `SyncValueResponse`) is an [`EncodeError::NotPersisted`], not a panic.
//!
//! # Byte format (version 1)
//!
//! `record = version:u8 (= 1) || postcard(RecordRepr)`, as in [`crate::codec`]: postcard
//! writes an enum as its variant index (varint) then the fields in declaration order;
//! integers are varints, `[u8; N]` are N raw bytes, vectors a varint length then the items.
//!
//! | index | record | body |
//! | --- | --- | --- |
//! | 0 | `Wal` | an entry, below |
//! | 1 | `Signer` | [`SignerState`] |
//! | 2 | `Block` | [`Block`] |
//!
//! | index | WAL entry | body (types as on the wire, [`crate::wire`]) |
//! | --- | --- | --- |
//! | 0 | `Vote` | [`SignedVoteMsg`] |
//! | 1 | `Proposal` | [`SignedProposalMsg`] |
//! | 2 | `ProposedValue` | height, round, valid round, proposer, value, valid: bool, origin: 0 = consensus / 1 = sync |
//! | 3 | `PolkaCertificate` | [`PolkaCert`] |
//! | 4 | `TimeoutElapsed` | round, kind: 0 propose / 1 prevote / 2 precommit / 3 rebroadcast / 4 finalize-height (secs: u64, nanos: u32) |
//!
//! New variants are only ever appended, so a version-1 reader refuses (never misreads) a
//! record written by a later build; a change to an existing layout bumps the version byte.
//!
//! Decoding checks, in order: total length against [`MAX_RECORD`] (before any parsing), the
//! version byte, the postcard structure, trailing bytes, the limit of the decoded kind, that
//! re-encoding gives the same bytes (so overlong varints and the like are refused: one value,
//! one encoding), and the structural rules values obey on the wire (sorted update ids).
//! Signatures are not checked here: a record comes from the node's own store.

use core::time::Duration;

use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{Round, Timeout, TimeoutKind, Validity, ValueOrigin};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::context::{Height, SignedProposal, SignedVote, Value};
use crate::evidence::SignedVoteMsg;
use crate::identity::Address;
use crate::ledger::Block;
use crate::node::{Record, WalEntry};
use crate::signer::SignerState;
use crate::wire::{self, PolkaCert, SignedProposalMsg};

/// Largest encoded WAL entry: a proposal (or proposed value) with its whole value, or a
/// polka certificate, plus a little framing.
pub const WAL_ENTRY_LIMIT: usize = max(wire::PROPOSAL_LIMIT, wire::CERT_LIMIT) + 256;
/// Largest encoded signer state: about 3,000 votes signed at one height (~1,500 rounds).
pub const SIGNER_LIMIT: usize = 256 * 1024;
/// Largest encoded block record.
pub const BLOCK_RECORD_LIMIT: usize = wire::BLOCK_LIMIT + 16;
/// Largest record of any kind; checked before parsing anything.
pub const MAX_RECORD: usize = max(max(WAL_ENTRY_LIMIT, SIGNER_LIMIT), BLOCK_RECORD_LIMIT);

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Serde mirror of the WAL'd subset of Malachite's `Input`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum EntryRepr {
    Vote(SignedVoteMsg),
    Proposal(SignedProposalMsg),
    ProposedValue {
        height: Height,
        round: Round,
        valid_round: Round,
        proposer: Address,
        value: Value,
        valid: bool,
        origin: OriginRepr,
    },
    PolkaCertificate(PolkaCert),
    TimeoutElapsed {
        round: Round,
        kind: TimeoutKindRepr,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum OriginRepr {
    Consensus,
    Sync,
}

/// Our own copy of `TimeoutKind`, so the byte format does not follow Malachite's serde.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum TimeoutKindRepr {
    Propose,
    Prevote,
    Precommit,
    Rebroadcast,
    FinalizeHeight { secs: u64, nanos: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum RecordRepr {
    Wal(EntryRepr),
    Signer(SignerState),
    Block(Block),
}

impl RecordRepr {
    fn limit(&self) -> usize {
        match self {
            RecordRepr::Wal(_) => WAL_ENTRY_LIMIT,
            RecordRepr::Signer(_) => SIGNER_LIMIT,
            RecordRepr::Block(_) => BLOCK_RECORD_LIMIT,
        }
    }

    fn check(&self) -> Result<(), DecodeError> {
        match self {
            RecordRepr::Wal(EntryRepr::Proposal(p)) => p.proposal.value.check_canonical(),
            RecordRepr::Wal(EntryRepr::ProposedValue { value, .. }) => value.check_canonical(),
            RecordRepr::Wal(EntryRepr::TimeoutElapsed {
                kind: TimeoutKindRepr::FinalizeHeight { nanos, .. },
                ..
            }) if *nanos >= 1_000_000_000 => Err(DecodeError::NotCanonical(
                "timeout nanoseconds must be below 1e9",
            )),
            RecordRepr::Block(b) => b.value.check_canonical(),
            _ => Ok(()),
        }
    }
}

fn entry_repr(entry: &WalEntry) -> Result<EntryRepr, EncodeError> {
    Ok(match entry {
        Input::Vote(v) => EntryRepr::Vote(v.clone().into()),
        Input::Proposal(p) => EntryRepr::Proposal(p.clone().into()),
        Input::ProposedValue(v, origin) => EntryRepr::ProposedValue {
            height: v.height,
            round: v.round,
            valid_round: v.valid_round,
            proposer: v.proposer,
            value: v.value.clone(),
            valid: v.validity.is_valid(),
            origin: match origin {
                ValueOrigin::Consensus => OriginRepr::Consensus,
                ValueOrigin::Sync => OriginRepr::Sync,
            },
        },
        Input::PolkaCertificate(c) => EntryRepr::PolkaCertificate(c.clone().into()),
        Input::TimeoutElapsed(t) => EntryRepr::TimeoutElapsed {
            round: t.round,
            kind: match t.kind {
                TimeoutKind::Propose => TimeoutKindRepr::Propose,
                TimeoutKind::Prevote => TimeoutKindRepr::Prevote,
                TimeoutKind::Precommit => TimeoutKindRepr::Precommit,
                TimeoutKind::Rebroadcast => TimeoutKindRepr::Rebroadcast,
                TimeoutKind::FinalizeHeight(d) => TimeoutKindRepr::FinalizeHeight {
                    secs: d.as_secs(),
                    nanos: d.subsec_nanos(),
                },
            },
        },
        Input::StartHeight(..) => return Err(EncodeError::NotPersisted("StartHeight")),
        Input::Propose(_) => return Err(EncodeError::NotPersisted("Propose")),
        Input::RoundCertificate(_) => return Err(EncodeError::NotPersisted("RoundCertificate")),
        Input::SyncValueResponse(_) => {
            return Err(EncodeError::NotPersisted("SyncValueResponse"));
        }
    })
}

fn entry_from_repr(repr: EntryRepr) -> WalEntry {
    match repr {
        EntryRepr::Vote(v) => Input::Vote(SignedVote::from(v)),
        EntryRepr::Proposal(p) => Input::Proposal(SignedProposal::from(p)),
        EntryRepr::ProposedValue {
            height,
            round,
            valid_round,
            proposer,
            value,
            valid,
            origin,
        } => Input::ProposedValue(
            ProposedValue {
                height,
                round,
                valid_round,
                proposer,
                value,
                validity: Validity::from_bool(valid),
            },
            match origin {
                OriginRepr::Consensus => ValueOrigin::Consensus,
                OriginRepr::Sync => ValueOrigin::Sync,
            },
        ),
        EntryRepr::PolkaCertificate(c) => Input::PolkaCertificate(c.into()),
        EntryRepr::TimeoutElapsed { round, kind } => Input::TimeoutElapsed(Timeout::new(
            round,
            match kind {
                TimeoutKindRepr::Propose => TimeoutKind::Propose,
                TimeoutKindRepr::Prevote => TimeoutKind::Prevote,
                TimeoutKindRepr::Precommit => TimeoutKind::Precommit,
                TimeoutKindRepr::Rebroadcast => TimeoutKind::Rebroadcast,
                TimeoutKindRepr::FinalizeHeight { secs, nanos } => {
                    TimeoutKind::FinalizeHeight(Duration::new(secs, nanos))
                }
            },
        )),
    }
}

fn encode_repr(repr: &RecordRepr) -> Result<Vec<u8>, EncodeError> {
    codec::encode(repr, repr.limit())
}

fn decode_repr(bytes: &[u8]) -> Result<RecordRepr, DecodeError> {
    let repr: RecordRepr = codec::decode(bytes, MAX_RECORD)?;
    if bytes.len() > repr.limit() {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: repr.limit(),
        });
    }
    // postcard accepts some non-minimal forms (e.g. overlong varints); one value, one encoding.
    if bytes.get(1..) != Some(codec::canonical(&repr).as_slice()) {
        return Err(DecodeError::NotCanonical("not the canonical encoding"));
    }
    repr.check()?;
    Ok(repr)
}

impl Record {
    /// Canonical bytes of this record (format in the [module docs](crate::wal)).
    ///
    /// Fails for a WAL entry Malachite never logs ([`EncodeError::NotPersisted`]) and for a
    /// record over its kind's limit.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let repr = match self {
            Record::Wal(e) => RecordRepr::Wal(entry_repr(e)?),
            Record::Signer(s) => RecordRepr::Signer(s.clone()),
            Record::Block(b) => RecordRepr::Block((**b).clone()),
        };
        encode_repr(&repr)
    }

    /// Parses bytes written by [`Record::encode`]; never panics, says why it refused.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        Ok(match decode_repr(bytes)? {
            RecordRepr::Wal(e) => Record::Wal(Box::new(entry_from_repr(e))),
            RecordRepr::Signer(s) => Record::Signer(s),
            RecordRepr::Block(b) => Record::Block(Box::new(b)),
        })
    }
}

/// The bytes of a WAL entry alone: the same as `Record::Wal(entry).encode()`, so a host may
/// keep WAL entries and other records in one table or in separate ones.
pub fn encode_wal_entry(entry: &WalEntry) -> Result<Vec<u8>, EncodeError> {
    encode_repr(&RecordRepr::Wal(entry_repr(entry)?))
}

/// Inverse of [`encode_wal_entry`]; refuses bytes that hold another kind of record.
pub fn decode_wal_entry(bytes: &[u8]) -> Result<WalEntry, DecodeError> {
    match decode_repr(bytes)? {
        RecordRepr::Wal(e) => Ok(entry_from_repr(e)),
        RecordRepr::Signer(_) | RecordRepr::Block(_) => {
            Err(DecodeError::WrongKind("expected a WAL entry"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_varint_is_refused() {
        let r = Record::Signer(SignerState::default());
        let bytes = r.encode().expect("fits");
        // Signer variant index 1 written as a two-byte varint (0x81 0x00) instead of 0x01.
        let mut long = vec![bytes[0], 0x81, 0x00];
        long.extend_from_slice(&bytes[2..]);
        assert!(matches!(
            Record::decode(&long),
            Err(DecodeError::NotCanonical(_)) | Err(DecodeError::Malformed(_))
        ));
    }
}
