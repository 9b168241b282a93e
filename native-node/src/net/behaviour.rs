//! The node's behaviour: the protocols every peer speaks (`tabswarm_net::protocols`) plus
//! what only a server needs (kad discovery, relay client and hole punching, connection and
//! memory limits), and the swarm that carries them.

use std::time::Duration;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, connection_limits, dcutr, kad, memory_connection_limits, noise, relay, yamux};
use tabswarm_consensus::genesis::Genesis;
use tabswarm_net::protocol;
use tabswarm_net::protocols::{Mesh, Protocols};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) relay: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) peer: Protocols,
}

/// Limits an operator may set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) max_memory_fraction: f64,
}

impl Behaviour {
    fn new(
        key: &Keypair,
        relay: relay::client::Behaviour,
        limits: Limits,
        genesis: &Genesis,
    ) -> anyhow::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(protocol::KAD);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        let agent = format!("tabswarm-node/{}", env!("CARGO_PKG_VERSION"));
        Ok(Self {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(limits.max_connections))
                    .with_max_established_per_peer(Some(4))
                    .with_max_pending_incoming(Some(128)),
            ),
            memory: memory_connection_limits::Behaviour::with_max_percentage(
                limits.max_memory_fraction,
            ),
            relay,
            dcutr: dcutr::Behaviour::new(peer_id),
            kad,
            peer: Protocols::new(key, genesis, agent, Mesh::SMALL).map_err(anyhow::Error::msg)?,
        })
    }
}

/// Builds the swarm: tcp, quic, webrtc-direct, websocket, dns and relay circuits, with
/// libp2p's byte counters in `registry`.
pub(crate) async fn build_swarm(
    key: Keypair,
    certificate: libp2p_webrtc::tokio::Certificate,
    limits: Limits,
    genesis: &Genesis,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = tabswarm_net::server_transports!(key, certificate)
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        // Wire bytes per transport stack (relay circuits included), as libp2p counts them:
        // `libp2p_bandwidth_bytes_total` on /metrics.
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay| {
            Behaviour::new(key, relay, limits, genesis).map_err(Into::into)
        })
        .context("building the node's protocols")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}
