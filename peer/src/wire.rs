//! What peers say to each other outside consensus messages: the fetch protocol's requests and
//! responses (everything too large to gossip: update payloads, parameter checkpoints, blocks
//! for catch-up) and the gossip topics of a run. Shared by every driver, so a tab and a server
//! speak the same bytes.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tabswarm_consensus::genesis::{RunId, hex};
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::Manifest;

/// The request-response protocol name.
pub const FETCH_PROTOCOL: &str = "/tabswarm/fetch/1";
/// Most blocks in one answer.
pub const MAX_BLOCKS_PER_RESPONSE: u32 = 64;
/// Bytes of blocks in one answer (the cbor codec refuses responses over 10 MiB).
pub const MAX_BLOCKS_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Largest request a peer accepts (requests are a few dozen bytes).
pub const MAX_REQUEST_BYTES: u64 = 1024;
/// Largest response a peer accepts: a chunk, a block batch, a manifest of the largest blob.
pub const MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

/// A question one peer asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The manifest of a blob.
    Manifest {
        /// Blob address (hash of its manifest).
        address: [u8; 32],
    },
    /// One chunk of a blob.
    Chunk {
        /// Blob address.
        address: [u8; 32],
        /// Chunk index.
        index: u32,
    },
    /// Committed blocks from `from`, at most `max`.
    Blocks {
        /// First height wanted.
        from: u64,
        /// Most blocks wanted (clamped by the server).
        max: u32,
    },
    /// The newest parameters the peer holds.
    Checkpoint,
    /// A signed update announcement by id (for proposals naming one we missed).
    Update {
        /// Update id.
        id: [u8; 32],
    },
    /// The peer's height (cheap probe before catch-up).
    Status,
    /// The newest signed data manifest the peer holds.
    DataManifest,
    /// The grant of one member for the peer's newest data epoch.
    Grant {
        /// The member's ed25519 public key.
        member: [u8; 32],
    },
    /// Grants of the peer's newest data epoch, skipping the first `skip` (in member order).
    Grants {
        /// How many to skip.
        skip: u32,
    },
}

/// Most grants in one [`Response::Grants`].
pub const MAX_GRANTS_PER_RESPONSE: usize = 64;

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blob's manifest.
    Manifest(Manifest),
    /// A chunk's bytes.
    Chunk(ByteBuf),
    /// Encoded consensus block messages, consecutive from the height asked for.
    Blocks(Vec<ByteBuf>),
    /// Height and blob address of the parameters committed at that height.
    Checkpoint {
        /// Height the parameters were committed at.
        height: u64,
        /// Blob address of the parameters.
        address: [u8; 32],
    },
    /// Encoded signed update.
    Update(ByteBuf),
    /// The peer's committed height.
    Status {
        /// Committed height.
        height: u64,
    },
    /// An encoded signed data manifest.
    DataManifest(ByteBuf),
    /// An encoded grant.
    Grant(ByteBuf),
    /// Encoded grants, at most [`MAX_GRANTS_PER_RESPONSE`].
    Grants(Vec<ByteBuf>),
    /// The peer does not hold what was asked.
    NotFound,
}

/// What a gossip topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Signed update announcements.
    Updates,
    /// Proposals.
    Proposals,
    /// Votes and vote certificates.
    Votes,
    /// Equivocation evidence.
    Evidence,
    /// Committed blocks (for peers that missed a commit).
    Blocks,
    /// What storage peers hold of the run's data.
    Data,
}

impl Topic {
    /// Every topic a peer subscribes to.
    pub const ALL: [Topic; 6] = [
        Topic::Updates,
        Topic::Proposals,
        Topic::Votes,
        Topic::Evidence,
        Topic::Blocks,
        Topic::Data,
    ];

    /// The topic's name in `run`: scoped to the run so runs never mix.
    pub fn name(self, run: &RunId) -> String {
        let kind = match self {
            Topic::Updates => "updates",
            Topic::Proposals => "proposals",
            Topic::Votes => "votes",
            Topic::Evidence => "evidence",
            Topic::Blocks => "blocks",
            Topic::Data => "data",
        };
        format!("/tabswarm/{}/{kind}/1", hex(&run.0[..8]))
    }

    /// The topic a consensus message goes out on.
    pub fn of(msg: &Message) -> Topic {
        match msg {
            Message::Proposal(_) => Topic::Proposals,
            Message::Evidence(_) => Topic::Evidence,
            Message::Block(_) => Topic::Blocks,
            _ => Topic::Votes,
        }
    }
}

/// The height a consensus message is about.
pub fn message_height(msg: &Message) -> Option<u64> {
    Some(match msg {
        Message::Vote(v) => v.vote.height.0,
        Message::Proposal(p) => p.proposal.height.0,
        Message::Polka(c) => c.height.0,
        Message::RoundCert(c) => c.height.0,
        Message::Block(b) => b.height.0,
        Message::Evidence(e) => e.height().0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_scoped_to_the_run() {
        let a = Topic::Votes.name(&RunId([1; 32]));
        let b = Topic::Votes.name(&RunId([2; 32]));
        assert_ne!(a, b);
        assert!(
            a.starts_with("/tabswarm/") && a.ends_with("/votes/1"),
            "{a}"
        );
        let names: std::collections::BTreeSet<String> =
            Topic::ALL.iter().map(|t| t.name(&RunId([1; 32]))).collect();
        assert_eq!(names.len(), Topic::ALL.len());
    }
}
