//! A hostile peer that speaks the real protocols (`tabswarm_net::protocols`, the same gossip
//! and fetch every node runs) from its own thread: the test tells it what to publish and how
//! to answer requests, and reads what it was asked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use tabswarm_consensus::genesis::Genesis;
use tabswarm_net::protocols::{Mesh, Protocols, ProtocolsEvent, Topics};
use tabswarm_peer::wire::{Request, Response, Topic};
use tokio::sync::mpsc;

enum Cmd {
    Dial(Multiaddr),
    Publish(Topic, Vec<u8>),
}

/// What the attacker saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seen {
    /// Requests received, by kind (`Status`, `Checkpoint`, `Blocks`, ...).
    pub(crate) requests: BTreeMap<&'static str, u64>,
    /// Topic subscriptions of connected peers.
    pub(crate) subscriptions: u64,
    /// Publishes that gossipsub refused locally (no peer subscribed yet, or a duplicate).
    pub(crate) publish_errors: u64,
}

/// A running attacker; stops when dropped.
pub(crate) struct Attacker {
    /// Where it listens, with its peer id.
    pub(crate) addr: Multiaddr,
    /// Its identity, as nodes see it (in `/status`'s `penalised_peers`, for one).
    pub(crate) peer_id: PeerId,
    tx: Option<mpsc::Sender<Cmd>>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

fn kind(request: &Request) -> &'static str {
    match request {
        Request::Manifest { .. } => "Manifest",
        Request::Chunk { .. } => "Chunk",
        Request::Blocks { .. } => "Blocks",
        Request::Checkpoint => "Checkpoint",
        Request::Update { .. } => "Update",
        Request::Status => "Status",
        Request::DataManifest => "DataManifest",
        Request::Grant { .. } => "Grant",
        Request::Grants { .. } => "Grants",
    }
}

impl Attacker {
    /// Starts one on 127.0.0.1 for `genesis`'s run, answering every request with `answer`.
    pub(crate) fn spawn(
        genesis: &Genesis,
        answer: impl Fn(&Request) -> Response + Send + 'static,
    ) -> Attacker {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = PeerId::from(key.public());
        let genesis = genesis.clone();
        // Bounded: a test that publishes faster than the swarm sends waits, nothing is dropped.
        let (tx, mut rx) = mpsc::channel::<Cmd>(1024);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen_in = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
                    .with_tokio()
                    .with_tcp(
                        tcp::Config::default(),
                        noise::Config::new,
                        yamux::Config::default,
                    )
                    .unwrap()
                    .with_behaviour(|key| {
                        Protocols::new(key, &genesis, "attacker".into(), Mesh::SMALL).unwrap()
                    })
                    .unwrap()
                    .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                    .build();
                swarm
                    .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                    .unwrap();
                let topics = Topics::new(&genesis.run_id());
                for t in topics.all() {
                    swarm.behaviour_mut().gossipsub.subscribe(t).unwrap();
                }
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            None => break,
                            Some(Cmd::Dial(addr)) => { let _ = swarm.dial(addr); }
                            Some(Cmd::Publish(topic, data)) => {
                                let topic = topics.get(topic).clone();
                                if swarm.behaviour_mut().gossipsub.publish(topic, data).is_err() {
                                    seen_in.lock().unwrap().publish_errors += 1;
                                }
                            }
                        },
                        event = swarm.select_next_some() => match event {
                            SwarmEvent::NewListenAddr { address, .. } => {
                                let _ = addr_tx.send(address);
                            }
                            SwarmEvent::Behaviour(ProtocolsEvent::Fetch(
                                request_response::Event::Message {
                                    message: request_response::Message::Request { request, channel, .. },
                                    ..
                                },
                            )) => {
                                *seen_in.lock().unwrap().requests.entry(kind(&request)).or_default() += 1;
                                let _ = swarm.behaviour_mut().fetch.send_response(channel, answer(&request));
                            }
                            SwarmEvent::Behaviour(ProtocolsEvent::Gossipsub(
                                gossipsub::Event::Message { propagation_source, message_id, .. },
                            )) => {
                                // Honest traffic is not ours to forward.
                                let _ = swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    MessageAcceptance::Ignore,
                                );
                            }
                            SwarmEvent::Behaviour(ProtocolsEvent::Gossipsub(
                                gossipsub::Event::Subscribed { .. },
                            )) => seen_in.lock().unwrap().subscriptions += 1,
                            _ => {}
                        },
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the attacker listens within 10 s")
            .with(Protocol::P2p(peer));
        Attacker {
            addr,
            peer_id: peer,
            tx: Some(tx),
            seen,
            thread: Some(thread),
        }
    }

    pub(crate) fn dial(&self, addr: Multiaddr) {
        let _ = self.tx.as_ref().unwrap().blocking_send(Cmd::Dial(addr));
    }

    pub(crate) fn publish(&self, topic: Topic, data: Vec<u8>) {
        let _ = self
            .tx
            .as_ref()
            .unwrap()
            .blocking_send(Cmd::Publish(topic, data));
    }

    pub(crate) fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
