//! The fetch protocol: request-response for everything too large to gossip (update payloads,
//! parameter checkpoints, blocks for catch-up). Blobs move as manifest + hashed chunks (see
//! `tabswarm_core::chunks`), so any peer holding a blob can serve it and none can corrupt it.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tabswarm_core::chunks::Manifest;

pub(crate) const FETCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/tabswarm/fetch/1");
/// Most blocks in one answer.
pub(crate) const MAX_BLOCKS_PER_RESPONSE: u32 = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// The manifest of a blob.
    Manifest { address: [u8; 32] },
    /// One chunk of a blob.
    Chunk { address: [u8; 32], index: u32 },
    /// Committed blocks from `from`, at most `max`.
    Blocks { from: u64, max: u32 },
    /// The newest parameters the peer holds.
    Checkpoint,
    /// A signed update announcement by id (for proposals naming one we missed).
    Update { id: [u8; 32] },
    /// The peer's height (cheap probe before catch-up).
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    Manifest(Manifest),
    Chunk(ByteBuf),
    /// Encoded consensus block messages.
    Blocks(Vec<ByteBuf>),
    /// Height and blob address of the parameters committed at that height.
    Checkpoint {
        height: u64,
        address: [u8; 32],
    },
    /// Encoded signed update.
    Update(ByteBuf),
    Status {
        height: u64,
    },
    NotFound,
}
