//! The node's event loop: libp2p events, consensus timers, finished training jobs and a
//! periodic tick, all on one task, so consensus state has a single owner and outputs are
//! carried out strictly in order (a `Persist` is committed to redb before the next output).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};
use malachitebft_core_types::Timeout;
use serde_bytes::ByteBuf;
use tabswarm_consensus::context::TabswarmContext;
use tabswarm_consensus::genesis::{Genesis, hex};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::ledger::{Block, Ledger};
use tabswarm_consensus::node::{Node, Output, Record};
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::{bytes_to_f32s, f32s_to_bytes};
use tabswarm_core::flat;
use tabswarm_core::train::LocalUpdate;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::fetch::{Blob, Blobs, Fetcher, Purpose};
use crate::metrics::{Metrics, Status};
use crate::net::behaviour::{Behaviour, BehaviourEvent};
use crate::net::proto::{MAX_BLOCKS_PER_RESPONSE, Request, Response};
use crate::net::topics::{TopicKind, Topics};
use crate::round::{DataPlan, RoundApp, short, train_locally};
use crate::store::Store;

/// How long a proposal waits for the payloads it names before consensus judges it anyway.
const PAYLOAD_WAIT: Duration = Duration::from_secs(4);
/// How often the loop looks around (proposal retries, status, discovery).
const TICK: Duration = Duration::from_millis(100);
/// How long a fresh node looks for peers ahead of it before starting alone.
const SYNC_GRACE: Duration = Duration::from_secs(3);
/// Bytes of blocks in one answer (the cbor codec refuses responses over 10 MiB).
const MAX_BLOCKS_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Proposals held back while their payloads download (more are judged at once).
const MAX_HELD: usize = 64;
/// Peers a node tries to stay connected to.
const TARGET_PEERS: usize = 12;

/// What this node does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Roles {
    pub(crate) train: bool,
    pub(crate) validate: bool,
    /// Asked for explicitly; every node serves what it holds, a storage-only one just does
    /// nothing else.
    pub(crate) storage: bool,
}

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

/// Where a height's wall time went (for `/metrics` and the network benchmark).
#[derive(Debug, Clone, Copy, Default)]
struct RoundClock {
    started: Option<Instant>,
    trained: Duration,
    proposal_seen: Option<Instant>,
}

enum Phase {
    /// Catching up with peers before taking part.
    Syncing {
        since: Instant,
        best: Option<(PeerId, u64)>,
        params_missing: bool,
    },
    Running(Box<Node<RoundApp>>),
}

struct TrainDone {
    height: u64,
    elapsed: Duration,
    result: anyhow::Result<LocalUpdate>,
}

pub(crate) struct Runner {
    swarm: Swarm<Behaviour>,
    store: Store,
    genesis: Genesis,
    ctx: TabswarmContext,
    key: Keypair,
    roles: Roles,
    topics: Topics,
    phase: Phase,
    /// The application before consensus starts (during sync); moved into the node after.
    app: Option<RoundApp>,
    /// The chain while catching up; once consensus runs, the node's own ledger is the one
    /// (see [`Runner::ledger`]), so commits are verified and stored once.
    sync_ledger: Ledger,
    blobs: Blobs,
    fetcher: Fetcher,
    params_address: [u8; 32],
    timers: HashMap<Timeout, Instant>,
    held: Vec<(Instant, Message)>,
    train_tx: mpsc::Sender<TrainDone>,
    train_rx: mpsc::Receiver<TrainDone>,
    training_for: Option<u64>,
    relays: HashSet<PeerId>,
    connections: HashMap<libp2p::swarm::ConnectionId, (PeerId, bool)>,
    reserved: HashSet<PeerId>,
    relay_only: bool,
    bootstrap: Vec<Multiaddr>,
    pending_blocks: HashMap<OutboundRequestId, PeerId>,
    metrics: Metrics,
    status: Arc<Mutex<Status>>,
    clock: RoundClock,
    last_commit: Instant,
    last_discovery: Instant,
    last_checkpoint_ask: Instant,
    /// Catch-up: the checkpoint height chosen, and when.
    sync_target: Option<(u64, Instant)>,
    /// Catch-up: a checkpoint fetched ahead of our ledger.
    fetched_checkpoint: Option<(u64, Vec<u8>)>,
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
        let persisted = store.load()?;
        let ledger = Ledger::verify_chain(genesis.clone(), &persisted.blocks)
            .context("the stored ledger does not verify from genesis")?;
        let height = ledger.height().0;
        // Parameters for the stored height: the initial ones, or a checkpoint of that height.
        let (params, params_missing) = if height == 0 {
            (crate::round::initial_params(&genesis.training)?, false)
        } else {
            // The parameters written at the last commit, else the newest checkpoint, if
            // either is of the stored height and hashes to what the ledger says.
            [store.params()?, store.latest_checkpoint()?]
                .into_iter()
                .flatten()
                .filter(|(h, _)| *h == height)
                .filter_map(|(_, bytes)| bytes_to_f32s(&bytes))
                .find(|p| flat::param_hash(p).0 == ledger.param_hash())
                .map_or_else(
                    || {
                        Ok::<_, anyhow::Error>((
                            crate::round::initial_params(&genesis.training)?,
                            true,
                        ))
                    },
                    |p| Ok((p, false)),
                )?
        };
        let app = RoundApp::new(
            &genesis,
            plan,
            if params_missing { 0 } else { height },
            params,
        )?;
        let (train_tx, train_rx) = mpsc::channel(2);
        let topics = Topics::new(&genesis.run_id());
        let mut runner = Self {
            swarm,
            store,
            ctx: TabswarmContext::new(genesis.run_id()),
            genesis,
            key,
            roles,
            topics,
            phase: Phase::Syncing {
                since: Instant::now(),
                best: None,
                params_missing,
            },
            app: Some(app),
            sync_ledger: ledger,
            blobs: Blobs::default(),
            fetcher: Fetcher::default(),
            params_address: [0; 32],
            timers: HashMap::new(),
            held: Vec::new(),
            train_tx,
            train_rx,
            training_for: None,
            relays: HashSet::new(),
            connections: HashMap::new(),
            reserved: HashSet::new(),
            relay_only,
            bootstrap,
            pending_blocks: HashMap::new(),
            metrics,
            status,
            clock: RoundClock::default(),
            last_commit: Instant::now(),
            last_discovery: Instant::now() - Duration::from_secs(60),
            last_checkpoint_ask: Instant::now() - Duration::from_secs(60),
            sync_target: None,
            fetched_checkpoint: None,
            stop_at_height,
        };
        runner.publish_params_blob();
        runner.restore_updates()?;
        Ok(runner)
    }

    /// The committed chain: the consensus node's once it runs, the catch-up copy before.
    fn ledger(&self) -> &Ledger {
        match &self.phase {
            Phase::Running(node) => node.ledger(),
            Phase::Syncing { .. } => &self.sync_ledger,
        }
    }

    fn app(&self) -> &RoundApp {
        match &self.phase {
            Phase::Running(node) => node.app(),
            Phase::Syncing { .. } => self.app.as_ref().expect("app present while syncing"),
        }
    }

    fn app_mut(&mut self) -> &mut RoundApp {
        match &mut self.phase {
            Phase::Running(node) => node.app_mut(),
            Phase::Syncing { .. } => self.app.as_mut().expect("app present while syncing"),
        }
    }

    /// Puts back the updates of the height in progress that were on disk (a replayed
    /// write-ahead log may decide a block that names them).
    fn restore_updates(&mut self) -> anyhow::Result<()> {
        let run = self.genesis.run_id();
        for (announcement, payload) in self.store.updates()? {
            let Ok(update) = SignedUpdate::decode(&announcement) else {
                continue;
            };
            let (blob, address) = Blob::new(payload);
            if !update.verify(&run) || address != update.header.payload_hash {
                continue;
            }
            let Some(delta) = bytes_to_f32s(&blob.bytes) else {
                continue;
            };
            let id = update.id();
            if self.app_mut().announce(update) && self.app_mut().add_payload(&id, delta) {
                self.blobs.insert(address, blob);
            }
        }
        Ok(())
    }

    /// Serves the committed parameters from now on.
    fn publish_params_blob(&mut self) {
        let bytes = f32s_to_bytes(self.app().params());
        let (blob, address) = Blob::new(bytes);
        self.blobs.insert(address, blob);
        self.params_address = address;
    }

    pub(crate) async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        for topic in self.topics.all() {
            self.swarm
                .behaviour_mut()
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
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        loop {
            let next_timer = self.timers.values().min().copied();
            let timer = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => {
                    info!(height = self.ledger().height().0, "stopping; state is on disk");
                    return Ok(());
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event)?,
                Some(done) = self.train_rx.recv() => self.on_trained(done)?,
                _ = timer => self.fire_timers()?,
                _ = tick.tick() => {
                    self.on_tick()?;
                    if let Some(stop) = self.stop_at_height
                        && self.ledger().height().0 >= stop
                    {
                        info!(height = stop, "reached --stop-at-height");
                        return Ok(());
                    }
                }
            }
        }
    }

    // ---- consensus outputs ----

    fn carry_out(&mut self, outputs: Vec<Output>) -> anyhow::Result<()> {
        let mut queue = std::collections::VecDeque::from(outputs);
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Persist(record) => {
                    self.store.persist(&record)?;
                    if let Record::Signer(_) = record {
                        self.refresh_signer_status();
                    }
                }
                Output::Broadcast(msg) => {
                    if matches!(msg, Message::Proposal(_)) {
                        self.clock.proposal_seen.get_or_insert_with(Instant::now);
                    }
                    self.publish(&msg);
                }
                Output::ScheduleTimer(t, after) => {
                    self.timers.insert(t, Instant::now() + after);
                }
                Output::CancelTimer(t) => {
                    self.timers.remove(&t);
                }
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

    fn publish(&mut self, msg: &Message) {
        let Ok(bytes) = msg.encode() else {
            warn!(kind = msg.kind(), "message too large to send");
            return;
        };
        let topic = self.topics.for_message(msg).clone();
        self.metrics.bytes_out.inc_by(bytes.len() as u64);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            debug!(kind = msg.kind(), error = %e, "publish failed (no peers yet?)");
        }
    }

    fn on_committed(&mut self, block: Block) -> anyhow::Result<()> {
        let height = block.height.0;
        let applied = self.app_mut().on_commit(&block);
        self.metrics.commits.inc();
        self.metrics.height.set(height as i64);
        let round_time = self.last_commit.elapsed();
        self.last_commit = Instant::now();
        self.metrics.round_seconds.observe(round_time.as_secs_f64());
        // Where this height's wall time went: our own training, waiting for updates and
        // payloads (network), and proposal-to-commit (consensus).
        let (mut train, mut network, mut consensus) = (0.0, 0.0, 0.0);
        if let Some(started) = self.clock.started {
            let total = started.elapsed().as_secs_f64();
            consensus = self
                .clock
                .proposal_seen
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            train = self.clock.trained.as_secs_f64();
            network = (total - consensus - train).max(0.0);
            self.metrics.train_seconds.set(train);
            self.metrics.consensus_seconds.set(consensus);
            self.metrics.network_seconds.set(network);
        }
        self.clock = RoundClock {
            started: Some(Instant::now()),
            ..RoundClock::default()
        };
        if !applied {
            debug!(
                height,
                "committed block without its payloads here; fetching the parameters from a peer"
            );
            self.request_checkpoint_anywhere();
            return Ok(());
        }
        self.after_params_changed(height)?;
        let report = self.app().last_report();
        let (loss, acc) = report.test.unwrap_or((f32::NAN, f32::NAN));
        self.metrics.loss.set(f64::from(loss));
        self.metrics.accuracy.set(f64::from(acc));
        let credit = self.own_credit();
        self.metrics.credit.set(credit as i64);
        info!(
            height,
            updates = report.updates,
            samples = report.samples,
            train_loss = format_args!("{:.4}", report.mean_train_loss),
            test_loss = format_args!("{loss:.4}"),
            test_accuracy = format_args!("{:.2}%", acc * 100.0),
            round_ms = round_time.as_millis() as u64,
            train_ms = (train * 1e3) as u64,
            network_ms = (network * 1e3) as u64,
            consensus_ms = (consensus * 1e3) as u64,
            "committed"
        );
        Ok(())
    }

    /// After the committed parameters moved: checkpoint, serve them, train on them.
    fn after_params_changed(&mut self, height: u64) -> anyhow::Result<()> {
        self.publish_params_blob();
        let every = self.genesis.training.checkpoint_every;
        let bytes = f32s_to_bytes(self.app().params());
        self.store.put_params(height, &bytes)?;
        if height.is_multiple_of(every) {
            self.store.put_checkpoint(height, &bytes)?;
        }
        let keep_height = height;
        self.fetcher.retain(|p| match p {
            Purpose::Update(_) => true,
            Purpose::Checkpoint(h) => *h > keep_height,
        });
        self.held
            .retain(|(_, m)| message_height(m).is_some_and(|h| h > height));
        self.start_training();
        Ok(())
    }

    fn start_training(&mut self) {
        if !self.roles.train || !matches!(self.phase, Phase::Running(_)) {
            return;
        }
        let height = self.app().height() + 1;
        if self.training_for == Some(height) {
            return;
        }
        self.training_for = Some(height);
        let app = self.app();
        let (rules, plan, params) = (app.rules(), app.plan().clone(), app.params().clone());
        let run = self.genesis.run_id();
        let trainer = self.key.address();
        let tx = self.train_tx.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let result = train_locally(rules, plan, params, run, height, trainer);
            // The loop may have stopped; nothing to do then.
            let _ = tx.blocking_send(TrainDone {
                height,
                elapsed: t0.elapsed(),
                result,
            });
        });
    }

    fn on_trained(&mut self, done: TrainDone) -> anyhow::Result<()> {
        self.training_for = None;
        let update = match done.result {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "local training failed");
                return Ok(());
            }
        };
        if done.height != self.app().height() + 1 || update.base.0 != self.app().param_hash() {
            debug!(
                height = done.height,
                "training finished for a height already decided; dropped"
            );
            self.start_training();
            return Ok(());
        }
        self.clock.trained = done.elapsed;
        let bytes = f32s_to_bytes(&update.delta);
        let (blob, address) = Blob::new(bytes);
        let header = UpdateHeader {
            height: done.height,
            base_param_hash: update.base.0,
            trainer: self.key.address(),
            samples: u32::try_from(update.samples).unwrap_or(u32::MAX),
            loss_before: update.loss_before,
            loss_after: update.loss_after,
            payload_hash: address,
            payload_len: blob.bytes.len() as u32,
        };
        let signed = SignedUpdate::sign(header, &self.key, &self.genesis.run_id());
        let id = signed.id();
        let bytes = signed.encode()?;
        self.store
            .put_update(done.height, &id, &bytes, &blob.bytes)?;
        self.blobs.insert(address, blob);
        let app = self.app_mut();
        app.announce(signed);
        app.add_payload(&id, update.delta);
        self.metrics.bytes_out.inc_by(bytes.len() as u64);
        self.metrics.updates_published.inc();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topics.updates.clone(), bytes)
        {
            debug!(error = %e, "update announcement not published (no peers yet?)");
        }
        debug!(height = done.height, id = %short(&id), ms = done.elapsed.as_millis() as u64, "update announced");
        self.retry_propose()
    }

    fn retry_propose(&mut self) -> anyhow::Result<()> {
        let outputs = match &mut self.phase {
            Phase::Running(node) if node.awaiting_proposal() => node.retry_propose()?,
            _ => return Ok(()),
        };
        self.carry_out(outputs)
    }

    fn fire_timers(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<Timeout> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.timers.remove(&t);
            if let Phase::Running(node) = &mut self.phase {
                let outputs = node.on_timeout(t)?;
                self.carry_out(outputs)?;
            }
        }
        Ok(())
    }

    fn on_tick(&mut self) -> anyhow::Result<()> {
        self.metrics
            .peers
            .set(self.swarm.connected_peers().count() as i64);
        if self.last_discovery.elapsed() > Duration::from_secs(5) {
            self.last_discovery = Instant::now();
            self.discover();
        }
        match &self.phase {
            Phase::Syncing { .. } => self.sync_step()?,
            Phase::Running(_) => {
                self.retry_propose()?;
                self.release_held(false)?;
            }
        }
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

    // ---- catch-up ----

    /// One step of catching up. A node behind its peers (or without the parameters of its
    /// stored height) picks a peer's newest checkpoint as its target, fetches and verifies the
    /// blocks up to that height, fetches the checkpoint, adopts it once its hash matches the
    /// block at that height, and only then takes part. Fixing the target first is what lets a
    /// joiner finish while the chain keeps growing.
    fn sync_step(&mut self) -> anyhow::Result<()> {
        let Phase::Syncing {
            since,
            best,
            params_missing,
        } = &self.phase
        else {
            return Ok(());
        };
        let (since, best, params_missing) = (*since, *best, *params_missing);
        let ours = self.ledger().height().0;
        if let Some((h, bytes)) = self.fetched_checkpoint.take() {
            if h == ours {
                self.adopt_checkpoint(h, bytes)?;
                self.sync_target = None;
                return Ok(());
            }
            self.fetched_checkpoint = Some((h, bytes));
        }
        if best.is_none_or(|(_, h)| h <= ours) && self.sync_target.is_none() {
            let peers: Vec<PeerId> = self
                .swarm
                .connected_peers()
                .filter(|p| !self.relays.contains(p))
                .copied()
                .collect();
            for peer in peers {
                self.send_request(peer, Request::Status);
            }
        }
        if let Some((target, chosen)) = self.sync_target {
            if chosen.elapsed() > Duration::from_secs(30) {
                warn!(
                    target,
                    "catch-up target not reached in 30 s; choosing again"
                );
                self.sync_target = None;
            } else if let Some((peer, _)) = best
                && ours < target
                && self.pending_blocks.is_empty()
            {
                self.request_blocks(peer);
            }
            return Ok(());
        }
        let stale = params_missing || self.app().height() != ours;
        let far_behind = best.is_some_and(|(_, h)| h > ours + 2);
        if !stale
            && !far_behind
            && let Some((peer, h)) = best
            && h > ours
        {
            // A block or two behind with our parameters current: fetch those blocks and apply
            // them with the updates kept on disk (else fall back to a checkpoint).
            if self.pending_blocks.is_empty() {
                self.request_blocks(peer);
            }
            return Ok(());
        }
        if stale || far_behind {
            if let Some((peer, _)) = best {
                // One question at a time (answers come in milliseconds on a LAN; the 2 s
                // covers a peer that never answers).
                if self.last_checkpoint_ask.elapsed() > Duration::from_secs(2) {
                    self.last_checkpoint_ask = Instant::now();
                    self.send_request(peer, Request::Checkpoint);
                }
            } else if since.elapsed() > SYNC_GRACE && since.elapsed().as_secs() % 10 == 0 {
                info!(
                    height = ours,
                    "waiting for a peer that holds the parameters at this height"
                );
            }
            return Ok(());
        }
        let alone = self
            .swarm
            .connected_peers()
            .all(|p| self.relays.contains(p));
        if best.is_some() || (alone && since.elapsed() > SYNC_GRACE) {
            self.start_consensus()?;
        }
        Ok(())
    }

    fn start_consensus(&mut self) -> anyhow::Result<()> {
        let persisted = self.store.load()?;
        let app = self.app.take().expect("app present while syncing");
        let mut node = Node::restart(self.genesis.clone(), self.key.clone(), app, persisted)?;
        let outputs = node.start()?;
        info!(
            height = self.ledger().height().0,
            validator = self
                .genesis
                .validators
                .iter()
                .any(|(a, _)| *a == self.key.address()),
            "in sync; taking part"
        );
        self.phase = Phase::Running(Box::new(node));
        self.clock.started = Some(Instant::now());
        self.carry_out(outputs)?;
        self.start_training();
        Ok(())
    }

    /// Asks `peer` for the blocks after our head.
    fn request_blocks(&mut self, peer: PeerId) {
        let id = self.send_request(
            peer,
            Request::Blocks {
                from: self.ledger().height().0 + 1,
                max: MAX_BLOCKS_PER_RESPONSE,
            },
        );
        self.pending_blocks.insert(id, peer);
    }

    fn request_checkpoint_anywhere(&mut self) {
        // Several payload-less commits in a row (a node catching up) need one answer, not one
        // each.
        if self.last_checkpoint_ask.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_checkpoint_ask = Instant::now();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers.into_iter().take(3) {
            self.send_request(peer, Request::Checkpoint);
        }
    }

    fn on_blocks(&mut self, peer: PeerId, blocks: Vec<ByteBuf>) -> anyhow::Result<()> {
        for bytes in blocks {
            let Ok(Message::Block(block)) = Message::decode(&bytes) else {
                warn!(%peer, "peer sent something other than a block; ignoring the rest");
                return Ok(());
            };
            match &mut self.phase {
                Phase::Syncing { .. } => {
                    let beyond_target = self.sync_target.is_some_and(|(t, _)| block.height.0 > t);
                    if block.height.0 != self.ledger().height().0 + 1 || beyond_target {
                        continue;
                    }
                    if let Err(e) = self.sync_ledger.append((*block).clone()) {
                        warn!(%peer, error = %e, "peer sent a block that does not verify");
                        return Ok(());
                    }
                    self.store.persist(&Record::Block(block.clone()))?;
                    // Applied directly if its updates are here (a node just behind); a node
                    // far behind takes a checkpoint instead.
                    if self.sync_target.is_none() && self.app_mut().on_commit(&block) {
                        self.after_params_changed(block.height.0)?;
                    }
                    let h = self.ledger().height().0;
                    if h.is_multiple_of(100) {
                        info!(height = h, "catching up: blocks verified and stored");
                    }
                }
                Phase::Running(node) => {
                    let outputs = node.on_message(Message::Block(block))?;
                    self.carry_out(outputs)?;
                }
            }
        }
        Ok(())
    }

    fn on_checkpoint_offer(&mut self, peer: PeerId, height: u64, address: [u8; 32]) {
        let ours = self.ledger().height().0;
        if matches!(self.phase, Phase::Syncing { .. }) {
            if self.sync_target.is_none()
                && height >= ours
                && (height > ours || self.params_stale())
            {
                self.sync_target = Some((height, Instant::now()));
                if let Phase::Syncing { best, .. } = &mut self.phase
                    && best.is_none_or(|(_, h)| h < height)
                {
                    *best = Some((peer, height));
                }
                let sends = self
                    .fetcher
                    .want(address, Purpose::Checkpoint(height), peer);
                self.send_all(sends);
            }
        } else if height == ours && self.params_stale() {
            let sends = self
                .fetcher
                .want(address, Purpose::Checkpoint(height), peer);
            self.send_all(sends);
        } else if height > ours && self.pending_blocks.is_empty() {
            self.request_blocks(peer);
        }
    }

    fn params_stale(&self) -> bool {
        self.app().height() != self.ledger().height().0
    }

    fn on_checkpoint_blob(&mut self, height: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        if matches!(self.phase, Phase::Syncing { .. }) && height > self.ledger().height().0 {
            // Adopted once the blocks up to its height are verified (see `sync_step`).
            self.fetched_checkpoint = Some((height, bytes));
            return Ok(());
        }
        self.adopt_checkpoint(height, bytes)
    }

    /// Adopts parameters for our ledger height if they hash to what its block says.
    fn adopt_checkpoint(&mut self, height: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        let Some(params) = bytes_to_f32s(&bytes) else {
            return Ok(());
        };
        let expected = self
            .ledger()
            .blocks()
            .get((height as usize).wrapping_sub(1))
            .map(|b| b.value.proposal.result_param_hash);
        if height != self.ledger().height().0 || expected != Some(flat::param_hash(&params).0) {
            debug!(height, "checkpoint does not match our ledger; ignored");
            return Ok(());
        }
        info!(
            height,
            "parameters restored from a peer's checkpoint (hash checked against the ledger)"
        );
        self.store.put_checkpoint(height, &bytes)?;
        self.app_mut().adopt_checkpoint(height, Arc::new(params));
        if self.sync_target.is_some_and(|(t, _)| height >= t) {
            self.sync_target = None;
        }
        if let Phase::Syncing { params_missing, .. } = &mut self.phase {
            *params_missing = false;
        }
        self.after_params_changed(height)
    }

    // ---- network ----

    fn send_request(&mut self, peer: PeerId, request: Request) -> OutboundRequestId {
        let id = self
            .swarm
            .behaviour_mut()
            .fetch
            .send_request(&peer, request.clone());
        self.fetcher.sent(id, &request);
        id
    }

    fn send_all(&mut self, sends: Vec<(PeerId, Request)>) {
        for (peer, request) in sends {
            self.send_request(peer, request);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.metrics.bytes_in.inc_by(message.data.len() as u64);
                let verdict = self.on_gossip(propagation_source, message)?;
                if verdict == MessageAcceptance::Reject {
                    self.metrics.messages_rejected.inc();
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Fetch(event)) => self.on_fetch_event(event)?,
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
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
                if matches!(self.phase, Phase::Syncing { .. }) {
                    self.send_request(peer_id, Request::Status);
                }
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                self.connections.remove(&connection_id);
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

    fn on_gossip(
        &mut self,
        source: PeerId,
        message: gossipsub::Message,
    ) -> anyhow::Result<MessageAcceptance> {
        let Some(kind) = self.topics.kind(&message.topic) else {
            return Ok(MessageAcceptance::Reject);
        };
        let mut status = self
            .status
            .lock()
            .map_err(|_| anyhow::anyhow!("status lock poisoned"))?;
        let rejected = &mut status.rejected;
        match kind {
            TopicKind::Updates => {
                let Ok(update) = SignedUpdate::decode(&message.data) else {
                    rejected.malformed += 1;
                    return Ok(MessageAcceptance::Reject);
                };
                if !update.verify(&self.genesis.run_id()) {
                    rejected.bad_signature += 1;
                    return Ok(MessageAcceptance::Reject);
                }
                drop(status);
                let publisher = message.source.unwrap_or(source);
                Ok(self.on_update(update, publisher, source))
            }
            TopicKind::Consensus => {
                let msg = match Message::decode(&message.data) {
                    Ok(m) => m,
                    Err(_) => {
                        rejected.malformed += 1;
                        return Ok(MessageAcceptance::Reject);
                    }
                };
                let authentic = match &mut self.phase {
                    Phase::Running(node) => node.verify_message(&msg),
                    Phase::Syncing { .. } => msg.verify(&self.ctx),
                };
                if !authentic {
                    rejected.bad_signature += 1;
                    return Ok(MessageAcceptance::Reject);
                }
                let ours = self.ledger().height().0;
                let height = message_height(&msg).unwrap_or(ours + 1);
                drop(status);
                if height + 1 < ours && !matches!(msg, Message::Evidence(_)) {
                    // Old but authentic: not forwarded, not punished.
                    if let Ok(mut s) = self.status.lock() {
                        s.rejected.wrong_run_or_stale += 1;
                    }
                    self.feed(msg)?;
                    return Ok(MessageAcceptance::Ignore);
                }
                if height > ours + 1 && self.pending_blocks.is_empty() {
                    // Peers are ahead: catch up by blocks.
                    self.request_blocks(source);
                }
                if let Message::Proposal(p) = &msg {
                    self.clock.proposal_seen.get_or_insert_with(Instant::now);
                    if !self.payloads_ready(&p.proposal.value.proposal.updates, source)
                        && self.held.len() < MAX_HELD
                    {
                        self.held.push((Instant::now(), msg));
                        return Ok(MessageAcceptance::Accept);
                    }
                }
                self.feed(msg)?;
                Ok(MessageAcceptance::Accept)
            }
        }
    }

    fn feed(&mut self, msg: Message) -> anyhow::Result<()> {
        if let Phase::Running(node) = &mut self.phase {
            let outputs = node.on_message(msg)?;
            self.carry_out(outputs)?;
        }
        Ok(())
    }

    fn on_update(
        &mut self,
        update: SignedUpdate,
        publisher: PeerId,
        via: PeerId,
    ) -> MessageAcceptance {
        let ours = self.app().height();
        if update.header.height <= ours || update.header.height > ours + 2 {
            if let Ok(mut s) = self.status.lock() {
                s.rejected.wrong_run_or_stale += 1;
            }
            return MessageAcceptance::Ignore;
        }
        let id = update.id();
        if self.app_mut().announce(update) {
            let mut sends =
                self.fetcher
                    .want(update.header.payload_hash, Purpose::Update(id), publisher);
            if via != publisher {
                sends.extend(self.fetcher.want(
                    update.header.payload_hash,
                    Purpose::Update(id),
                    via,
                ));
            }
            self.send_all(sends);
        }
        MessageAcceptance::Accept
    }

    /// Whether every update a proposal names is here; starts fetching what is not.
    fn payloads_ready(
        &mut self,
        updates: &[tabswarm_consensus::context::IncludedUpdate],
        from: PeerId,
    ) -> bool {
        let mut ready = true;
        for u in updates {
            if self.app().has_payload(&u.id) {
                continue;
            }
            ready = false;
            match self.app().update(&u.id).copied() {
                Some(update) => {
                    let sends =
                        self.fetcher
                            .want(update.header.payload_hash, Purpose::Update(u.id), from);
                    self.send_all(sends);
                }
                None => {
                    self.send_request(from, Request::Update { id: u.id });
                }
            }
        }
        ready
    }

    /// Feeds held proposals whose payloads arrived (or that waited long enough).
    fn release_held(&mut self, payload_arrived: bool) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        for (since, msg) in held {
            let ready = match &msg {
                Message::Proposal(p) => p
                    .proposal
                    .value
                    .proposal
                    .updates
                    .iter()
                    .all(|u| self.app().has_payload(&u.id)),
                _ => true,
            };
            if ready || since.elapsed() > PAYLOAD_WAIT {
                self.feed(msg)?;
            } else {
                self.held.push((since, msg));
            }
        }
        if payload_arrived {
            self.retry_propose()?;
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
                } => {
                    self.answer(request, channel);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.on_response(peer, request_id, response)?;
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                self.pending_blocks.remove(&request_id);
                let sends = self.fetcher.on_failure(request_id);
                self.send_all(sends);
            }
            _ => {}
        }
        Ok(())
    }

    fn answer(&mut self, request: Request, channel: ResponseChannel<Response>) {
        let response = match request {
            Request::Manifest { address } => {
                self.blobs.get(&address).map_or(Response::NotFound, |b| {
                    Response::Manifest(b.manifest.clone())
                })
            }
            Request::Chunk { address, index } => self
                .blobs
                .get(&address)
                .and_then(|b| {
                    b.manifest
                        .range(index as usize)
                        .ok()
                        .map(|r| Response::Chunk(ByteBuf::from(b.bytes[r].to_vec())))
                })
                .unwrap_or(Response::NotFound),
            Request::Blocks { from, max } => {
                // A peer chooses `from` and `max`: clamp both, and stop well inside the
                // codec's 10 MiB response limit however large the blocks are.
                let count = u64::from(max.clamp(1, MAX_BLOCKS_PER_RESPONSE));
                let to = from.max(1).saturating_add(count - 1);
                match self.store.blocks(from.max(1), to) {
                    Ok(blocks) => {
                        let mut total = 0;
                        Response::Blocks(
                            blocks
                                .into_iter()
                                .filter_map(|b| Message::Block(Box::new(b)).encode().ok())
                                .take_while(|bytes| {
                                    total += bytes.len();
                                    total <= MAX_BLOCKS_RESPONSE_BYTES
                                })
                                .map(ByteBuf::from)
                                .collect(),
                        )
                    }
                    Err(_) => Response::NotFound,
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
        };
        if let Response::Chunk(b) = &response {
            self.metrics.bytes_out.inc_by(b.len() as u64);
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .fetch
            .send_response(channel, response);
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    ) -> anyhow::Result<()> {
        self.handle_response(peer, id, response)?;
        // Catching up is a chain of questions and answers: take the next step at once rather
        // than at the next tick, so a joiner outruns a fast-moving chain.
        self.sync_step()
    }

    fn handle_response(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    ) -> anyhow::Result<()> {
        match response {
            Response::Manifest(m) => {
                let sends = self.fetcher.on_manifest(id, m);
                self.send_all(sends);
            }
            Response::Chunk(bytes) => {
                self.metrics.bytes_in.inc_by(bytes.len() as u64);
                let (sends, done) = self.fetcher.on_chunk(id, &bytes);
                self.send_all(sends);
                if let Some(done) = done {
                    self.blobs.insert(done.address, done.blob.clone());
                    match done.purpose {
                        Purpose::Update(uid) => {
                            if let Some(delta) = bytes_to_f32s(&done.blob.bytes)
                                && let Some(update) = self.app().update(&uid).copied()
                                && self.app_mut().add_payload(&uid, delta)
                            {
                                self.store.put_update(
                                    update.header.height,
                                    &uid,
                                    &update.encode()?,
                                    &done.blob.bytes,
                                )?;
                            }
                            self.release_held(true)?;
                        }
                        Purpose::Checkpoint(h) => {
                            self.on_checkpoint_blob(h, done.blob.bytes.clone())?
                        }
                    }
                }
            }
            Response::Blocks(blocks) => {
                self.pending_blocks.remove(&id);
                self.on_blocks(peer, blocks)?;
            }
            Response::Checkpoint { height, address } => {
                self.last_checkpoint_ask = Instant::now() - Duration::from_secs(60);
                self.on_checkpoint_offer(peer, height, address)
            }
            Response::Update(bytes) => {
                if let Ok(update) = SignedUpdate::decode(&bytes)
                    && update.verify(&self.genesis.run_id())
                {
                    self.on_update(update, peer, peer);
                }
            }
            Response::Status { height } => {
                if let Phase::Syncing { best, .. } = &mut self.phase
                    && best.is_none_or(|(_, h)| h < height)
                {
                    *best = Some((peer, height));
                }
            }
            Response::NotFound => {
                self.pending_blocks.remove(&id);
                if self.fetcher.owns(&id) {
                    let sends = self.fetcher.on_failure(id);
                    self.send_all(sends);
                }
            }
        }
        Ok(())
    }

    // ---- status ----

    /// Included updates the ledger credits to this node.
    fn own_credit(&self) -> u64 {
        self.ledger()
            .credits()
            .get(&self.key.address().0)
            .copied()
            .unwrap_or(0)
    }

    fn refresh_signer_status(&mut self) {
        let signer = match &self.phase {
            Phase::Running(node) => node.signer_state().clone(),
            Phase::Syncing { .. } => return,
        };
        if let (Ok(mut s), Some((h, r, step))) = (self.status.lock(), signer.last) {
            s.signer.height = h.0;
            s.signer.round = r.as_i64();
            s.signer.step = format!("{step:?}");
        }
    }

    fn refresh_status(&mut self) {
        let peers = self.swarm.connected_peers().count();
        let listen: Vec<String> = self
            .swarm
            .listeners()
            .map(|a| tabswarm_net::with_peer(a.clone(), *self.swarm.local_peer_id()).to_string())
            .collect();
        let (round, node_stats) = match &self.phase {
            Phase::Running(node) => (node.round().as_i64(), Some(node.stats().clone())),
            Phase::Syncing { .. } => (-1, None),
        };
        self.metrics.round.set(round);
        let app = self.app();
        let report = app.last_report();
        let app_stats = app.stats();
        let param_hash = hex(&app.param_hash());
        let credit = self.own_credit();
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
        let gossip = &self.swarm.behaviour().gossipsub;
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
        s.height = self.ledger().height().0;
        s.round = round;
        s.head_hash = hex(&self.ledger().tip_hash());
        s.param_hash = param_hash;
        s.peers = peers;
        s.test_loss = report.test.map(|t| t.0);
        s.test_accuracy = report.test.map(|t| t.1);
        s.last_round_updates = report.updates;
        s.last_round_samples = report.samples;
        s.credit = credit;
        s.listen = listen;
        s.syncing = matches!(self.phase, Phase::Syncing { .. });
        s.bytes_received = self.metrics.bytes_in.get();
        s.bytes_sent = self.metrics.bytes_out.get();
        s.rejected.proposals_refused = app_stats.proposals_refused;
        s.rejected.updates_refused = app_stats.updates_refused;
        if let Some(st) = node_stats {
            s.rejected.consensus_bad_signatures = st.bad_signatures;
            s.rejected.consensus_stale = st.stale;
            s.signer.refused_to_sign = st.refused_to_sign;
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

/// The height a consensus message is about.
fn message_height(msg: &Message) -> Option<u64> {
    Some(match msg {
        Message::Vote(v) => v.vote.height.0,
        Message::Proposal(p) => p.proposal.height.0,
        Message::Polka(c) => c.height.0,
        Message::RoundCert(c) => c.height.0,
        Message::Block(b) => b.height.0,
        Message::Evidence(e) => e.height().0,
        _ => return None,
    })
}
