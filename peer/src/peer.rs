//! [`Peer`]: the whole protocol of one peer, driven by [`Input`]s, answering with [`Effect`]s.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use malachitebft_core_types::Timeout;
use serde_bytes::ByteBuf;
use tabswarm_consensus::context::TabswarmContext;
use tabswarm_consensus::gate::{self, Verdict};
use tabswarm_consensus::genesis::{Genesis, RunId};
use tabswarm_consensus::identity::{Address, Keypair};
use tabswarm_consensus::ledger::{Block, Ledger};
use tabswarm_consensus::node::{self, Node, NodeError, Output, Persisted, Record};
use tabswarm_consensus::signer::SignerState;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::{bytes_to_f32s, f32s_to_bytes};
use tabswarm_core::flat;
use tracing::{debug, info, warn};

use crate::RequestId;
use crate::data::{Action as DataAction, DataEvent, DataRecord, DataState, DataUses};
use crate::fetch::{self, Blob, Blobs, Fetcher, Purpose};
use crate::jobs::{self, DataPlan, Job};
use crate::payload;
use crate::pool::{self, Admitted};
use crate::round::{AppStats, RoundApp, RoundReport, short};
use crate::sync::{self, Claims, Sync};
use crate::wire::{
    MAX_BLOCKS_PER_RESPONSE, MAX_BLOCKS_RESPONSE_BYTES, Request, Response, Topic, message_height,
};

/// How long a proposal waits for the payloads and scores it needs before consensus judges it
/// anyway (and, lacking them, prevotes nil).
pub const HOLD_MS: u64 = 6_000;
/// Proposals held back at once (more are judged at once).
pub const MAX_HELD: usize = 64;
/// Jobs held while the run's data is not here yet.
pub const MAX_WAITING_JOBS: usize = 256;
/// How often a driver should call [`Input::Tick`] at the least.
pub const TICK_MS: u64 = 100;

/// What this peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Train and announce updates.
    pub train: bool,
    /// Vote (only counts if the genesis stakes our key). Off: the peer follows consensus
    /// without signing anything, even when staked.
    pub validate: bool,
    /// Hold shards of the run's data for others (storage role; runs with data on the
    /// network only).
    pub store: bool,
    /// Most training shards to fetch for our own training (0: all of them).
    pub max_train_shards: u32,
}

/// What a driver restores from its store before creating the peer.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Blocks, write-ahead log and signer state.
    pub persisted: Persisted,
    /// Stored parameter snapshots `(height, bytes)`: the peer takes the one that matches its
    /// ledger's head.
    pub params: Vec<(u64, Vec<u8>)>,
    /// Stored announcements and payloads of the height in progress.
    pub updates: Vec<(Vec<u8>, Vec<u8>)>,
    /// Stored data records (runs with data on the network).
    pub data: RestoredData,
}

/// The data records a driver stored ([`Persist::Data`]), given back at start.
#[derive(Debug, Clone, Default)]
pub struct RestoredData {
    /// Signed manifests (the newest that verifies is used).
    pub manifests: Vec<Vec<u8>>,
    /// Grants.
    pub grants: Vec<Vec<u8>>,
    /// Shards, each with the address it was stored under.
    pub shards: Vec<([u8; 32], Vec<u8>)>,
}

/// Something that happened, for logs, metrics and user interfaces.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A block was committed and applied (or, `applied: false`, committed without the
    /// payloads here: parameters come from a checkpoint).
    Committed {
        /// What the round did.
        report: RoundReport,
        /// Whether our parameters moved with it.
        applied: bool,
        /// Where the height's wall time went (ms): since the previous commit, our own
        /// training, waiting for updates and payloads, proposal to commit.
        round_ms: u64,
        /// See `round_ms`.
        train_ms: u64,
        /// See `round_ms`.
        network_ms: u64,
        /// See `round_ms`.
        consensus_ms: u64,
    },
    /// Test loss and accuracy of the parameters committed at `height`.
    Tested {
        /// Height.
        height: u64,
        /// Test loss.
        loss: f32,
        /// Test accuracy.
        accuracy: f32,
    },
    /// Caught up: consensus runs from now on.
    InSync {
        /// Committed height.
        height: u64,
        /// Whether the genesis stakes our key and we vote.
        validator: bool,
    },
    /// Blocks verified while catching up.
    CatchingUp {
        /// Height reached.
        height: u64,
    },
    /// Parameters adopted from a peer's checkpoint (hash checked against the ledger).
    CheckpointAdopted {
        /// Height.
        height: u64,
    },
    /// Our update for `height` is announced.
    UpdatePublished {
        /// Height.
        height: u64,
        /// Update id.
        id: [u8; 32],
    },
    /// Local training failed.
    TrainingFailed(String),
    /// The run's data on the network.
    Data(DataEvent),
}

/// Something to make durable. Drivers write it before carrying out any later effect.
#[derive(Debug, Clone)]
pub enum Persist {
    /// A consensus record (write-ahead log, signer state, block).
    Consensus(Record),
    /// The parameters committed at `height` (one overwritten slot).
    Params {
        /// Height.
        height: u64,
        /// Little-endian f32 bytes.
        bytes: Arc<Vec<u8>>,
        /// Also keep them as a checkpoint (every `checkpoint_every` heights, and adopted ones).
        checkpoint: bool,
    },
    /// An update of the height in progress (a replayed write-ahead log may decide a block
    /// naming it after every node restarted).
    Update {
        /// Height.
        height: u64,
        /// Update id.
        id: [u8; 32],
        /// Encoded signed announcement.
        announcement: Vec<u8>,
        /// Payload bytes.
        payload: Vec<u8>,
    },
    /// A record of the run's data (manifest, grant, shard, pruning of old epochs).
    Data(DataRecord),
}

/// What the driver must do, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Effect<P> {
    /// Make durable before carrying out any later effect.
    Persist(Persist),
    /// Publish on a gossip topic.
    Publish {
        /// Topic.
        topic: Topic,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The verdict on the gossip message just handled (exactly one per [`Input::Gossip`]).
    Validated(Verdict),
    /// Send a request; its answer comes back as [`Input::Response`] with the same id.
    Send {
        /// To whom.
        to: P,
        /// Our id for it.
        id: RequestId,
        /// What.
        request: Request,
    },
    /// The answer to the request just handled (exactly one per [`Input::Request`]).
    Respond(Response),
    /// Run a job off the event loop and feed its output back.
    Run(Job),
    /// Run every later job on this data (runs with data on the network: sent once the
    /// shards this peer needs arrived, and again when it holds more training shards; no job
    /// comes before the first).
    UsePlan(Arc<DataPlan>),
    /// This peer sent provably bad data: lower its score or disconnect it.
    Penalise(P),
    /// Something happened.
    Event(Event),
}

/// Everything that can happen to a peer.
#[derive(Debug)]
pub enum Input<P> {
    /// A gossip message from `source` (the neighbour that relayed it), first published by
    /// `publisher` when the driver knows.
    Gossip {
        /// Neighbour that relayed it.
        source: P,
        /// Original publisher, if known.
        publisher: Option<P>,
        /// Topic.
        topic: Topic,
        /// Bytes.
        data: Vec<u8>,
    },
    /// A peer asks something.
    Request {
        /// Who.
        from: P,
        /// What.
        request: Request,
    },
    /// An answer to our [`Effect::Send`].
    Response {
        /// Who answered.
        from: P,
        /// Our id of the request.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// A request of ours failed (timeout, connection closed, refused).
    RequestFailed {
        /// Our id of the request.
        id: RequestId,
    },
    /// A connection to `peer` is up (again, when `relay` became known).
    PeerUp {
        /// Who.
        peer: P,
        /// Whether it is a relay (relays hold no chain state: never asked for it).
        relay: bool,
    },
    /// The last connection to `peer` closed.
    PeerDown {
        /// Who.
        peer: P,
    },
    /// Time passed (call at least every [`TICK_MS`] and at [`Peer::next_deadline`]).
    Tick,
    /// The volunteer or operator paused (`false`) or resumed (`true`) training. A paused
    /// trainer asks for no new training job; one already running still finishes and is
    /// announced (its work is done). Validation and following the chain go on.
    Training(bool),
    /// A job finished.
    JobDone {
        /// Its output.
        output: jobs::Output,
        /// How long it ran (ms), for the round's time split.
        elapsed_ms: u64,
    },
}

/// Why the peer cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The persisted chain does not verify, or consensus failed.
    #[error("consensus: {0}")]
    Consensus(#[from] NodeError),
    /// The stored chain does not verify from the genesis.
    #[error("the stored ledger does not verify from genesis: {0}")]
    Chain(#[from] tabswarm_consensus::ledger::ChainError),
    /// The run's initial parameters cannot be built.
    #[error("initial parameters: {0}")]
    Params(String),
}

/// Gossip refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Could not be decoded (or too large).
    pub malformed: u64,
    /// Forged, from a non-member, claiming stake it lacks, or lying about its weight.
    pub bad_signature: u64,
    /// Authentic but stale, for another height, or beyond the window.
    pub wrong_run_or_stale: u64,
}

/// One of the peer's buffers, for the soak test and operators' dashboards: a queue that only
/// grows is a leak, or a door for a hostile peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// What it holds.
    pub name: &'static str,
    /// Entries now.
    pub len: usize,
    /// The most it may hold; `None` where the bound is indirect (say, one entry per update
    /// in a bounded pool).
    pub bound: Option<usize>,
}

/// A view of the peer for status pages and metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Committed height.
    pub height: u64,
    /// Consensus round in progress (-1 while catching up).
    pub round: i64,
    /// Whether catching up.
    pub syncing: bool,
    /// Hash of the last block.
    pub head_hash: [u8; 32],
    /// Hash of the parameters held.
    pub param_hash: [u8; 32],
    /// About the last commit.
    pub report: RoundReport,
    /// Application counters.
    pub app: AppStats,
    /// Consensus counters (while consensus runs).
    pub consensus: Option<node::Stats>,
    /// Last signed step, if any.
    pub signer: Option<SignerState>,
    /// Updates of ours included in committed blocks.
    pub credit: u64,
    /// Gossip refused.
    pub rejected: Rejections,
    /// Updates in the pool (all, fetched).
    pub pool: (usize, usize),
    /// Downloads in progress.
    pub downloads: usize,
    /// The run's data, in runs that keep it on the network.
    pub data: Option<DataSnapshot>,
}

/// What a peer holds of the run's data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSnapshot {
    /// The manifest's epoch (0: none yet).
    pub epoch: u64,
    /// Shards the manifest lists.
    pub shards: usize,
    /// Shards held, by index.
    pub held: Vec<u32>,
    /// Whether we can read them (a grant, or an open run).
    pub has_key: bool,
    /// Whether training and scoring have the data they need.
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Status,
    Blocks,
    Checkpoint,
    Update,
    Fetch,
    Data,
    /// A storage peer's claim checked (a chunk of a shard it says it holds).
    Audit,
}

#[derive(Debug)]
struct Held<P> {
    since_ms: u64,
    msg: Message,
    source: P,
}

/// Where a height's wall time went.
#[derive(Debug, Clone, Copy, Default)]
struct RoundClock {
    started_ms: Option<u64>,
    trained_ms: u64,
    proposal_seen_ms: Option<u64>,
}

#[allow(clippy::large_enum_variant)]
enum Phase<P> {
    /// Catching up with peers before taking part.
    Syncing {
        app: RoundApp,
        ledger: Ledger,
        sync: Sync<P>,
    },
    Running(Box<Node<RoundApp>>),
    /// Transient, while moving between the two.
    Moving,
}

/// One peer of a run: consensus, the round application, catch-up, fetching, held proposals.
pub struct Peer<P> {
    genesis: Genesis,
    run: RunId,
    ctx: TabswarmContext,
    key: Keypair,
    roles: Roles,
    phase: Phase<P>,
    /// What consensus restarts from (write-ahead log, signer state) when catch-up ends.
    restart: Persisted,
    params_missing: bool,
    claims: Claims<P>,
    fetcher: Fetcher<P>,
    blobs: Blobs,
    params_address: [u8; 32],
    held: Vec<Held<P>>,
    asked_updates: BTreeSet<[u8; 32]>,
    /// Consensus timers and when they fire (a list: few, and firing order stays fixed).
    timers: Vec<(Timeout, u64)>,
    training_for: Option<u64>,
    /// The run's data on the network, if the genesis puts it there.
    data: Option<DataState<P>>,
    /// Training shards in the plan the driver runs jobs on (0: no plan yet).
    plan_shards: u32,
    /// What our updates left unsent (top-k's error feedback).
    encoder: payload::Encoder,
    /// Jobs held until the first plan.
    waiting_jobs: Vec<Job>,
    peers: BTreeMap<P, bool>,
    requests: BTreeMap<RequestId, (P, Asked)>,
    next_request: u64,
    clock: RoundClock,
    last_commit_ms: u64,
    last_checkpoint_ask_ms: Option<u64>,
    /// While running with stale parameters: the checkpoint fetched or held for a height at or
    /// past the ledger's.
    ahead: sync::Ahead<P>,
    rejected: Rejections,
    now_ms: u64,
    effects: Vec<Effect<P>>,
}

impl<P: Clone + Ord + Hash + std::fmt::Debug> std::fmt::Debug for Peer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("address", &self.key.address())
            .field("height", &self.ledger().height())
            .finish_non_exhaustive()
    }
}

fn publisher_hash<P: Hash>(p: &P) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

impl<P: Clone + Ord + Hash + std::fmt::Debug> Peer<P> {
    /// A peer restored from its store at time `now_ms`. It starts by catching up; the first
    /// [`Input::Tick`] sends its first questions.
    pub fn new(
        genesis: Genesis,
        key: Keypair,
        roles: Roles,
        restored: Restored,
        now_ms: u64,
    ) -> Result<Self, PeerError> {
        let Restored {
            persisted,
            params,
            updates,
            data: stored_data,
        } = restored;
        let ledger = Ledger::verify_chain(genesis.clone(), &persisted.blocks)?;
        let height = ledger.height().0;
        let initial = || {
            jobs::initial_params(&genesis.training).map_err(|e| PeerError::Params(e.to_string()))
        };
        // Parameters for the stored height: the initial ones, or a stored snapshot of that
        // height that hashes to what the ledger says.
        let (params, params_missing) = if height == 0 {
            (initial()?, false)
        } else {
            match params
                .into_iter()
                .filter(|(h, _)| *h == height)
                .filter_map(|(_, bytes)| bytes_to_f32s(&bytes))
                .find(|p| flat::param_hash(p).0 == ledger.param_hash())
            {
                Some(p) => (p, false),
                None => (initial()?, true),
            }
        };
        let mut app = RoundApp::new(
            &genesis,
            if params_missing { 0 } else { height },
            params,
            now_ms,
        );
        app.set_credited(ledger.credits().keys().map(|k| Address(*k)));
        app.set_draw_secret(jobs::draw_secret(&key.seed()));
        app.set_scoring(roles.validate);
        let run = genesis.run_id();
        let data = match &genesis.data {
            Some(policy) => Some(
                DataState::new(
                    policy.clone(),
                    run,
                    key.address(),
                    &key.seed(),
                    DataUses {
                        store: roles.store,
                        read: roles.train || roles.validate,
                        max_train: roles.max_train_shards,
                        all_grants: roles.validate || roles.store,
                    },
                )
                .ok_or_else(|| PeerError::Params("the data owner's key is invalid".into()))?,
            ),
            None => None,
        };
        let plan_shards = if data.is_some() {
            0
        } else {
            genesis.training.shards
        };
        let mut peer = Self {
            ctx: TabswarmContext::new(run),
            run,
            genesis,
            key,
            roles,
            phase: Phase::Syncing {
                app,
                ledger,
                sync: Sync::start(now_ms),
            },
            restart: Persisted {
                blocks: Vec::new(),
                wal: persisted.wal,
                signer: persisted.signer,
            },
            params_missing,
            claims: Claims::default(),
            fetcher: Fetcher::default(),
            blobs: Blobs::default(),
            params_address: [0; 32],
            held: Vec::new(),
            asked_updates: BTreeSet::new(),
            timers: Vec::new(),
            training_for: None,
            data,
            plan_shards,
            encoder: payload::Encoder::default(),
            waiting_jobs: Vec::new(),
            peers: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            clock: RoundClock::default(),
            last_commit_ms: now_ms,
            last_checkpoint_ask_ms: None,
            ahead: sync::Ahead::default(),
            rejected: Rejections::default(),
            now_ms,
            effects: Vec::new(),
        };
        peer.publish_params_blob();
        for (announcement, payload) in updates {
            peer.restore_update(&announcement, payload);
        }
        if let Some(d) = &mut peer.data {
            let actions = d.restore(
                stored_data.manifests,
                stored_data.grants,
                stored_data.shards,
            );
            peer.carry_data(actions);
        }
        Ok(peer)
    }

    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// This peer's address (its ed25519 public key).
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The committed chain.
    pub fn ledger(&self) -> &Ledger {
        match &self.phase {
            Phase::Running(node) => node.ledger(),
            Phase::Syncing { ledger, .. } => ledger,
            Phase::Moving => unreachable_ledger(),
        }
    }

    /// The round application.
    pub fn app(&self) -> &RoundApp {
        match &self.phase {
            Phase::Running(node) => node.app(),
            Phase::Syncing { app, .. } => app,
            Phase::Moving => unreachable_app(),
        }
    }

    fn app_mut(&mut self) -> &mut RoundApp {
        match &mut self.phase {
            Phase::Running(node) => node.app_mut(),
            Phase::Syncing { app, .. } => app,
            Phase::Moving => unreachable_app(),
        }
    }

    /// Whether the peer is still catching up.
    pub fn syncing(&self) -> bool {
        !matches!(self.phase, Phase::Running(_))
    }

    /// The earliest time a consensus timer fires, if any: call [`Input::Tick`] then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.iter().map(|(_, at)| *at).min()
    }

    /// A view for status pages and metrics.
    pub fn snapshot(&self) -> Snapshot {
        let app = self.app();
        let (round, consensus, signer) = match &self.phase {
            Phase::Running(node) => (
                node.round().as_i64(),
                Some(node.stats().clone()),
                Some(node.signer_state().clone()),
            ),
            _ => (-1, None, None),
        };
        Snapshot {
            height: self.ledger().height().0,
            round,
            syncing: self.syncing(),
            head_hash: self.ledger().tip_hash(),
            param_hash: app.param_hash(),
            report: app.last_report(),
            app: app.stats(),
            consensus,
            signer,
            credit: self.credit(),
            rejected: self.rejected,
            pool: (app.pool().len(), app.pool().ready()),
            downloads: self.fetcher.len(),
            data: self.data.as_ref().map(|d| DataSnapshot {
                epoch: d.manifest().map_or(0, |m| m.epoch),
                shards: d.manifest().map_or(0, |m| m.shards.len()),
                held: d.held().collect(),
                has_key: d.has_key(),
                ready: d.ready(),
            }),
        }
    }

    /// The peer's buffers, consensus's included while it runs.
    pub fn queues(&self) -> Vec<Queue> {
        let q = |name, len, bound| Queue { name, len, bound };
        let app = self.app();
        let mut queues = vec![
            q("held_proposals", self.held.len(), Some(MAX_HELD)),
            q(
                "waiting_jobs",
                self.waiting_jobs.len(),
                Some(MAX_WAITING_JOBS),
            ),
            q("served_blobs", self.blobs.len(), Some(fetch::KEEP_BLOBS)),
            q("fetched_updates", app.pool().ready(), Some(pool::MAX_READY)),
            q("announced_updates", app.pool().len(), None),
            q("downloads", self.fetcher.len(), None),
            q("chunk_requests", self.fetcher.in_flight(), None),
            q("requests", self.requests.len(), None),
            q("asked_updates", self.asked_updates.len(), None),
            q("timers", self.timers.len(), None),
        ];
        if let Phase::Running(node) = &self.phase {
            queues.extend(
                node.buffers()
                    .into_iter()
                    .map(|(name, len, bound)| q(name, len, Some(bound))),
            );
        }
        queues
    }

    /// Included updates the ledger credits to this peer.
    pub fn credit(&self) -> u64 {
        self.ledger()
            .credits()
            .get(&self.key.address().0)
            .copied()
            .unwrap_or(0)
    }

    /// Handles one input at time `now_ms` (milliseconds on any monotonic clock). Carry out
    /// the effects in order.
    pub fn handle(&mut self, now_ms: u64, input: Input<P>) -> Vec<Effect<P>> {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        self.app_mut().set_now(now);
        let result = match input {
            Input::Gossip {
                source,
                publisher,
                topic,
                data,
            } => {
                let verdict = self.on_gossip(source, publisher, topic, &data);
                self.effects.push(Effect::Validated(verdict));
                Ok(())
            }
            Input::Request { request, .. } => {
                let response = self.answer(request);
                self.effects.push(Effect::Respond(response));
                Ok(())
            }
            Input::Response { from, id, response } => self
                .on_response(from, id, response)
                .and_then(|()| self.sync_step()),
            Input::RequestFailed { id } => {
                self.on_request_failed(id);
                Ok(())
            }
            Input::PeerUp { peer, relay } => {
                let new = self.peers.insert(peer.clone(), relay).is_none();
                if new && !relay && self.syncing() {
                    self.send(peer, Request::Status, Asked::Status);
                }
                Ok(())
            }
            Input::PeerDown { peer } => {
                self.peers.remove(&peer);
                Ok(())
            }
            Input::Tick => self.on_tick(),
            Input::Training(on) => {
                // A paused volunteer asked for a quiet machine: no training, no test figures.
                self.app_mut().set_quiet(!on);
                self.start_training();
                Ok(())
            }
            Input::JobDone { output, elapsed_ms } => self.on_job(output, elapsed_ms),
        };
        if let Err(e) = result {
            // A consensus error is a bug or a corrupted store: report it loudly, and keep the
            // peer serving what it has rather than taking the driver down.
            warn!(error = %e, "consensus error");
        }
        for job in self.app_mut().take_jobs() {
            if self.plan_shards == 0 {
                // No data yet: jobs wait for the first plan (bounded: the oldest go first;
                // a score that never comes makes the proposal's holder judge without it).
                if self.waiting_jobs.len() >= MAX_WAITING_JOBS {
                    self.waiting_jobs.remove(0);
                }
                self.waiting_jobs.push(job);
            } else {
                self.effects.push(Effect::Run(job));
            }
        }
        for bad in self.fetcher.take_banned() {
            self.effects.push(Effect::Penalise(bad));
        }
        std::mem::take(&mut self.effects)
    }

    // ---- requests ----

    fn send(&mut self, to: P, request: Request, asked: Asked) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        if asked == Asked::Fetch {
            self.fetcher.sent(id, to.clone(), &request, self.now_ms);
        }
        self.requests.insert(id, (to.clone(), asked));
        self.effects.push(Effect::Send { to, id, request });
        id
    }

    fn send_fetches(&mut self, sends: Vec<(P, Request)>) {
        for (to, request) in sends {
            self.send(to, request, Asked::Fetch);
        }
    }

    fn chain_peers(&self) -> Vec<P> {
        self.peers
            .iter()
            .filter(|(p, relay)| !**relay && self.claims.credible(p))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn pending(&self, what: Asked) -> bool {
        self.requests.values().any(|(_, a)| *a == what)
    }

    /// Answers a peer's question from what we hold; never more than the limits allow.
    fn answer(&mut self, request: Request) -> Response {
        if let Some(response) = self.data.as_ref().and_then(|d| d.answer(&request)) {
            return response;
        }
        let shard = |address: &[u8; 32]| self.data.as_ref().and_then(|d| d.blob(address));
        match request {
            Request::Manifest { address } => self
                .blobs
                .get(&address)
                .or_else(|| shard(&address))
                .map_or(Response::NotFound, |b| {
                    Response::Manifest(b.manifest.clone())
                }),
            Request::Chunk { address, index } => self
                .blobs
                .get(&address)
                .or_else(|| shard(&address))
                .and_then(|b| {
                    b.manifest
                        .range(index as usize)
                        .ok()
                        .map(|r| Response::Chunk(ByteBuf::from(b.bytes[r].to_vec())))
                })
                .unwrap_or(Response::NotFound),
            Request::Blocks { from, max } => {
                // A peer chooses `from` and `max`: clamp both, and stay inside the codec's
                // response limit however large the blocks are.
                let count = u64::from(max.clamp(1, MAX_BLOCKS_PER_RESPONSE));
                let from = from.max(1);
                let blocks = self.ledger().blocks();
                let mut total = 0;
                let out: Vec<ByteBuf> = (from..from.saturating_add(count))
                    .map_while(|h| blocks.get((h - 1) as usize))
                    .filter_map(|b| Message::Block(Box::new(b.clone())).encode().ok())
                    .take_while(|bytes| {
                        total += bytes.len();
                        total <= MAX_BLOCKS_RESPONSE_BYTES
                    })
                    .map(ByteBuf::from)
                    .collect();
                if out.is_empty() {
                    Response::NotFound
                } else {
                    Response::Blocks(out)
                }
            }
            Request::Checkpoint if !self.params_stale() => Response::Checkpoint {
                height: self.app().height(),
                address: self.params_address,
            },
            Request::Checkpoint => Response::NotFound,
            Request::Update { id } => self
                .app()
                .update(&id)
                .and_then(|u| u.encode().ok())
                .map_or(Response::NotFound, |b| Response::Update(ByteBuf::from(b))),
            Request::Status => Response::Status {
                height: self.ledger().height().0,
            },
            Request::DataManifest | Request::Grant { .. } | Request::Grants { .. } => {
                Response::NotFound
            }
        }
    }

    fn on_request_failed(&mut self, id: RequestId) {
        let Some((peer, asked)) = self.requests.remove(&id) else {
            return;
        };
        match asked {
            Asked::Fetch => {
                let sends = self.fetcher.on_failure(id);
                self.send_fetches(sends);
                self.forget_abandoned_updates();
            }
            Asked::Blocks | Asked::Checkpoint => self.doubt_target(&peer),
            Asked::Audit => {
                let now = self.now_ms;
                if let Some(d) = &mut self.data {
                    d.on_audit(&peer, None, now);
                }
            }
            _ => {}
        }
    }

    /// Updates whose payload download was abandoned leave the pool, freeing their slot.
    fn forget_abandoned_updates(&mut self) {
        let abandoned: Vec<[u8; 32]> = self
            .app()
            .pool()
            .iter()
            .filter(|(_, e)| {
                e.delta.is_none() && !self.fetcher.is_fetching(&e.update.header.payload_hash)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.app_mut().forget(&id);
        }
    }

    fn on_response(&mut self, from: P, id: RequestId, response: Response) -> Result<(), PeerError> {
        // Answers must match questions: anything we did not ask (or asked someone else) is
        // dropped.
        let Some((asked_peer, asked)) = self.requests.remove(&id) else {
            return Ok(());
        };
        if asked_peer != from {
            return Ok(());
        }
        match (asked, response) {
            (Asked::Fetch, Response::Manifest(m)) => {
                let sends = self.fetcher.on_manifest(id, m);
                self.send_fetches(sends);
            }
            (Asked::Fetch, Response::Chunk(bytes)) => {
                let (sends, done) = self.fetcher.on_chunk(id, &bytes);
                self.send_fetches(sends);
                if let Some(done) = done {
                    if !matches!(done.purpose, Purpose::Shard(_)) {
                        self.blobs.insert(done.address, done.blob.clone());
                    }
                    match done.purpose {
                        Purpose::Update(_) => self.on_payload(done.address, &done.blob)?,
                        Purpose::Checkpoint(h) => {
                            self.on_checkpoint_blob(from, h, done.blob.bytes.clone())?;
                        }
                        Purpose::Shard(index) => {
                            if let Some(d) = &mut self.data {
                                let actions = d.on_shard(index, done.blob);
                                self.carry_data(actions);
                            }
                        }
                    }
                }
            }
            (Asked::Fetch, _) => {
                let sends = self.fetcher.on_failure(id);
                self.send_fetches(sends);
                self.forget_abandoned_updates();
            }
            (Asked::Blocks, Response::Blocks(blocks)) => self.on_blocks(from, blocks)?,
            (Asked::Blocks, _) => self.doubt_target(&from),
            (Asked::Checkpoint, Response::Checkpoint { height, address }) => {
                self.on_checkpoint_offer(from, height, address);
            }
            (Asked::Checkpoint, _) => {}
            (Asked::Update, Response::Update(bytes)) => {
                if let Ok(update) = SignedUpdate::decode(&bytes)
                    && update.verify(&self.run)
                {
                    self.on_update(update, from.clone(), from);
                }
            }
            (Asked::Data, response) => {
                let Some(d) = &mut self.data else {
                    return Ok(());
                };
                let actions = match response {
                    Response::DataManifest(bytes) => d.on_manifest(from, bytes.into_vec()),
                    Response::Grant(bytes) => d.on_grants(from, vec![bytes]),
                    Response::Grants(list) => d.on_grant_page(from, list),
                    _ => Vec::new(),
                };
                self.carry_data(actions);
            }
            (Asked::Audit, response) => {
                let now = self.now_ms;
                if let Some(d) = &mut self.data {
                    let chunk = match &response {
                        Response::Chunk(bytes) => Some(bytes.as_slice()),
                        _ => None,
                    };
                    d.on_audit(&from, chunk, now);
                }
            }
            (Asked::Status, Response::Status { height }) => {
                if let Phase::Syncing {
                    sync: Sync::Probing { best, .. },
                    ..
                } = &mut self.phase
                    && self.claims.credible(&from)
                    && best.as_ref().is_none_or(|(_, h)| *h < height)
                {
                    *best = Some((from, height));
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---- gossip ----

    fn on_gossip(&mut self, source: P, publisher: Option<P>, topic: Topic, data: &[u8]) -> Verdict {
        match topic {
            Topic::Updates => {
                let Ok(update) = SignedUpdate::decode(data) else {
                    self.rejected.malformed += 1;
                    return Verdict::Reject;
                };
                if !update.verify(&self.run) {
                    self.rejected.bad_signature += 1;
                    return Verdict::Reject;
                }
                let publisher = publisher.unwrap_or_else(|| source.clone());
                self.on_update(update, publisher, source)
            }
            Topic::Data => {
                let now = self.now_ms;
                let publisher = publisher.unwrap_or(source);
                match self
                    .data
                    .as_mut()
                    .map(|d| d.on_holdings(publisher, data, now))
                {
                    None => Verdict::Ignore,
                    Some(true) => Verdict::Accept,
                    Some(false) => {
                        self.rejected.malformed += 1;
                        Verdict::Reject
                    }
                }
            }
            _ => {
                let Ok(msg) = Message::decode(data) else {
                    self.rejected.malformed += 1;
                    return Verdict::Reject;
                };
                let verdict = match &mut self.phase {
                    Phase::Running(node) => node.judge(&msg),
                    Phase::Syncing { ledger, .. } => {
                        let ctx = self.ctx;
                        gate::judge(ledger, &ctx, &msg, |v| ctx.verify_vote(v))
                    }
                    Phase::Moving => Verdict::Ignore,
                };
                match verdict {
                    Verdict::Reject => {
                        self.rejected.bad_signature += 1;
                        Verdict::Reject
                    }
                    Verdict::Ignore => {
                        self.rejected.wrong_run_or_stale += 1;
                        self.ask_blocks_if_behind(&msg, &source);
                        if let Err(e) = self.feed(msg) {
                            warn!(error = %e, "consensus error");
                        }
                        Verdict::Ignore
                    }
                    Verdict::Accept => {
                        self.ask_blocks_if_behind(&msg, &source);
                        if let Err(e) = self.accept(msg, source) {
                            warn!(error = %e, "consensus error");
                        }
                        Verdict::Accept
                    }
                }
            }
        }
    }

    /// Peers talk about heights past ours: catch up by blocks.
    fn ask_blocks_if_behind(&mut self, msg: &Message, source: &P) {
        let ours = self.ledger().height().0;
        let height = message_height(msg).unwrap_or(ours + 1);
        if height > ours + 1
            && !self.syncing()
            && !self.pending(Asked::Blocks)
            && self.claims.credible(source)
            && !self.peers.get(source).copied().unwrap_or(false)
        {
            self.request_blocks(source.clone());
        }
    }

    fn accept(&mut self, msg: Message, source: P) -> Result<(), PeerError> {
        if matches!(msg, Message::Proposal(_)) {
            self.clock.proposal_seen_ms.get_or_insert(self.now_ms);
            if self.held.len() < MAX_HELD && !self.ready_to_judge(&msg, &source) {
                self.held.push(Held {
                    since_ms: self.now_ms,
                    msg,
                    source,
                });
                return Ok(());
            }
        }
        self.feed(msg)
    }

    /// Whether every update a proposal names is here and scored; starts fetching and scoring
    /// what is not.
    fn ready_to_judge(&mut self, msg: &Message, from: &P) -> bool {
        let Message::Proposal(p) = msg else {
            return true;
        };
        if self.syncing() {
            return true;
        }
        let missing = self.app_mut().missing_for(&p.proposal.value.proposal);
        for (id, address) in &missing.payloads {
            let sends = self
                .fetcher
                .want(*address, Purpose::Update(*id), from.clone());
            self.send_fetches(sends);
        }
        for id in &missing.announcements {
            if self.asked_updates.insert(*id) {
                self.send(from.clone(), Request::Update { id: *id }, Asked::Update);
            }
        }
        missing.is_empty()
    }

    fn on_update(&mut self, update: SignedUpdate, publisher: P, via: P) -> Verdict {
        let ours = self.app().height();
        let weight_ok = update.header.samples == jobs::update_weight(&self.genesis.training);
        if update.header.height <= ours && weight_ok && self.app_mut().note_late(&update) {
            // A slow trainer's sign of life: forwarded, so every proposer hears it.
            return Verdict::Accept;
        }
        if update.header.height <= ours || update.header.height > ours + 2 {
            self.rejected.wrong_run_or_stale += 1;
            return Verdict::Ignore;
        }
        if !weight_ok {
            // A weight the rules do not give: a lie no honest relay forwards.
            self.rejected.bad_signature += 1;
            return Verdict::Reject;
        }
        let id = update.id();
        match self.app_mut().announce(update, publisher_hash(&publisher)) {
            Ok(Admitted::New | Admitted::DoubleAnnouncement) => {
                let address = update.header.payload_hash;
                let mut sends = self
                    .fetcher
                    .want(address, Purpose::Update(id), publisher.clone());
                if via != publisher {
                    sends.extend(self.fetcher.want(address, Purpose::Update(id), via));
                }
                self.send_fetches(sends);
                Verdict::Accept
            }
            Err(_) => Verdict::Ignore,
        }
    }

    fn on_payload(&mut self, address: [u8; 32], blob: &Blob) -> Result<(), PeerError> {
        // Every announcement naming these bytes (one trainer's variants may share them).
        let waiting: Vec<SignedUpdate> = self
            .app()
            .pool()
            .iter()
            .filter(|(_, e)| e.delta.is_none() && e.update.header.payload_hash == address)
            .map(|(_, e)| e.update)
            .collect();
        for update in waiting {
            let id = update.id();
            let expected = self.app().params().len();
            match payload::decode(
                &blob.bytes,
                &update.header.trainer,
                self.genesis.compression,
                expected,
            ) {
                Ok(delta) => {
                    if self.app_mut().add_payload(&id, delta)
                        && let Ok(announcement) = update.encode()
                    {
                        self.effects.push(Effect::Persist(Persist::Update {
                            height: update.header.height,
                            id,
                            announcement,
                            payload: blob.bytes.clone(),
                        }));
                    }
                }
                Err(e) => {
                    debug!(id = %short(&id), error = %e, "update payload refused");
                    self.app_mut().refuse(&id);
                }
            }
        }
        self.release_held()?;
        self.retry_propose()
    }

    fn restore_update(&mut self, announcement: &[u8], payload: Vec<u8>) {
        let Ok(update) = SignedUpdate::decode(announcement) else {
            return;
        };
        let (blob, address) = Blob::new(payload);
        if !update.verify(&self.run) || address != update.header.payload_hash {
            return;
        }
        let expected = self.app().params().len();
        let Ok(delta) = payload::decode(
            &blob.bytes,
            &update.header.trainer,
            self.genesis.compression,
            expected,
        ) else {
            return;
        };
        let id = update.id();
        let own = publisher_hash(&"restored");
        if self.app_mut().announce(update, own).is_ok() && self.app_mut().add_payload(&id, delta) {
            self.blobs.insert(address, blob);
        }
    }

    /// Feeds held proposals whose payloads and scores arrived (or that waited long enough).
    fn release_held(&mut self) -> Result<(), PeerError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        for h in held {
            let ready = self.ready_to_judge(&h.msg, &h.source);
            if ready || self.now_ms.saturating_sub(h.since_ms) > HOLD_MS {
                if !ready {
                    debug!(
                        height = message_height(&h.msg),
                        "proposal judged without all its payloads after holding it {HOLD_MS} ms"
                    );
                }
                self.feed(h.msg)?;
            } else {
                self.held.push(h);
            }
        }
        Ok(())
    }

    // ---- consensus ----

    fn feed(&mut self, msg: Message) -> Result<(), PeerError> {
        if let Phase::Running(node) = &mut self.phase {
            let outputs = node.on_message(msg)?;
            self.carry_out(outputs)?;
        }
        Ok(())
    }

    fn carry_out(&mut self, outputs: Vec<Output>) -> Result<(), PeerError> {
        let mut queue = std::collections::VecDeque::from(outputs);
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Persist(record) => {
                    self.effects
                        .push(Effect::Persist(Persist::Consensus(record)));
                }
                Output::Broadcast(msg) => {
                    if matches!(msg, Message::Proposal(_)) {
                        self.clock.proposal_seen_ms.get_or_insert(self.now_ms);
                    }
                    match msg.encode() {
                        Ok(data) => self.effects.push(Effect::Publish {
                            topic: Topic::of(&msg),
                            data,
                        }),
                        Err(_) => warn!(kind = msg.kind(), "message too large to send"),
                    }
                }
                Output::ScheduleTimer(t, after) => {
                    self.timers.retain(|(x, _)| *x != t);
                    self.timers
                        .push((t, self.now_ms + after.as_millis() as u64));
                }
                Output::CancelTimer(t) => self.timers.retain(|(x, _)| *x != t),
                Output::CancelAllTimers => self.timers.clear(),
                Output::Committed(block) => self.on_committed(*block)?,
                Output::CallAgain => {
                    if let Phase::Running(node) = &mut self.phase {
                        queue.extend(node.resume()?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn retry_propose(&mut self) -> Result<(), PeerError> {
        let outputs = match &mut self.phase {
            Phase::Running(node) if node.awaiting_proposal() => node.retry_propose()?,
            _ => return Ok(()),
        };
        self.carry_out(outputs)
    }

    fn on_committed(&mut self, block: Block) -> Result<(), PeerError> {
        let height = block.height.0;
        let applied = self.app_mut().on_commit(&block);
        let now = self.now_ms;
        let round_ms = now.saturating_sub(self.last_commit_ms);
        self.last_commit_ms = now;
        let (mut train_ms, mut network_ms, mut consensus_ms) = (0, 0, 0);
        if let Some(started) = self.clock.started_ms {
            let total = now.saturating_sub(started);
            consensus_ms = self
                .clock
                .proposal_seen_ms
                .map_or(0, |t| now.saturating_sub(t));
            train_ms = self.clock.trained_ms;
            network_ms = total.saturating_sub(consensus_ms + train_ms);
        }
        self.clock = RoundClock {
            started_ms: Some(now),
            ..RoundClock::default()
        };
        let credited: Vec<Address> = self
            .ledger()
            .credits()
            .keys()
            .map(|k| Address(*k))
            .collect();
        self.app_mut().set_credited(credited);
        let report = self.app().last_report();
        self.effects.push(Effect::Event(Event::Committed {
            report,
            applied,
            round_ms,
            train_ms,
            network_ms,
            consensus_ms,
        }));
        if !applied {
            if let Some((offerer, bytes)) = self.ahead.take_at(height) {
                if self.adopt_checkpoint(height, bytes) {
                    return self.retry_propose();
                }
                self.convict_offerer(offerer);
            }
            debug!(
                height,
                "committed without the payloads here; fetching a checkpoint"
            );
            self.request_checkpoint_anywhere();
            return Ok(());
        }
        self.ahead.clear();
        self.after_params_changed(height, false);
        Ok(())
    }

    /// After the committed parameters moved: persist and serve them, drop what is decided,
    /// train on them.
    fn after_params_changed(&mut self, height: u64, adopted: bool) {
        self.publish_params_blob();
        let every = self.genesis.training.checkpoint_every;
        let bytes = Arc::new(f32s_to_bytes(self.app().params()));
        self.effects.push(Effect::Persist(Persist::Params {
            height,
            bytes,
            checkpoint: adopted || height.is_multiple_of(every),
        }));
        // Downloads for decided heights are cancelled: their answers would only cost us.
        let pool_ids: BTreeSet<[u8; 32]> = self.app().pool().iter().map(|(id, _)| *id).collect();
        self.fetcher.retain(|p| match p {
            Purpose::Update(id) => pool_ids.contains(id),
            Purpose::Checkpoint(h) => *h > height,
            Purpose::Shard(_) => true,
        });
        self.requests
            .retain(|id, (_, a)| *a != Asked::Fetch || self.fetcher.owns(id));
        self.held
            .retain(|h| message_height(&h.msg).is_some_and(|m| m > height));
        self.asked_updates.clear();
        self.start_training();
    }

    fn publish_params_blob(&mut self) {
        let (blob, address) = Blob::new(f32s_to_bytes(self.app().params()));
        self.blobs.insert(address, blob);
        self.params_address = address;
    }

    fn params_stale(&self) -> bool {
        self.params_missing || self.app().height() != self.ledger().height().0
    }

    // ---- data ----

    fn carry_data(&mut self, actions: Vec<DataAction<P>>) {
        for action in actions {
            match action {
                DataAction::Persist(record) => {
                    self.effects.push(Effect::Persist(Persist::Data(record)));
                }
                DataAction::Ask(to, request) => {
                    let asked = if matches!(request, Request::Chunk { .. }) {
                        Asked::Audit
                    } else {
                        Asked::Data
                    };
                    self.send(to, request, asked);
                }
                DataAction::Fetch {
                    index,
                    address,
                    holders,
                } => {
                    for holder in holders {
                        let sends = self.fetcher.want(address, Purpose::Shard(index), holder);
                        self.send_fetches(sends);
                    }
                }
                DataAction::Publish(data) => self.effects.push(Effect::Publish {
                    topic: Topic::Data,
                    data,
                }),
                DataAction::Penalise(peer) => self.effects.push(Effect::Penalise(peer)),
                DataAction::Event(e) => {
                    if let DataEvent::Damaged { index } = &e {
                        warn!(index, "a stored shard was damaged: fetching it again");
                    }
                    self.effects.push(Effect::Event(Event::Data(e)));
                }
            }
        }
        self.use_new_plan();
        self.update_members();
    }

    /// In a closed run, a peer that keeps every grant (validators, storage peers) counts
    /// only its members' updates (DESIGN.md, "Data"); others cannot tell and follow the votes.
    fn update_members(&mut self) {
        if !self.roles.validate && !self.roles.store {
            return;
        }
        let Some(d) = self.data.as_mut().filter(|d| d.closed()) else {
            return;
        };
        let members = d.take_members_changed().then(|| d.members());
        if let Some(members) = members {
            self.app_mut().set_members(Some(members));
        }
    }

    /// Hands the driver a plan once the data this peer needs is here (and a larger one when
    /// more training shards arrive), then the jobs that waited for it.
    fn use_new_plan(&mut self) {
        // A new epoch we cannot read yet (or at all: revoked) stops training on the old one.
        if self.data.as_ref().is_some_and(|d| !d.ready()) {
            self.plan_shards = 0;
        }
        let rules = self.genesis.training;
        let Some(plan) = self.data.as_mut().and_then(|d| d.take_plan(&rules)) else {
            return;
        };
        match plan {
            Ok(plan) => {
                let first = self.plan_shards == 0;
                self.plan_shards = plan.shards().len() as u32;
                info!(train_shards = self.plan_shards, "data ready");
                self.effects
                    .push(Effect::Event(Event::Data(DataEvent::Ready {
                        train: self.plan_shards as usize,
                    })));
                self.effects.push(Effect::UsePlan(Arc::new(plan)));
                for job in std::mem::take(&mut self.waiting_jobs) {
                    self.effects.push(Effect::Run(job));
                }
                if first {
                    self.start_training();
                }
            }
            Err(e) => warn!(error = %e, "the run's data cannot make a plan"),
        }
    }

    // ---- training ----

    fn start_training(&mut self) {
        if !self.roles.train || self.app().is_quiet() || self.syncing() {
            return;
        }
        // One training job at a time: a trainer slower than the chain trains on the newest
        // parameters once it is free, instead of queueing a job (and a copy of the
        // parameters) per height it falls behind.
        if self.training_for.is_some() || self.plan_shards == 0 {
            return;
        }
        let height = self.app().height() + 1;
        self.training_for = Some(height);
        let trainer = self.key.address();
        let shards = self.plan_shards;
        self.effects.push(Effect::Run(Job::Train {
            height,
            params: self.app().params().clone(),
            shard: DataPlan::shard_for(shards, &self.run, height, &trainer),
            seed: jobs::train_seed(&trainer, height),
        }));
    }

    fn on_job(&mut self, output: jobs::Output, elapsed_ms: u64) -> Result<(), PeerError> {
        match output {
            jobs::Output::Trained { height, result } => {
                self.training_for = None;
                let update = match result {
                    Ok(u) => u,
                    Err(e) => {
                        self.effects.push(Effect::Event(Event::TrainingFailed(e)));
                        return Ok(());
                    }
                };
                if height != self.app().height() + 1 || update.base.0 != self.app().param_hash() {
                    debug!(
                        height,
                        "training finished for a height already decided; announced as late"
                    );
                    // Proposers wait for a trainer they know is training (up to the run's
                    // deadline); without this a trainer slower than the chain's pace is
                    // never waited for and never gets in.
                    // Its payload is never fetched: a fresh encoder leaves top-k's remainder
                    // for the next real update.
                    let (signed, _, _) = payload::Encoder::default().sign(
                        &self.key,
                        &self.run,
                        &self.genesis,
                        height,
                        &update,
                    );
                    if let Ok(announcement) = signed.encode() {
                        self.effects.push(Effect::Publish {
                            topic: Topic::Updates,
                            data: announcement,
                        });
                    }
                    self.start_training();
                    return Ok(());
                }
                self.clock.trained_ms = elapsed_ms;
                self.announce_own(height, update)
            }
            jobs::Output::Validated { key, draw, loss } => {
                self.app_mut().on_score(key, draw, loss);
                self.release_held()?;
                self.retry_propose()
            }
            jobs::Output::Tested { height, result } => {
                self.app_mut().on_test(height, result);
                if let Some((loss, accuracy)) = result {
                    self.effects.push(Effect::Event(Event::Tested {
                        height,
                        loss,
                        accuracy,
                    }));
                }
                Ok(())
            }
        }
    }

    fn announce_own(
        &mut self,
        height: u64,
        update: tabswarm_core::train::LocalUpdate,
    ) -> Result<(), PeerError> {
        let mut encoder = std::mem::take(&mut self.encoder);
        let (signed, blob, sent) =
            encoder.sign(&self.key, &self.run, &self.genesis, height, &update);
        self.encoder = encoder;
        let address = signed.header.payload_hash;
        let id = signed.id();
        let Ok(announcement) = signed.encode() else {
            return Ok(());
        };
        self.effects.push(Effect::Persist(Persist::Update {
            height,
            id,
            announcement: announcement.clone(),
            payload: blob.bytes.clone(),
        }));
        self.blobs.insert(address, blob);
        let me = publisher_hash(&"self");
        if self.app_mut().announce(signed, me).is_ok() {
            // What every peer decodes from the payload, so our pool agrees with theirs.
            self.app_mut().add_payload(&id, sent);
        }
        self.effects.push(Effect::Publish {
            topic: Topic::Updates,
            data: announcement,
        });
        self.effects
            .push(Effect::Event(Event::UpdatePublished { height, id }));
        debug!(height, id = %short(&id), "update announced");
        self.retry_propose()
    }

    // ---- time ----

    fn on_tick(&mut self) -> Result<(), PeerError> {
        let retries = self.fetcher.expire(self.now_ms);
        // Requests the fetcher gave up on by time leave our table too.
        let fetcher = &self.fetcher;
        self.requests
            .retain(|id, (_, a)| *a != Asked::Fetch || fetcher.owns(id));
        self.send_fetches(retries);
        self.forget_abandoned_updates();
        let now = self.now_ms;
        let connected: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, relay)| !**relay)
            .map(|(p, _)| p.clone())
            .collect();
        if let Some(d) = &mut self.data {
            let actions = d.tick(now, &connected);
            self.carry_data(actions);
        }
        let mut due: Vec<(u64, Timeout)> = self
            .timers
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(t, at)| (*at, *t))
            .collect();
        due.sort_by_key(|(at, _)| *at);
        for (_, t) in due {
            self.timers.retain(|(x, _)| *x != t);
            if let Phase::Running(node) = &mut self.phase {
                let outputs = node.on_timeout(t)?;
                self.carry_out(outputs)?;
            }
        }
        if self.syncing() {
            self.sync_step()
        } else {
            self.retry_propose()?;
            self.release_held()
        }
    }

    // ---- catch-up ----

    fn sync_state(&self) -> Option<Sync<P>> {
        match &self.phase {
            Phase::Syncing { sync, .. } => Some(sync.clone()),
            _ => None,
        }
    }

    fn set_sync(&mut self, next: Sync<P>) {
        if let Phase::Syncing { sync, .. } = &mut self.phase {
            *sync = next;
        }
    }

    /// One step of catching up (see [`crate::sync`]).
    fn sync_step(&mut self) -> Result<(), PeerError> {
        let Some(state) = self.sync_state() else {
            return Ok(());
        };
        let now = self.now_ms;
        let ours = self.ledger().height().0;
        match state {
            Sync::Target {
                peer,
                height,
                chosen_ms,
                checkpoint,
            } => {
                if let Some(bytes) = &checkpoint
                    && height == ours
                {
                    self.adopt_checkpoint(height, bytes.clone());
                    self.set_sync(Sync::start(now));
                    return Ok(());
                }
                if now.saturating_sub(chosen_ms) > sync::TARGET_TIMEOUT_MS {
                    warn!(
                        target = height,
                        ?peer,
                        "catch-up target not reached in time; doubting its peer"
                    );
                    self.claims.doubt(&peer);
                    self.set_sync(Sync::start(now));
                } else if ours < height && !self.pending(Asked::Blocks) {
                    self.request_blocks(peer);
                }
                Ok(())
            }
            Sync::Probing {
                since_ms,
                best,
                probed_ms,
                asked_checkpoint_ms,
            } => {
                let best = best.filter(|(p, _)| self.claims.credible(p));
                if best.as_ref().is_none_or(|(_, h)| *h <= ours)
                    && probed_ms.is_none_or(|t| now.saturating_sub(t) >= sync::PROBE_EVERY_MS)
                {
                    for peer in self.chain_peers() {
                        self.send(peer, Request::Status, Asked::Status);
                    }
                    self.set_sync(Sync::Probing {
                        since_ms,
                        best: best.clone(),
                        probed_ms: Some(now),
                        asked_checkpoint_ms,
                    });
                }
                let stale = self.params_stale();
                let far_behind = best.as_ref().is_some_and(|(_, h)| *h > ours + 2);
                if let Some((peer, h)) = &best
                    && !stale
                    && !far_behind
                    && *h > ours
                {
                    // A block or two behind with our parameters current: fetch those blocks
                    // and apply them with the updates kept on disk (else a checkpoint).
                    if !self.pending(Asked::Blocks) {
                        self.request_blocks(peer.clone());
                    }
                    return Ok(());
                }
                if stale || far_behind {
                    if let Some((peer, _)) = best
                        && asked_checkpoint_ms
                            .is_none_or(|t| now.saturating_sub(t) > sync::CHECKPOINT_ASK_EVERY_MS)
                    {
                        self.send(peer, Request::Checkpoint, Asked::Checkpoint);
                        if let Phase::Syncing {
                            sync:
                                Sync::Probing {
                                    asked_checkpoint_ms,
                                    ..
                                },
                            ..
                        } = &mut self.phase
                        {
                            *asked_checkpoint_ms = Some(now);
                        }
                    }
                    return Ok(());
                }
                let alone = self.peers.values().all(|relay| *relay);
                if best.is_some() || (alone && now.saturating_sub(since_ms) > sync::SYNC_GRACE_MS) {
                    self.start_consensus()?;
                }
                Ok(())
            }
        }
    }

    /// A catch-up claim by `peer` did not pan out.
    fn doubt_target(&mut self, peer: &P) {
        if let Some(Sync::Target { peer: p, .. }) = self.sync_state()
            && &p == peer
        {
            self.claims.doubt(peer);
            self.set_sync(Sync::start(self.now_ms));
        }
    }

    fn start_consensus(&mut self) -> Result<(), PeerError> {
        let Phase::Syncing { app, ledger, .. } = std::mem::replace(&mut self.phase, Phase::Moving)
        else {
            return Ok(());
        };
        let persisted = Persisted {
            blocks: ledger.blocks().to_vec(),
            wal: std::mem::take(&mut self.restart.wal),
            signer: self.restart.signer.clone(),
        };
        // A staked peer that was not asked to validate follows consensus under a key that
        // holds no stake, so it never signs a vote.
        let key = if self.roles.validate {
            self.key.clone()
        } else {
            follower_key(&self.key)
        };
        let validator = self.roles.validate
            && self
                .genesis
                .validators
                .iter()
                .any(|(a, _)| *a == self.key.address());
        let mut node = Node::restart(self.genesis.clone(), key, app, persisted)?;
        let outputs = node.start()?;
        let height = node.ledger().height().0;
        info!(height, validator, "in sync; taking part");
        self.phase = Phase::Running(Box::new(node));
        self.clock.started_ms = Some(self.now_ms);
        self.effects
            .push(Effect::Event(Event::InSync { height, validator }));
        self.carry_out(outputs)?;
        self.start_training();
        Ok(())
    }

    fn request_blocks(&mut self, peer: P) {
        let from = self.ledger().height().0 + 1;
        self.send(
            peer,
            Request::Blocks {
                from,
                max: MAX_BLOCKS_PER_RESPONSE,
            },
            Asked::Blocks,
        );
    }

    fn request_checkpoint_anywhere(&mut self) {
        // Several payload-less commits in a row need one answer, not one each.
        if self
            .last_checkpoint_ask_ms
            .is_some_and(|t| self.now_ms.saturating_sub(t) < 1_000)
        {
            return;
        }
        self.last_checkpoint_ask_ms = Some(self.now_ms);
        for peer in self.chain_peers().into_iter().take(3) {
            self.send(peer, Request::Checkpoint, Asked::Checkpoint);
        }
    }

    fn on_blocks(&mut self, peer: P, blocks: Vec<ByteBuf>) -> Result<(), PeerError> {
        let before = self.ledger().height().0;
        for bytes in blocks {
            let Ok(Message::Block(block)) = Message::decode(&bytes) else {
                warn!(?peer, "peer sent something other than a block; convicted");
                self.claims.convict(&peer);
                self.effects.push(Effect::Penalise(peer));
                return Ok(());
            };
            let target = match self.sync_state() {
                Some(Sync::Target { height, .. }) => Some(height),
                _ => None,
            };
            match &mut self.phase {
                Phase::Syncing { ledger, app, .. } => {
                    if block.height.0 != ledger.height().0 + 1
                        || target.is_some_and(|t| block.height.0 > t)
                    {
                        continue;
                    }
                    if let Err(e) = ledger.append((*block).clone()) {
                        warn!(?peer, error = %e, "peer sent a block that does not verify; convicted");
                        self.claims.convict(&peer);
                        self.effects.push(Effect::Penalise(peer));
                        self.set_sync(Sync::start(self.now_ms));
                        return Ok(());
                    }
                    // Applied directly if its updates are here (a peer just behind); a peer
                    // far behind takes a checkpoint instead.
                    let applied = target.is_none() && app.on_commit(&block);
                    let h = block.height.0;
                    self.effects
                        .push(Effect::Persist(Persist::Consensus(Record::Block(block))));
                    if applied {
                        self.after_params_changed(h, false);
                    }
                    if h.is_multiple_of(100) {
                        self.effects
                            .push(Effect::Event(Event::CatchingUp { height: h }));
                    }
                }
                Phase::Running(node) => {
                    let outputs = node.on_message(Message::Block(block))?;
                    self.carry_out(outputs)?;
                }
                Phase::Moving => {}
            }
        }
        if self.ledger().height().0 == before && self.syncing() {
            // It claimed to be ahead and sent nothing we could use.
            self.doubt_target(&peer);
        }
        Ok(())
    }

    fn on_checkpoint_offer(&mut self, peer: P, height: u64, address: [u8; 32]) {
        let ours = self.ledger().height().0;
        match self.sync_state() {
            Some(Sync::Probing { .. }) => {
                if height >= ours && (height > ours || self.params_stale()) {
                    self.set_sync(Sync::Target {
                        peer: peer.clone(),
                        height,
                        chosen_ms: self.now_ms,
                        checkpoint: None,
                    });
                    let sends = self
                        .fetcher
                        .want(address, Purpose::Checkpoint(height), peer);
                    self.send_fetches(sends);
                }
            }
            Some(Sync::Target { .. }) => {}
            None => {
                // Running with stale parameters: a checkpoint at or past our height is taken,
                // its height fixed now (see `sync::Ahead`); blocks bring the ledger there.
                if self.params_stale()
                    && self.claims.credible(&peer)
                    && self.ahead.want(ours, height, &peer, self.now_ms)
                {
                    let sends =
                        self.fetcher
                            .want(address, Purpose::Checkpoint(height), peer.clone());
                    self.send_fetches(sends);
                }
                if height > ours && !self.pending(Asked::Blocks) {
                    self.request_blocks(peer);
                }
            }
        }
    }

    fn on_checkpoint_blob(
        &mut self,
        peer: P,
        height: u64,
        bytes: Vec<u8>,
    ) -> Result<(), PeerError> {
        if let Some(Sync::Target {
            height: target,
            chosen_ms,
            ..
        }) = self.sync_state()
            && height == target
            && height > self.ledger().height().0
        {
            // Adopted once the blocks up to its height are verified (see `sync_step`).
            self.set_sync(Sync::Target {
                peer,
                height,
                chosen_ms,
                checkpoint: Some(bytes),
            });
            return Ok(());
        }
        if self.syncing() || !self.params_stale() {
            self.adopt_checkpoint(height, bytes);
            return self.retry_propose();
        }
        let ours = self.ledger().height().0;
        match self.ahead.arrived(ours, height, bytes) {
            sync::Arrived::AdoptNow(offerer, bytes) => {
                if !self.adopt_checkpoint(height, bytes) {
                    self.convict_offerer(offerer);
                    self.request_checkpoint_anywhere();
                }
            }
            sync::Arrived::Held => {}
            sync::Arrived::Useless => self.request_checkpoint_anywhere(),
        }
        self.retry_propose()
    }

    /// A peer named, for a height, parameters the block of that height does not commit to:
    /// a lie (content addressing rules out a mangled transfer).
    fn convict_offerer(&mut self, offerer: P) {
        warn!(
            ?offerer,
            "peer offered a checkpoint that does not match its block; convicted"
        );
        self.claims.convict(&offerer);
        self.effects.push(Effect::Penalise(offerer));
    }

    /// Adopts parameters for our ledger height if they hash to what its block says; whether
    /// they did.
    fn adopt_checkpoint(&mut self, height: u64, bytes: Vec<u8>) -> bool {
        let Some(params) = bytes_to_f32s(&bytes) else {
            return false;
        };
        let expected = self
            .ledger()
            .blocks()
            .get((height as usize).wrapping_sub(1))
            .map(|b| b.value.proposal.result_param_hash);
        if height != self.ledger().height().0 || expected != Some(flat::param_hash(&params).0) {
            debug!(height, "checkpoint does not match our ledger; ignored");
            return false;
        }
        let now = self.now_ms;
        self.app_mut().set_committed(height, Arc::new(params), now);
        self.params_missing = false;
        if let Some(Sync::Target { height: target, .. }) = self.sync_state()
            && target <= height
        {
            // The target is reached: look around again (most likely we are in sync now).
            self.set_sync(Sync::start(now));
        }
        self.ahead.clear();
        self.effects
            .push(Effect::Event(Event::CheckpointAdopted { height }));
        self.after_params_changed(height, true);
        true
    }
}

/// The key a non-validating peer runs consensus under: derived from its own, never staked.
fn follower_key(key: &Keypair) -> Keypair {
    use sha2::{Digest, Sha256};
    // From a signature, so only the key's owner can derive it (ed25519 signing is
    // deterministic); the signature itself never leaves the process.
    let mut h = Sha256::new();
    h.update(b"tabswarm/follower/v1\0");
    h.update(key.sign_raw(b"tabswarm/follower/v1").to_bytes());
    Keypair::from_seed(h.finalize().into())
}

fn unreachable_ledger() -> &'static Ledger {
    // `Phase::Moving` only exists inside `start_consensus`, which never calls out.
    panic!("peer phase observed mid-move")
}

fn unreachable_app() -> &'static mut RoundApp {
    panic!("peer phase observed mid-move")
}
