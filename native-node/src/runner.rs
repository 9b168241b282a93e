//! The node's event loop: a thin driver of [`tabswarm_peer::Peer`]. Swarm events, finished
//! jobs and time go in as inputs; effects come out and are carried out strictly in order (a
//! persist is committed to redb before the next effect). Every protocol decision is the
//! peer's; this file moves bytes, runs jobs on the blocking pool, keeps the store, and looks
//! after connectivity (dialling, kad, relays), metrics and the status page.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};
use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::{Genesis, hex};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::node::Record;
use tabswarm_peer::jobs::{self, DataPlan, Job};
use tabswarm_peer::wire::{Request, Response};
use tabswarm_peer::{Effect, Event, Input, Peer, Persist, RequestId, Restored, Roles, TICK_MS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, Status};
use tabswarm_net::protocols::{ProtocolsEvent, Topics};

use crate::net::behaviour::{Behaviour, BehaviourEvent};
use crate::store::Store;

/// Peers a node tries to stay connected to.
const TARGET_PEERS: usize = 12;
/// Jobs queued for the blocking pool before the loop waits for one to finish.
const JOB_QUEUE: usize = 64;

/// Everything the loop needs, prepared by `run`.
pub(crate) struct Setup {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) store: Store,
    pub(crate) genesis: Genesis,
    pub(crate) key: Keypair,
    pub(crate) plan: Arc<DataPlan>,
    pub(crate) roles: Roles,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) relay_only: bool,
    pub(crate) metrics: Metrics,
    pub(crate) status: Arc<Mutex<Status>>,
    pub(crate) stop_at_height: Option<u64>,
}

/// What the input being handled came with, for the effects that answer it.
enum Reply {
    None,
    Gossip(MessageId, PeerId),
    Request(ResponseChannel<Response>),
}

struct Done {
    output: jobs::Output,
    elapsed_ms: u64,
}

pub(crate) struct Runner {
    swarm: Swarm<Behaviour>,
    store: Store,
    peer: Peer<PeerId>,
    plan: Arc<DataPlan>,
    topics: Topics,
    started: Instant,
    requests: HashMap<OutboundRequestId, RequestId>,
    jobs_tx: mpsc::Sender<Done>,
    jobs_rx: mpsc::Receiver<Done>,
    relays: HashSet<PeerId>,
    connections: HashMap<libp2p::swarm::ConnectionId, (PeerId, bool)>,
    reserved: HashSet<PeerId>,
    relay_only: bool,
    bootstrap: Vec<Multiaddr>,
    metrics: Metrics,
    status: Arc<Mutex<Status>>,
    last_discovery: Instant,
    stop_at_height: Option<u64>,
}

impl Runner {
    pub(crate) fn new(setup: Setup) -> anyhow::Result<Self> {
        let Setup {
            swarm,
            store,
            genesis,
            key,
            plan,
            roles,
            bootstrap,
            relay_only,
            metrics,
            status,
            stop_at_height,
        } = setup;
        let restored = Restored {
            persisted: store.load()?,
            params: [store.params()?, store.latest_checkpoint()?]
                .into_iter()
                .flatten()
                .collect(),
            updates: store.updates()?,
        };
        let topics = Topics::new(&genesis.run_id());
        let peer = Peer::new(genesis, key, roles, restored, 0)
            .context("restoring the node from its store")?;
        let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
        Ok(Self {
            swarm,
            store,
            peer,
            plan,
            topics,
            started: Instant::now(),
            requests: HashMap::new(),
            jobs_tx,
            jobs_rx,
            relays: HashSet::new(),
            connections: HashMap::new(),
            reserved: HashSet::new(),
            relay_only,
            bootstrap,
            metrics,
            status,
            last_discovery: Instant::now() - Duration::from_secs(60),
            stop_at_height,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        for topic in self.topics.all() {
            self.swarm
                .behaviour_mut()
                .peer
                .gossipsub
                .subscribe(topic)
                .context("subscribing to the run's topics")?;
        }
        for addr in self.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        // Peers met before: dialled once (addresses may be stale after their restart, so they
        // do not go into kad, where a stale entry would steer discovery queries astray).
        for (peer, addr) in self.store.peers()? {
            if let (Ok(peer), Ok(addr)) = (peer.parse::<PeerId>(), addr.parse::<Multiaddr>()) {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .build();
                let _ = self.swarm.dial(opts);
            }
        }
        // The peer's first jobs (scoring the base, testing the parameters) and questions.
        self.input(Input::Tick, Reply::None)?;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        loop {
            let deadline = self
                .peer
                .next_deadline()
                .map(|ms| self.started + Duration::from_millis(ms));
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => {
                    info!(height = self.peer.ledger().height().0, "stopping; state is on disk");
                    return Ok(());
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event)?,
                Some(done) = self.jobs_rx.recv() => self.input(
                    Input::JobDone { output: done.output, elapsed_ms: done.elapsed_ms },
                    Reply::None,
                )?,
                _ = timer => self.input(Input::Tick, Reply::None)?,
                _ = tick.tick() => {
                    self.on_tick()?;
                    if let Some(stop) = self.stop_at_height
                        && self.peer.ledger().height().0 >= stop
                    {
                        info!(height = stop, "reached --stop-at-height");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Feeds one input to the peer and carries out its effects in order.
    fn input(&mut self, input: Input<PeerId>, mut reply: Reply) -> anyhow::Result<()> {
        let effects = self.peer.handle(self.now_ms(), input);
        for effect in effects {
            match effect {
                Effect::Persist(p) => self.persist(p)?,
                Effect::Publish { topic, data } => {
                    self.metrics.bytes_out.inc_by(data.len() as u64);
                    let topic = self.topics.get(topic).clone();
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .peer
                        .gossipsub
                        .publish(topic, data)
                    {
                        debug!(error = %e, "publish failed (no peers yet?)");
                    }
                }
                Effect::Validated(verdict) => {
                    if let Reply::Gossip(id, source) = &reply {
                        let acceptance = match verdict {
                            Verdict::Accept => MessageAcceptance::Accept,
                            Verdict::Ignore => MessageAcceptance::Ignore,
                            Verdict::Reject => {
                                self.metrics.messages_rejected.inc();
                                MessageAcceptance::Reject
                            }
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .peer
                            .gossipsub
                            .report_message_validation_result(id, source, acceptance);
                    }
                }
                Effect::Send { to, id, request } => {
                    let out = self
                        .swarm
                        .behaviour_mut()
                        .peer
                        .fetch
                        .send_request(&to, request);
                    self.requests.insert(out, id);
                }
                Effect::Respond(response) => {
                    if let Reply::Request(channel) = std::mem::replace(&mut reply, Reply::None) {
                        if let Response::Chunk(b) = &response {
                            self.metrics.bytes_out.inc_by(b.len() as u64);
                        }
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .peer
                            .fetch
                            .send_response(channel, response);
                    }
                }
                Effect::Run(job) => self.run_job(job),
                Effect::Penalise(peer) => {
                    warn!(%peer, "peer sent provably bad data; disconnecting it");
                    if !self.relays.contains(&peer) {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
                Effect::Event(event) => self.on_event(event),
                _ => {}
            }
        }
        Ok(())
    }

    fn persist(&mut self, p: Persist) -> anyhow::Result<()> {
        match p {
            Persist::Consensus(record) => {
                self.store.persist(&record)?;
                if let Record::Signer(_) = record {
                    self.refresh_status();
                }
            }
            Persist::Params {
                height,
                bytes,
                checkpoint,
            } => {
                self.store.put_params(height, &bytes)?;
                if checkpoint {
                    self.store.put_checkpoint(height, &bytes)?;
                }
            }
            Persist::Update {
                height,
                id,
                announcement,
                payload,
            } => self
                .store
                .put_update(height, &id, &announcement, &payload)?,
        }
        Ok(())
    }

    /// Jobs run on the blocking pool: the loop (votes, timers, gossip) never waits for them.
    fn run_job(&mut self, job: Job) {
        let plan = self.plan.clone();
        let tx = self.jobs_tx.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let output = jobs::run(&plan, job);
            // The loop may have stopped; nothing to do then.
            let _ = tx.blocking_send(Done {
                output,
                elapsed_ms: t0.elapsed().as_millis() as u64,
            });
        });
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Committed {
                report,
                applied,
                round_ms,
                train_ms,
                network_ms,
                consensus_ms,
            } => {
                self.metrics.commits.inc();
                self.metrics.height.set(report.height as i64);
                self.metrics.round_seconds.observe(round_ms as f64 / 1e3);
                self.metrics.train_seconds.set(train_ms as f64 / 1e3);
                self.metrics.network_seconds.set(network_ms as f64 / 1e3);
                self.metrics
                    .consensus_seconds
                    .set(consensus_ms as f64 / 1e3);
                self.metrics.credit.set(self.peer.credit() as i64);
                info!(
                    height = report.height,
                    applied,
                    updates = report.updates,
                    samples = report.samples,
                    train_loss = format_args!("{:.4}", report.mean_train_loss),
                    round_ms,
                    train_ms,
                    network_ms,
                    consensus_ms,
                    "committed"
                );
            }
            Event::Tested {
                height,
                loss,
                accuracy,
            } => {
                self.metrics.loss.set(f64::from(loss));
                self.metrics.accuracy.set(f64::from(accuracy));
                info!(
                    height,
                    test_loss = format_args!("{loss:.4}"),
                    test_accuracy = format_args!("{:.2}%", accuracy * 100.0),
                    "evaluated"
                );
            }
            Event::InSync { height, validator } => {
                info!(height, validator, "in sync; taking part");
            }
            Event::CatchingUp { height } => {
                info!(height, "catching up: blocks verified and stored");
            }
            Event::CheckpointAdopted { height } => info!(
                height,
                "parameters restored from a peer's checkpoint (hash checked against the ledger)"
            ),
            Event::UpdatePublished { height, .. } => {
                self.metrics.updates_published.inc();
                debug!(height, "update announced");
            }
            Event::TrainingFailed(e) => warn!(error = %e, "local training failed"),
            other => debug!(?other, "peer event"),
        }
    }

    fn on_tick(&mut self) -> anyhow::Result<()> {
        self.metrics
            .peers
            .set(self.swarm.connected_peers().count() as i64);
        if self.last_discovery.elapsed() > Duration::from_secs(5) {
            self.last_discovery = Instant::now();
            self.discover();
        }
        self.input(Input::Tick, Reply::None)?;
        self.refresh_status();
        Ok(())
    }

    fn discover(&mut self) {
        let connected = self.swarm.connected_peers().count();
        if connected == 0 {
            for addr in self.bootstrap.clone() {
                let _ = self.swarm.dial(addr);
            }
        }
        if connected < TARGET_PEERS && connected > 0 {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ProtocolsEvent::Gossipsub(
                gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                },
            ))) => {
                self.metrics.bytes_in.inc_by(message.data.len() as u64);
                let Some(topic) = self.topics.kind(&message.topic) else {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .peer
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return Ok(());
                };
                self.input(
                    Input::Gossip {
                        source: propagation_source,
                        publisher: message.source,
                        topic,
                        data: message.data,
                    },
                    Reply::Gossip(message_id, propagation_source),
                )?;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ProtocolsEvent::Fetch(event))) => {
                self.on_fetch_event(event)?
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ProtocolsEvent::Identify(
                identify::Event::Received { peer_id, info, .. },
            ))) => {
                let is_relay = info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == "/libp2p/circuit/relay/0.2.0/hop");
                for addr in &info.listen_addrs {
                    if !self.relay_only
                        || addr.iter().any(|p| p == Protocol::P2pCircuit)
                        || is_relay
                    {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                if is_relay {
                    self.relays.insert(peer_id);
                    self.reserve_on(peer_id, &info.listen_addrs);
                    self.input(
                        Input::PeerUp {
                            peer: peer_id,
                            relay: true,
                        },
                        Reply::None,
                    )?;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => self.dial_discovered(peer, addresses.iter()),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let via_circuit = is_relayed(&endpoint);
                let is_bootstrap = self
                    .bootstrap
                    .iter()
                    .any(|b| b.iter().any(|p| p == Protocol::P2p(peer_id)));
                if self.relay_only && !via_circuit && !is_bootstrap {
                    debug!(%peer_id, %addr, "closing a direct connection (relay-only mode)");
                    self.swarm.close_connection(connection_id);
                    return Ok(());
                }
                if endpoint.is_dialer() && !via_circuit {
                    let _ = self
                        .store
                        .remember_peer(&peer_id.to_string(), &addr.to_string());
                }
                self.connections
                    .insert(connection_id, (peer_id, via_circuit));
                debug!(%peer_id, %addr, "connected");
                let relay = self.relays.contains(&peer_id);
                self.input(
                    Input::PeerUp {
                        peer: peer_id,
                        relay,
                    },
                    Reply::None,
                )?;
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.input(Input::PeerDown { peer: peer_id }, Reply::None)?;
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = tabswarm_net::with_peer(address, *self.swarm.local_peer_id());
                info!(address = %full, "listening");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => debug!(%address, "external address"),
            _ => {}
        }
        Ok(())
    }

    fn on_fetch_event(
        &mut self,
        event: request_response::Event<Request, Response>,
    ) -> anyhow::Result<()> {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.input(
                    Input::Request {
                        from: peer,
                        request,
                    },
                    Reply::Request(channel),
                ),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some(id) = self.requests.remove(&request_id) else {
                        return Ok(());
                    };
                    if let Response::Chunk(b) = &response {
                        self.metrics.bytes_in.inc_by(b.len() as u64);
                    }
                    self.input(
                        Input::Response {
                            from: peer,
                            id,
                            response,
                        },
                        Reply::None,
                    )
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                match self.requests.remove(&request_id) {
                    Some(id) => self.input(Input::RequestFailed { id }, Reply::None),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Connects to a peer kad found, while we have fewer than we want.
    fn dial_discovered<'a>(
        &mut self,
        peer: PeerId,
        addresses: impl Iterator<Item = &'a Multiaddr>,
    ) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.swarm.connected_peers().count() >= TARGET_PEERS
        {
            return;
        }
        let addrs: Vec<Multiaddr> = addresses
            .filter(|a| !self.relay_only || a.iter().any(|p| p == Protocol::P2pCircuit))
            .cloned()
            .collect();
        if !addrs.is_empty() {
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    /// Listens through a relay, so peers that cannot reach us directly still can.
    fn reserve_on(&mut self, relay: PeerId, relay_addrs: &[Multiaddr]) {
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
            match self.swarm.listen_on(circuit.clone()) {
                Ok(_) => {
                    self.reserved.insert(relay);
                    debug!(%circuit, "reserving a slot on the relay");
                }
                Err(e) => warn!(%circuit, error = %e, "cannot listen through relay"),
            }
        }
    }

    fn refresh_status(&mut self) {
        let snap = self.peer.snapshot();
        self.metrics.round.set(snap.round);
        let peers = self.swarm.connected_peers().count();
        let listen: Vec<String> = self
            .swarm
            .listeners()
            .map(|a| tabswarm_net::with_peer(a.clone(), *self.swarm.local_peer_id()).to_string())
            .collect();
        let mut direct: Vec<String> = Vec::new();
        let mut relayed: Vec<String> = Vec::new();
        for (peer, via_circuit) in self.connections.values() {
            let list = if *via_circuit {
                &mut relayed
            } else {
                &mut direct
            };
            list.push(peer.to_string());
        }
        direct.sort();
        direct.dedup();
        relayed.sort();
        relayed.dedup();
        relayed.retain(|p| !direct.contains(p));
        let gossip = &self.swarm.behaviour().peer.gossipsub;
        let penalised: Vec<(String, f64)> = self
            .swarm
            .connected_peers()
            .filter_map(|p| {
                gossip
                    .peer_score(p)
                    .filter(|s| *s < 0.0)
                    .map(|s| (p.to_string(), s))
            })
            .collect();
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        s.direct_peers = direct;
        s.relayed_peers = relayed;
        s.penalised_peers = penalised;
        s.height = snap.height;
        s.round = snap.round;
        s.head_hash = hex(&snap.head_hash);
        s.param_hash = hex(&snap.param_hash);
        s.peers = peers;
        s.test_loss = snap.report.test.map(|t| t.0);
        s.test_accuracy = snap.report.test.map(|t| t.1);
        s.last_round_updates = snap.report.updates;
        s.last_round_samples = snap.report.samples;
        s.credit = snap.credit;
        s.listen = listen;
        s.syncing = snap.syncing;
        s.bytes_received = self.metrics.bytes_in.get();
        s.bytes_sent = self.metrics.bytes_out.get();
        s.rejected.malformed = snap.rejected.malformed;
        s.rejected.bad_signature = snap.rejected.bad_signature;
        s.rejected.wrong_run_or_stale = snap.rejected.wrong_run_or_stale;
        s.rejected.proposals_refused = snap.app.proposals_refused;
        s.rejected.updates_refused = snap.app.updates_refused;
        if let Some(st) = snap.consensus {
            s.rejected.consensus_bad_signatures = st.bad_signatures;
            s.rejected.consensus_stale = st.stale;
            s.signer.refused_to_sign = st.refused_to_sign;
        }
        if let Some((h, r, step)) = snap.signer.and_then(|st| st.last) {
            s.signer.height = h.0;
            s.signer.round = r.as_i64();
            s.signer.step = format!("{step:?}");
        }
    }
}

/// Whether a connection runs through a relay circuit. An inbound relayed connection's remote
/// address is only `/p2p/<peer>`; the circuit shows in the local (listen) address.
fn is_relayed(endpoint: &libp2p::core::ConnectedPoint) -> bool {
    let addr = match endpoint {
        libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
        libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
    };
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}
