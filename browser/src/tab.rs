//! The tab peer: a libp2p swarm on the page's thread (webrtc-direct and websocket to nodes
//! and relays, relay circuits so other tabs can reach it) driving the same
//! [`tabswarm_peer::Peer`] as every native node. Like the node's runner this file only moves
//! bytes, time and jobs: events in through [`Link`], effects out in order, jobs to the
//! page's Web Workers through a JavaScript callback. The tab trains (no stake) and follows
//! the chain; between loads the page keeps its identity and its verified chain (`cache.rs`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU8;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, Transport, noise, ping, relay, websocket_websys, yamux};
use tabswarm_consensus::genesis::{Genesis, hex};
use tabswarm_core::vault::MemberSecret;
use tabswarm_net::protocols::{Link, Mesh, Protocols, ProtocolsEvent, Reply, Routed};
use tabswarm_peer::jobs::{self, DataPlan, Job};
use tabswarm_peer::{Effect, Event, Input, Peer, Restored, RestoredData, Roles, TICK_MS};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use crate::cache::ChainCache;
use crate::circuit_dials::CircuitDials;
use crate::data_cache::DataCache;
use crate::identity::TabKeys;
use crate::js_err;
use crate::status::{RttSamples, State, TabData, TabStatus};

#[wasm_bindgen]
extern "C" {
    /// The page's console: what a developer opening the tools sees of the tab's network.
    #[wasm_bindgen(js_namespace = console, js_name = info)]
    fn console_info(s: &str);
}

/// The relay's hop protocol, as identify lists it.
const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// The problem shown while no peer can be reached (cleared by the first connection).
const UNREACHABLE: &str = "no peer reachable yet";

/// With no peer for this long, the bootstrap addresses are dialled again.
const REDIAL_MS: u64 = 5_000;

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
struct TabBehaviour {
    relay: relay::client::Behaviour,
    peer: Protocols,
}

/// What the page and the loop share.
#[derive(Debug, Default)]
struct Shared {
    status: TabStatus,
    model: HeldModel,
    /// The chain and parameters to keep across loads (`None` until the peer exists).
    cache: Option<ChainCache>,
    /// The run's data to keep across loads (`None` until the peer exists).
    data_cache: Option<DataCache>,
    paused: bool,
    stop: bool,
}

/// The committed parameters the tab holds.
#[derive(Debug, Default)]
struct HeldModel {
    height: u64,
    hash: [u8; 32],
    params: std::sync::Arc<Vec<f32>>,
}

/// Settings from the page.
#[derive(Debug, serde::Deserialize)]
struct Config {
    /// The run's genesis (JSON text).
    genesis: String,
    /// Multiaddrs with `/p2p/<id>` of nodes and relays to dial first.
    bootstrap: Vec<String>,
    /// Agent string for identify.
    #[serde(default = "default_agent")]
    agent: String,
    /// Log level for the console: `error`, `warn`, `info` (default), `debug`, `trace`.
    #[serde(default)]
    log: Option<String>,
}

/// Sends the peer's and libp2p's logs to the console, once per page.
fn init_logs(level: Option<&str>) -> Result<(), JsError> {
    let level: tracing::Level = match level {
        None => tracing::Level::INFO,
        Some(l) => l.parse().map_err(|_| {
            js_err(format!(
                "log level {l:?}: use error, warn, info, debug or trace"
            ))
        })?,
    };
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(console_error_panic_hook::hook));
        tracing_wasm::set_as_global_default_with_config(
            tracing_wasm::WASMLayerConfigBuilder::new()
                .set_max_level(level)
                .set_report_logs_in_timings(false)
                .build(),
        );
    });
    Ok(())
}

fn default_agent() -> String {
    concat!("tabswarm-browser/", env!("CARGO_PKG_VERSION")).into()
}

/// A running tab peer.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Tab {
    shared: Rc<RefCell<Shared>>,
}

#[wasm_bindgen]
impl Tab {
    /// Starts a peer of the run in `config` (JSON `{genesis, bootstrap: [multiaddr], agent?}`)
    /// with the identity `secret` (32 bytes the page keeps). `run_job(Uint8Array, kind)` (kind:
    /// `train`, `validate` or `test`) must return a Promise of
    /// `{output: Uint8Array, elapsedMs: number}` (a worker's answer). `use_plan(Uint8Array)`
    /// hands the workers the data they train on, in a run that keeps its data on the network
    /// (an encoded `DataPlan`, given before any job that needs it). `cache` and `data` are
    /// what [`Tab::take_cache`] and [`Tab::take_data`] gave on an earlier load, if the page
    /// kept them: the peer verifies them (the chain from genesis, each shard against the
    /// owner-signed manifest) and resumes from them, or starts over, saying why in the
    /// console.
    pub fn start(
        config: &str,
        secret: &[u8],
        run_job: js_sys::Function,
        use_plan: js_sys::Function,
        cache: Option<Vec<u8>>,
        data: Option<Vec<u8>>,
    ) -> Result<Tab, JsError> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| js_err(format!("bad tab config: {e}")))?;
        init_logs(config.log.as_deref())?;
        let genesis = Genesis::from_json(&config.genesis).map_err(js_err)?;
        let keys = TabKeys::from_secret(secret).map_err(js_err)?;
        let mut bootstrap = Vec::new();
        for a in &config.bootstrap {
            let addr: Multiaddr = a
                .parse()
                .map_err(|e| js_err(format!("bootstrap address {a}: {e}")))?;
            bootstrap.push(addr);
        }
        if bootstrap.is_empty() {
            return Err(js_err(
                "no bootstrap address: open the page from `cargo xtask demo` or add ?bootstrap=<multiaddr>",
            ));
        }
        let libp2p_key =
            libp2p::identity::Keypair::ed25519_from_bytes(keys.libp2p_secret).map_err(js_err)?;
        let swarm = build_swarm(libp2p_key, &genesis, config.agent)?;
        let weight = jobs::update_weight(&genesis.training);
        let address = keys.consensus.address();
        let member_key = MemberSecret::derive(&keys.consensus.seed()).public().0;
        let data_on_network = genesis.data.is_some();
        let roles = Roles {
            train: true,
            validate: false,
            // A tab does not store for others; two training shards keep its download small.
            store: false,
            max_train_shards: 2,
        };
        let (peer, cache, data_cache) = resume(genesis, keys.consensus, roles, cache, data)?;
        let shared = Rc::new(RefCell::new(Shared::default()));
        {
            let mut s = shared.borrow_mut();
            s.status.restored_height = peer.app().height();
            s.cache = Some(cache);
            s.data_cache = Some(data_cache);
            s.status.peer_id = swarm.local_peer_id().to_string();
            s.status.address = hex(&address.0);
            s.status.data = data_on_network.then(|| TabData {
                member_key: hex(&member_key),
                ..TabData::default()
            });
        }
        let (driver, done_rx) = Driver::new(
            swarm,
            peer,
            shared.clone(),
            JsCalls { run_job, use_plan },
            bootstrap,
            weight,
        )?;
        spawn_local(driver.run(done_rx));
        Ok(Tab { shared })
    }

    /// The page's view as JSON (see `status::TabStatus`).
    pub fn status(&self) -> String {
        self.shared.borrow().status.to_json()
    }

    /// The committed parameters the tab holds (for trying the model and downloading it), as
    /// `{height, hash, params: Float32Array}`.
    pub fn model(&self) -> Result<JsValue, JsError> {
        let shared = self.shared.borrow();
        let model = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&model, &k.into(), v);
        set("height", &JsValue::from(shared.model.height as f64))
            .map_err(|e| js_err(describe(e)))?;
        set("hash", &hex(&shared.model.hash).into()).map_err(|e| js_err(describe(e)))?;
        let params = js_sys::Float32Array::from(shared.model.params.as_slice());
        set("params", &params).map_err(|e| js_err(describe(e)))?;
        Ok(model.into())
    }

    /// The chain and parameters to keep for the next load, encoded, when they moved since the
    /// last call (`undefined` otherwise). The page stores them and hands them to
    /// [`Tab::start`].
    pub fn take_cache(&self) -> Option<Vec<u8>> {
        self.shared.borrow_mut().cache.as_mut()?.take_new()
    }

    /// The run's data the tab holds (manifest, grant, sealed shards), encoded, when it
    /// changed since the last call (`undefined` otherwise). The page stores it and hands it
    /// to [`Tab::start`], so a reload does not download its shards again.
    pub fn take_data(&self) -> Option<Vec<u8>> {
        self.shared.borrow_mut().data_cache.as_mut()?.take_new()
    }

    /// Pauses training (the tab keeps following the chain and serving what it holds).
    pub fn pause(&self) {
        self.shared.borrow_mut().paused = true;
    }

    /// Resumes training.
    pub fn resume(&self) {
        self.shared.borrow_mut().paused = false;
    }

    /// Leaves the network for good.
    pub fn stop(&self) {
        self.shared.borrow_mut().stop = true;
    }
}

/// The peer, from the chain and data an earlier load cached when they verify, from genesis
/// otherwise.
fn resume(
    genesis: Genesis,
    key: tabswarm_consensus::identity::Keypair,
    roles: Roles,
    cache: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
) -> Result<(Peer<PeerId>, ChainCache, DataCache), JsError> {
    let run = genesis.run_id();
    let mut data_cache = DataCache::new(run);
    let data = match data.map(|bytes| DataCache::decode(&bytes, run)) {
        Some(Ok(data)) => {
            data_cache.keep_restored(&data);
            data
        }
        Some(Err(e)) => {
            console_info(&format!("tabswarm: stored data not used: {e}"));
            RestoredData::default()
        }
        None => RestoredData::default(),
    };
    match cache.map(|bytes| ChainCache::decode(&bytes, run)) {
        Some(Ok(mut restored)) => {
            restored.data = data.clone();
            let kept = restored.clone();
            match Peer::new(genesis.clone(), key.clone(), roles, restored, 0) {
                Ok(peer) => {
                    let mut cache = ChainCache::new(run, peer.app().height());
                    cache.keep_restored(&kept);
                    return Ok((peer, cache, data_cache));
                }
                Err(e) => console_info(&format!(
                    "tabswarm: the cached chain does not verify ({e}); catching up from genesis"
                )),
            }
        }
        Some(Err(e)) => console_info(&format!("tabswarm: cache not used: {e}")),
        None => {}
    }
    let restored = Restored {
        data,
        ..Restored::default()
    };
    let peer = Peer::new(genesis, key, roles, restored, 0).map_err(js_err)?;
    Ok((peer, ChainCache::new(run, 0), data_cache))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn build_swarm(
    key: libp2p::identity::Keypair,
    genesis: &Genesis,
    agent: String,
) -> Result<Swarm<TabBehaviour>, JsError> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            libp2p::webrtc_websys::Transport::new(libp2p::webrtc_websys::Config::new(key))
        })
        .map_err(js_err)?
        .with_other_transport(|key| {
            Ok::<_, BoxError>(
                websocket_websys::Transport::default()
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(js_err)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(js_err)?
        .with_behaviour(|key, relay| {
            Protocols::new(key, genesis, agent, Mesh::SMALL)
                // Round trips every 2 s per connection: the page shows each transport's, and
                // webrtc-websys's stalls (see DESIGN.md) show up in them.
                .map(|peer| peer.with_ping_interval(Duration::from_secs(2)))
                .map(|peer| TabBehaviour { relay, peer })
                .map_err(BoxError::from)
        })
        .map_err(js_err)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

struct Done {
    output: jobs::Output,
    elapsed_ms: u64,
}

/// The page's functions the tab calls.
struct JsCalls {
    /// Runs a job in a worker (a Promise of its answer).
    run_job: js_sys::Function,
    /// Hands the workers a data plan.
    use_plan: js_sys::Function,
}

struct Driver {
    swarm: Swarm<TabBehaviour>,
    peer: Peer<PeerId>,
    link: Link,
    shared: Rc<RefCell<Shared>>,
    js: JsCalls,
    bootstrap: Vec<(PeerId, Vec<Multiaddr>)>,
    started: f64,
    relays: HashSet<PeerId>,
    /// Relays holding a reservation for us, with the address we reach them at.
    listening_via: HashMap<PeerId, Multiaddr>,
    /// Peers connected through a relay circuit (other tabs), by connection count.
    circuit_peers: HashMap<PeerId, usize>,
    /// Publishers we dialled through a relay, and when.
    circuit_dials: CircuitDials<PeerId>,
    /// Messages and answers that arrived over a circuit.
    circuit_messages: u64,
    /// How each open connection travels.
    transports: HashMap<ConnectionId, &'static str>,
    /// Ping round trips by transport.
    rtt: BTreeMap<&'static str, RttSamples>,
    done_tx: mpsc::UnboundedSender<Done>,
    jobs_running: usize,
    alone_since: Option<u64>,
    training: bool,
    weight: u32,
}

impl Driver {
    fn new(
        swarm: Swarm<TabBehaviour>,
        peer: Peer<PeerId>,
        shared: Rc<RefCell<Shared>>,
        js: JsCalls,
        bootstrap: Vec<Multiaddr>,
        weight: u32,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Done>), JsError> {
        // Addresses by peer, websocket first: one dial per peer tries them in turn
        // (`dial_bootstrap`), so webrtc-direct is the fallback where websocket does not
        // connect (a page on https cannot open ws://). Its stalls in Chromium (round trips
        // p99 0.3-2.4 s against 22-90 ms, `cargo xtask bench --only browser`) made a tab miss
        // the proposer's deadline; the first dial racing both let webrtc-direct win at random.
        let mut by_peer: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
        for addr in bootstrap {
            let Some(Protocol::P2p(id)) = addr.iter().last() else {
                return Err(js_err(format!(
                    "bootstrap address {addr} does not end in /p2p/<peer id>"
                )));
            };
            by_peer.entry(id).or_default().push(addr);
        }
        for addrs in by_peer.values_mut() {
            addrs.sort_by_key(|a| transport_of(a) != "websocket");
        }
        let (done_tx, done_rx) = mpsc::unbounded();
        let driver = Self {
            link: Link::new(&peer.run_id()),
            swarm,
            peer,
            shared,
            js,
            bootstrap: by_peer.into_iter().collect(),
            started: js_sys::Date::now(),
            relays: HashSet::new(),
            listening_via: HashMap::new(),
            circuit_peers: HashMap::new(),
            circuit_dials: CircuitDials::default(),
            circuit_messages: 0,
            transports: HashMap::new(),
            rtt: BTreeMap::new(),
            done_tx,
            jobs_running: 0,
            alone_since: Some(0),
            training: true,
            weight,
        };
        Ok((driver, done_rx))
    }

    fn now_ms(&self) -> u64 {
        (js_sys::Date::now() - self.started).max(0.0) as u64
    }

    async fn run(mut self, mut done_rx: mpsc::UnboundedReceiver<Done>) {
        if let Err(e) = self.link.subscribe(&mut self.swarm.behaviour_mut().peer) {
            self.problem(format!("subscribing to the run's topics: {e}"));
            return;
        }
        self.dial_bootstrap();
        // Ticks keep their own schedule: a timer made afresh each turn would never fire while
        // gossip arrives faster than the tick interval (it did: the tab starved its own
        // ticks, and catch-up stalled).
        let mut next_tick = 0;
        loop {
            let now = self.now_ms();
            if now >= next_tick {
                self.on_tick();
                next_tick = now + TICK_MS;
            } else if self.peer.next_deadline().is_some_and(|at| now >= at) {
                self.input(Input::Tick, Reply::None);
            }
            let until = self
                .peer
                .next_deadline()
                .map_or(next_tick, |at| at.min(next_tick));
            let wait = until.saturating_sub(self.now_ms()).max(1);
            let mut timer = futures_timer::Delay::new(Duration::from_millis(wait)).fuse();
            futures::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                done = done_rx.select_next_some() => {
                    self.jobs_running -= 1;
                    self.input(
                        Input::JobDone { output: done.output, elapsed_ms: done.elapsed_ms },
                        Reply::None,
                    );
                }
                () = timer => {}
            }
            if self.shared.borrow().stop {
                self.shared.borrow_mut().status.state = State::Stopped;
                return;
            }
        }
    }

    fn on_tick(&mut self) {
        let paused = self.shared.borrow().paused;
        if paused == self.training {
            self.training = !paused;
            self.input(Input::Training(self.training), Reply::None);
        }
        self.input(Input::Tick, Reply::None);
        let now = self.now_ms();
        let peers = self.swarm.connected_peers().count();
        match self.alone_since {
            Some(since) if peers == 0 && now.saturating_sub(since) >= REDIAL_MS => {
                self.alone_since = Some(now);
                self.dial_bootstrap();
            }
            None if peers == 0 => self.alone_since = Some(now),
            _ if peers > 0 => self.alone_since = None,
            _ => {}
        }
        let snapshot = self.peer.snapshot();
        let mut shared = self.shared.borrow_mut();
        let app = self.peer.app();
        if shared.model.hash != app.param_hash() {
            shared.model = HeldModel {
                height: app.height(),
                hash: app.param_hash(),
                params: app.params().clone(),
            };
        }
        let status = &mut shared.status;
        status.peers = peers;
        status.relays = self
            .relays
            .iter()
            .filter(|r| self.swarm.is_connected(r))
            .count();
        status.reachable_via_relay = !self.listening_via.is_empty();
        status.circuit_peers = self.circuit_peers.keys().map(|p| p.to_string()).collect();
        status.circuit_peers.sort();
        status.circuit_messages = self.circuit_messages;
        status.rtt = self
            .rtt
            .iter()
            .map(|(t, r)| ((*t).to_string(), r.summary()))
            .collect();
        status.jobs_running = self.jobs_running;
        status.on_snapshot(&snapshot, self.weight, paused);
        status.params_height = app.height();
    }

    fn dial_bootstrap(&mut self) {
        for (peer, addrs) in &self.bootstrap {
            if self.swarm.is_connected(peer) {
                continue;
            }
            let opts = DialOpts::peer_id(*peer)
                .addresses(addrs.clone())
                .override_dial_concurrency_factor(NonZeroU8::MIN)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dial failed");
            }
        }
    }

    fn problem(&self, why: String) {
        self.shared.borrow_mut().status.problem = Some(why);
    }

    /// Feeds one input to the peer and carries out its effects in order.
    fn input(&mut self, input: Input<PeerId>, mut reply: Reply) {
        let effects = self.peer.handle(self.now_ms(), input);
        for effect in effects {
            let Some(effect) =
                self.link
                    .carry_out(&mut self.swarm.behaviour_mut().peer, effect, &mut reply)
            else {
                continue;
            };
            match effect {
                // The tab never votes (no stake), so no record guards a signature: blocks and
                // parameters are kept only so the next load resumes sooner.
                Effect::Persist(p) => {
                    let mut shared = self.shared.borrow_mut();
                    if let Some(cache) = shared.cache.as_mut() {
                        cache.on_persist(&p);
                    }
                    if let Some(cache) = shared.data_cache.as_mut() {
                        cache.on_persist(&p);
                    }
                }
                Effect::UsePlan(plan) => self.use_plan(&plan),
                Effect::Run(job) => self.run_job(job),
                Effect::Penalise(peer) => {
                    console_info(&format!("tabswarm: {peer} sent provably bad data"));
                    if !self.relays.contains(&peer) {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
                Effect::Event(event) => {
                    if !matches!(event, Event::Committed { .. } | Event::Tested { .. }) {
                        console_info(&format!("tabswarm: {event:?}"));
                    }
                    self.shared.borrow_mut().status.on_event(&event);
                }
                _ => {}
            }
        }
    }

    /// Hands the page's workers the data the peer gathered (before the jobs that need it:
    /// a worker takes messages in order).
    fn use_plan(&mut self, plan: &DataPlan) {
        let bytes = js_sys::Uint8Array::from(plan.encode().as_slice());
        if let Err(e) = self.js.use_plan.call1(&JsValue::NULL, &bytes) {
            self.problem(format!(
                "the workers refused the run's data: {}",
                describe(e)
            ));
        }
    }

    /// Hands `job` to a worker through the page; its answer (or failure) comes back on the
    /// loop's channel.
    fn run_job(&mut self, job: Job) {
        let bytes = js_sys::Uint8Array::from(jobs::encode(&job).as_slice());
        // Training may be split across the page's workers (tabswarm_peer::parallel).
        let kind = match job {
            Job::Train { .. } => "train",
            Job::Validate { .. } => "validate",
            Job::Test { .. } => "test",
        };
        let tx = self.done_tx.clone();
        self.jobs_running += 1;
        let promise = self.js.run_job.call2(&JsValue::NULL, &bytes, &kind.into());
        spawn_local(async move {
            let answer = match promise {
                Ok(p) => JsFuture::from(js_sys::Promise::resolve(&p)).await,
                Err(e) => Err(e),
            };
            let done = match answer.map_err(describe).and_then(|v| decode_answer(&v)) {
                Ok(done) => done,
                Err(why) => Done {
                    output: jobs::failed(&job, why),
                    elapsed_ms: 0,
                },
            };
            // The loop may have stopped; nothing to do then.
            let _ = tx.unbounded_send(done);
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<TabBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(TabBehaviourEvent::Peer(event)) => self.on_protocols(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                // A circuit's endpoint can name only the far peer: ask the endpoint itself.
                let transport = if endpoint.is_relayed() {
                    "relay"
                } else {
                    transport_of(addr)
                };
                self.transports.insert(connection_id, transport);
                if endpoint.is_relayed() {
                    *self.circuit_peers.entry(peer_id).or_default() += 1;
                }
                {
                    let mut shared = self.shared.borrow_mut();
                    shared.status.transport = Some(transport.into());
                    if shared
                        .status
                        .problem
                        .as_deref()
                        .is_some_and(|p| p.starts_with(UNREACHABLE))
                    {
                        shared.status.problem = None;
                    }
                }
                let relay = self.relays.contains(&peer_id);
                self.input(
                    Input::PeerUp {
                        peer: peer_id,
                        relay,
                    },
                    Reply::None,
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
                ..
            } => {
                self.transports.remove(&connection_id);
                if endpoint.is_relayed()
                    && let Some(n) = self.circuit_peers.get_mut(&peer_id)
                {
                    *n -= 1;
                    if *n == 0 {
                        self.circuit_peers.remove(&peer_id);
                    }
                }
                if num_established > 0 {
                    return;
                }
                console_info(&format!("tabswarm: disconnected from {peer_id}: {cause:?}"));
                self.listening_via.remove(&peer_id);
                self.input(Input::PeerDown { peer: peer_id }, Reply::None);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                console_info(&format!(
                    "tabswarm: connection to {peer_id:?} failed: {error}"
                ));
                if self.swarm.connected_peers().next().is_none() {
                    self.problem(format!("{UNREACHABLE}: {error}"));
                }
            }
            _ => {}
        }
    }

    fn on_protocols(&mut self, event: ProtocolsEvent) {
        if let ProtocolsEvent::Ping(ping::Event {
            connection,
            result: Ok(rtt),
            ..
        }) = &event
            && let Some(transport) = self.transports.get(connection)
        {
            self.rtt
                .entry(transport)
                .or_default()
                .push(rtt.as_secs_f64() * 1e3);
        }
        match self.link.route(&mut self.swarm.behaviour_mut().peer, event) {
            Routed::Input(input, reply) => {
                let from = match &input {
                    Input::Gossip {
                        source, publisher, ..
                    } => {
                        if let Some(publisher) = publisher {
                            self.reach_through_relay(*publisher);
                        }
                        Some(*source)
                    }
                    Input::Request { from, .. } | Input::Response { from, .. } => Some(*from),
                    _ => None,
                };
                if from.is_some_and(|p| self.circuit_peers.contains_key(&p)) {
                    self.circuit_messages += 1;
                }
                self.input(input, reply);
            }
            Routed::Identified(peer, info) => {
                let is_relay = info.protocols.iter().any(|p| p.as_ref() == RELAY_HOP);
                if !is_relay || !self.relays.insert(peer) {
                    return;
                }
                // Other tabs reach this one through the relay (browsers cannot listen).
                if let Some(addr) = self
                    .bootstrap
                    .iter()
                    .find(|(p, _)| *p == peer)
                    .and_then(|(_, addrs)| addrs.first())
                {
                    let circuit = addr.clone().with(Protocol::P2pCircuit);
                    if self.swarm.listen_on(circuit.clone()).is_ok() {
                        self.listening_via.insert(peer, circuit);
                    }
                }
                self.input(Input::PeerUp { peer, relay: true }, Reply::None);
            }
            Routed::Nothing => {}
        }
    }
}

impl Driver {
    /// Other tabs cannot be dialled directly (browsers do not listen), but those that
    /// listen through one of our relays can be reached through it. A tab learns of them from
    /// the gossip they publish: a publisher we are not connected to is dialled once through
    /// each relay we listen on (a native node there has no reservation and the relay refuses
    /// quickly), within the budget of [`CircuitDials`].
    fn reach_through_relay(&mut self, publisher: PeerId) {
        if publisher == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&publisher)
            || self.relays.contains(&publisher)
            || self.listening_via.is_empty()
        {
            return;
        }
        let now = self.now_ms();
        if !self.circuit_dials.allow(&publisher, now) {
            return;
        }
        let addrs = self
            .listening_via
            .values()
            .map(|circuit| circuit.clone().with(Protocol::P2p(publisher)))
            .collect();
        let opts = DialOpts::peer_id(publisher).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%publisher, error = %e, "dial through relay failed");
        }
    }
}

fn decode_answer(v: &JsValue) -> Result<Done, String> {
    let output = js_sys::Reflect::get(v, &"output".into()).map_err(describe)?;
    let bytes = output
        .dyn_ref::<js_sys::Uint8Array>()
        .ok_or("a worker answered without output bytes")?
        .to_vec();
    let elapsed = js_sys::Reflect::get(v, &"elapsedMs".into())
        .ok()
        .and_then(|e| e.as_f64())
        .unwrap_or(0.0);
    Ok(Done {
        output: jobs::decode(&bytes).map_err(|e| e.to_string())?,
        elapsed_ms: elapsed.max(0.0) as u64,
    })
}

fn describe(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// How a connection's address travels, for the page.
fn transport_of(addr: &Multiaddr) -> &'static str {
    let mut kind = "other";
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return "relay",
            Protocol::WebRTCDirect => kind = "webrtc-direct",
            Protocol::Ws(_) | Protocol::Wss(_) => kind = "websocket",
            _ => {}
        }
    }
    kind
}
