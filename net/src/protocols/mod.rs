//! The protocols every tabswarm peer speaks beside its transports, composed once for the
//! server node and the browser tab: gossipsub (run topics, content-addressed message ids,
//! validation before forwarding, peer scoring), the fetch request-response protocol (sizes
//! bounded by `tabswarm_peer::wire`), identify and ping. Drivers wrap [`Protocols`] in their
//! own behaviour with what only they need (kad, relay client, hole punching, limits).

pub mod fetch;
pub mod gossip;
pub mod link;
mod topics;

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{gossipsub, identify, ping};
use tabswarm_consensus::genesis::Genesis;

use crate::protocol;
pub use link::{Link, Reply, Routed};
pub use topics::Topics;

/// The shared protocols.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // libp2p's behaviours do not implement Debug
pub struct Protocols {
    /// Who the other side is and which protocols it speaks (relays are found this way).
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Announcements, proposals, votes, evidence and blocks.
    pub gossipsub: gossipsub::Behaviour,
    /// Chunks, manifests, blocks for catch-up, checkpoints, status.
    pub fetch: fetch::Behaviour,
}

/// Gossip mesh sizes (gossipsub's D_lo, D, D_hi).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// Fewest mesh peers per topic before grafting more.
    pub low: usize,
    /// Target.
    pub target: usize,
    /// Most before pruning.
    pub high: usize,
}

impl Mesh {
    /// For the small networks tabswarm runs today (a handful to a few dozen peers).
    pub const SMALL: Mesh = Mesh {
        low: 2,
        target: 4,
        high: 8,
    };
}

impl Protocols {
    /// The protocols of a peer of `genesis`'s run, announcing itself as `agent`
    /// (e.g. `tabswarm-node/0.1.0`). Subscribe to [`Topics::all`] next.
    pub fn new(
        key: &Keypair,
        genesis: &Genesis,
        agent: String,
        mesh: Mesh,
    ) -> Result<Self, String> {
        let topics = Topics::new(&genesis.run_id());
        let rebroadcast = Duration::from_millis(genesis.timeouts_ms.rebroadcast);
        Ok(Self {
            identify: identify::Behaviour::new(
                identify::Config::new(protocol::IDENTIFY.into(), key.public())
                    .with_agent_version(agent),
            ),
            ping: ping::Behaviour::default(),
            gossipsub: gossip::behaviour(key, &topics, mesh, rebroadcast)?,
            fetch: fetch::behaviour(),
        })
    }

    /// Pings each connection every `interval` (libp2p's default: 15 s).
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping = ping::Behaviour::new(ping::Config::new().with_interval(interval));
        self
    }
}
