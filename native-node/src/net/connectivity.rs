//! Staying connected: bootstrap and remembered peers, kad discovery up to [`TARGET_PEERS`],
//! relay reservations so peers behind NAT can reach us, and relay-only mode (every
//! connection but the bootstrap's goes through a circuit). None of this is protocol: the peer
//! only hears who came and went.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use tracing::{debug, info, warn};

use super::behaviour::Behaviour;

/// Peers a node tries to stay connected to.
const TARGET_PEERS: usize = 12;
/// Pause between discovery rounds.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);
/// What a relay advertises in identify.
const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// What the node knows about its connections.
#[derive(Debug)]
pub(crate) struct Connectivity {
    bootstrap: Vec<Multiaddr>,
    relay_only: bool,
    relays: HashSet<PeerId>,
    reserved: HashSet<PeerId>,
    connections: HashMap<ConnectionId, (PeerId, bool)>,
    last_discovery: Option<Instant>,
}

/// A connection the node keeps.
#[derive(Debug)]
pub(crate) struct Kept {
    /// Whether the peer is a relay we know of.
    pub(crate) relay: bool,
    /// Whether we dialled it directly (its address is worth remembering).
    pub(crate) remember: Option<Multiaddr>,
}

impl Connectivity {
    pub(crate) fn new(bootstrap: Vec<Multiaddr>, relay_only: bool) -> Self {
        Self {
            bootstrap,
            relay_only,
            relays: HashSet::new(),
            reserved: HashSet::new(),
            connections: HashMap::new(),
            last_discovery: None,
        }
    }

    /// Dials the bootstrap peers and, once each, peers met before (their addresses may be
    /// stale after a restart, so they stay out of kad, where a stale entry would steer
    /// discovery queries astray).
    pub(crate) fn start(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        remembered: Vec<(String, String)>,
    ) {
        for addr in &self.bootstrap {
            if let Err(e) = swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        for (peer, addr) in remembered {
            if let (Ok(peer), Ok(addr)) = (peer.parse::<PeerId>(), addr.parse::<Multiaddr>()) {
                let _ = swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
            }
        }
    }

    /// Every few seconds: back to the bootstrap peers when alone, a kad walk when short, and
    /// back to a bootstrap relay we lost (a relay that restarted: our reservation on it, and
    /// every circuit through it, went with the connection).
    pub(crate) fn tick(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self
            .last_discovery
            .is_some_and(|t| t.elapsed() < DISCOVER_EVERY)
        {
            return;
        }
        self.last_discovery = Some(Instant::now());
        let connected = swarm.connected_peers().count();
        for addr in &self.bootstrap {
            let lost_relay =
                peer_of(addr).is_some_and(|p| self.relays.contains(&p) && !swarm.is_connected(&p));
            if connected == 0 || lost_relay {
                let _ = swarm.dial(addr.clone());
            }
        }
        if connected > 0 && connected < TARGET_PEERS {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Learns a peer's addresses (into kad) and whether it is a relay (then reserves a slot
    /// on it). Returns whether it is a relay.
    pub(crate) fn on_identify(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        info: &identify::Info,
    ) -> bool {
        let is_relay = info.protocols.iter().any(|p| p.as_ref() == RELAY_HOP);
        let usable = info
            .listen_addrs
            .iter()
            .filter(|a| !self.relay_only || is_circuit(a) || is_relay)
            .cloned();
        tabswarm_net::replace_kad_addresses(&mut swarm.behaviour_mut().kad, &peer, usable);
        if is_relay {
            self.relays.insert(peer);
            self.reserve_on(swarm, peer, &info.listen_addrs);
        }
        is_relay
    }

    /// Connects to a peer kad found, while we have fewer than we want.
    pub(crate) fn on_discovered<'a>(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        addresses: impl Iterator<Item = &'a Multiaddr>,
    ) {
        if peer == *swarm.local_peer_id()
            || swarm.is_connected(&peer)
            || swarm.connected_peers().count() >= TARGET_PEERS
        {
            return;
        }
        let addrs: Vec<Multiaddr> = addresses
            .filter(|a| !self.relay_only || is_circuit(a))
            .cloned()
            .collect();
        if !addrs.is_empty() {
            let _ = swarm.dial(DialOpts::peer_id(peer).addresses(addrs).build());
        }
    }

    /// A new connection: closed again in relay-only mode unless it is a circuit or to a
    /// bootstrap peer; otherwise kept.
    pub(crate) fn on_established(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> Option<Kept> {
        let addr = endpoint.get_remote_address();
        let via_circuit = is_relayed(endpoint);
        let is_bootstrap = self
            .bootstrap
            .iter()
            .any(|b| b.iter().any(|p| p == Protocol::P2p(peer)));
        if self.relay_only && !via_circuit && !is_bootstrap {
            debug!(%peer, %addr, "closing a direct connection (relay-only mode)");
            swarm.close_connection(id);
            return None;
        }
        self.connections.insert(id, (peer, via_circuit));
        debug!(%peer, %addr, "connected");
        Some(Kept {
            relay: self.relays.contains(&peer),
            remember: (endpoint.is_dialer() && !via_circuit).then(|| addr.clone()),
        })
    }

    /// A connection closed; `remaining` are the peer's other connections. The last one to a
    /// relay takes our reservation on it: reserve again once we are back.
    pub(crate) fn on_closed(&mut self, id: ConnectionId, peer: PeerId, remaining: u32) {
        self.connections.remove(&id);
        if remaining == 0 && self.reserved.remove(&peer) {
            info!(relay = %peer, "lost the relay; reserving again once it is back");
        }
    }

    /// Whether `peer` is a relay (never disconnected for bad data: it only forwards).
    pub(crate) fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.contains(peer)
    }

    /// Connected peers reached directly and those reached only through a relay, each sorted.
    pub(crate) fn peers_by_path(&self) -> (Vec<String>, Vec<String>) {
        let mut direct = Vec::new();
        let mut relayed = Vec::new();
        for (peer, via_circuit) in self.connections.values() {
            if *via_circuit {
                relayed.push(peer.to_string());
            } else {
                direct.push(peer.to_string());
            }
        }
        direct.sort();
        direct.dedup();
        relayed.sort();
        relayed.dedup();
        relayed.retain(|p| !direct.contains(p));
        (direct, relayed)
    }

    /// Listens through a relay, so peers that cannot reach us directly still can.
    fn reserve_on(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        relay: PeerId,
        relay_addrs: &[Multiaddr],
    ) {
        if self.reserved.contains(&relay) {
            return;
        }
        let dialed = self
            .bootstrap
            .iter()
            .find(|b| b.iter().any(|p| p == Protocol::P2p(relay)))
            .cloned()
            .or_else(|| {
                relay_addrs
                    .iter()
                    .find(|a| {
                        a.iter().any(|p| matches!(p, Protocol::Tcp(_)))
                            && !a.iter().any(|p| matches!(p, Protocol::Ws(_)))
                    })
                    .map(|a| tabswarm_net::with_peer(a.clone(), relay))
            });
        if let Some(addr) = dialed {
            let circuit = addr.with(Protocol::P2pCircuit);
            match swarm.listen_on(circuit.clone()) {
                Ok(_) => {
                    self.reserved.insert(relay);
                    debug!(%circuit, "reserving a slot on the relay");
                }
                Err(e) => warn!(%circuit, error = %e, "cannot listen through relay"),
            }
        }
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether a connection runs through a relay circuit. An inbound relayed connection's remote
/// address is only `/p2p/<peer>`; the circuit shows in the local (listen) address.
fn is_relayed(endpoint: &ConnectedPoint) -> bool {
    let addr = match endpoint {
        ConnectedPoint::Dialer { address, .. } => address,
        ConnectedPoint::Listener { local_addr, .. } => local_addr,
    };
    is_circuit(addr)
}
