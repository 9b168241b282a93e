//! The node's protocols and the swarm that carries them.

use std::time::Duration;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Swarm, connection_limits, dcutr, gossipsub, identify, kad, memory_connection_limits, noise,
    ping, relay, yamux,
};
use tabswarm_net::protocol;

use super::topics::Topics;
use tabswarm_peer::wire::{FETCH_PROTOCOL, Request, Response};

/// Largest gossip message: a block with a full certificate and evidence (consensus's own
/// per-kind limits are checked again on receipt).
pub(crate) const MAX_GOSSIP: usize = tabswarm_consensus::wire::MAX_MESSAGE;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) relay: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) fetch: request_response::cbor::Behaviour<Request, Response>,
}

/// Limits an operator may set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) max_memory_fraction: f64,
}

/// Peer scoring: each message our validation rejects costs its sender (P4 grows with the
/// square of the count per topic), so a peer that keeps sending forged or malformed messages
/// drops below the graylist threshold (-80) after about four in one topic and is then ignored;
/// a single glitch decays away.
fn score_params(topics: &Topics) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    for topic in topics.all() {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -5.0,
            invalid_message_deliveries_decay: 0.9,
            // Delivery-rate terms off: rounds are bursty and small networks would punish
            // honest peers for being quiet between rounds.
            first_message_deliveries_weight: 0.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            ..gossipsub::TopicScoreParams::default()
        };
        params.topics.insert(topic.hash(), topic_params);
    }
    params
}

impl Behaviour {
    fn new(
        key: &Keypair,
        relay: relay::client::Behaviour,
        limits: Limits,
        topics: &Topics,
    ) -> anyhow::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let gossip_config = gossipsub::ConfigBuilder::default()
            .max_transmit_size(MAX_GOSSIP)
            // Every message is checked by core (signature, run, height, size) before it is
            // forwarded; the verdict feeds gossipsub's peer scores.
            .validate_messages()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .heartbeat_interval(Duration::from_millis(500))
            // Small test networks: a mesh of 2-6 peers per topic.
            .mesh_n_low(2)
            .mesh_n(4)
            .mesh_n_high(8)
            .mesh_outbound_min(1)
            .build()
            .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
        let mut gossipsub: gossipsub::Behaviour = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        gossipsub
            .with_peer_score(
                score_params(topics),
                gossipsub::PeerScoreThresholds::default(),
            )
            .map_err(|e| anyhow::anyhow!("gossipsub scoring: {e}"))?;

        let mut kad_config = kad::Config::new(protocol::KAD);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        let fetch = request_response::cbor::Behaviour::new(
            [(
                libp2p::StreamProtocol::new(FETCH_PROTOCOL),
                ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(256),
        );
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
            identify: identify::Behaviour::new(
                identify::Config::new(protocol::IDENTIFY.into(), key.public())
                    .with_agent_version(format!("tabswarm-node/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::default(),
            kad,
            gossipsub,
            fetch,
        })
    }
}

/// Builds the swarm: tcp, quic, webrtc-direct, websocket, dns and relay circuits.
pub(crate) async fn build_swarm(
    key: Keypair,
    certificate: libp2p_webrtc::tokio::Certificate,
    limits: Limits,
    topics: &Topics,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = tabswarm_net::server_transports!(key, certificate)
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay| Behaviour::new(key, relay, limits, topics).map_err(Into::into))
        .context("building the node's protocols")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}
