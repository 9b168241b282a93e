//! The relay's protocols.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, kad, ping, relay};
use tabswarm_net::protocol;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) relay: relay::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_config: relay::Config,
        limits: connection_limits::ConnectionLimits,
    ) -> Self {
        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(protocol::KAD);
        kad_config.set_query_timeout(Duration::from_secs(30));
        // The bootstrap peer is where others start; it has no one to bootstrap from itself.
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // A bootstrap peer answers queries even before anyone confirms it is reachable.
        kad.set_mode(Some(kad::Mode::Server));
        Self {
            limits: connection_limits::Behaviour::new(limits),
            relay: relay::Behaviour::new(peer_id, relay_config),
            identify: identify::Behaviour::new(
                identify::Config::new(protocol::IDENTIFY.into(), key.public())
                    .with_agent_version(format!("tabswarm-relay/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::default(),
            kad,
        }
    }
}
