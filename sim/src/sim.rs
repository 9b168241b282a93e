//! The event loop: a priority queue of deliveries, timers and faults on a virtual clock.

mod light;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use malachitebft_core_types::{NilOrVal, Timeout, VoteType};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tabswarm_consensus::context::{TabswarmContext, ValueId};
use tabswarm_consensus::genesis::Genesis;
use tabswarm_consensus::identity::{Address, Keypair, VerifyCache};
use tabswarm_consensus::node::{Node, NodeError, Output, Persisted, Record, Stats};
use tabswarm_consensus::testkit::{HonestApp, genesis, key};
use tabswarm_consensus::wire::Message;

use crate::byzantine::{self, Behaviour};
use crate::config::Config;
pub use light::LightReport;
use light::{Light, LightMsg};

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A node returned an error.
    #[error("node {0}: {1}")]
    Node(usize, NodeError),
    /// A record a node asked to persist did not survive encoding to bytes and back.
    #[error("node {0}: persisting a record: {1}")]
    Store(usize, String),
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Hash over every processed event: equal seeds give equal hashes.
    pub trace_hash: [u8; 32],
    /// Virtual time reached, ms.
    pub now_ms: u64,
    /// Committed height of each validator.
    pub heights: Vec<u64>,
    /// Lowest committed height among honest validators that are up.
    pub min_honest_height: u64,
    /// Heights at which two validators committed different blocks (must be 0).
    pub agreement_violations: u64,
    /// Conflicting votes signed by honest validators, restarts included (must be 0).
    pub honest_double_signs: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages sent (before loss and partitions), and their bytes.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Refusal counters summed over honest validators.
    pub honest_stats: Stats,
    /// Validators with no stake left in validator 0's ledger (slashed).
    pub slashed: Vec<usize>,
    /// First commit time of each height (virtual ms).
    pub commit_times: Vec<u64>,
    /// Crashes that hit between a persisted signer record and the vote leaving.
    pub torn_crashes: u64,
    /// ed25519 verifications performed (each distinct key, message and signature once).
    pub signature_checks: u64,
    /// Verifications answered by the shared cache instead (see [`VerifyCache`]).
    pub signature_cache_hits: u64,
    /// Consensus bytes (sent + received) of each validator.
    pub consensus_bytes: Vec<u64>,
    /// The light layer's measurements, if light peers ran.
    pub light: Option<LightReport>,
}

enum Event {
    Deliver {
        to: usize,
        bytes: std::rc::Rc<Vec<u8>>,
    },
    Timer {
        node: usize,
        timeout: Timeout,
        epoch: u64,
        generation: u64,
    },
    Wake {
        node: usize,
        epoch: u64,
    },
    Crash(usize, bool),
    Restart(usize),
    Light {
        to: u32,
        from: u32,
        msg: std::rc::Rc<LightMsg>,
        size: u32,
    },
}

struct Slot {
    key: Keypair,
    node: Option<Node<HonestApp>>,
    store: Persisted,
    epoch: u64,
    timers: HashMap<Timeout, u64>,
    generation: u64,
    history: Vec<Message>,
    torn_pending: bool,
}

/// A running simulation.
pub struct Sim {
    config: Config,
    genesis: Genesis,
    ctx: TabswarmContext,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    slots: Vec<Slot>,
    links: Vec<Vec<u64>>,
    trace: Sha256,
    decided: BTreeMap<u64, [u8; 32]>,
    commit_times: Vec<u64>,
    agreement_violations: u64,
    own_votes: BTreeMap<(usize, u64, i64, bool), NilOrVal<ValueId>>,
    honest_double_signs: u64,
    delivered: u64,
    sent: u64,
    sent_bytes: u64,
    torn_crashes: u64,
    /// Shared by all simulated nodes; installed only while the sim runs their code.
    verify_cache: VerifyCache,
    consensus_bytes: Vec<u64>,
    light: Option<Box<Light>>,
}

/// Results kept per cache generation: a few heights of 100 validators' votes plus the
/// announcements of 10,000 light peers.
const VERIFY_CACHE_CAPACITY: usize = 1 << 16;

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now_ms", &self.now)
            .field("validators", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Builds and starts every validator.
    pub fn new(config: Config) -> Result<Self, SimError> {
        let genesis = genesis(&config.stakes);
        let ctx = TabswarmContext::new(genesis.run_id());
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n = config.stakes.len();
        let links = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| config.latency_ms + roll(&mut rng, config.link_spread_ms + 1))
                    .collect()
            })
            .collect();
        let slots = (0..n)
            .map(|i| Slot {
                key: key(i as u32),
                node: None,
                store: Persisted::default(),
                epoch: 0,
                timers: HashMap::new(),
                generation: 0,
                history: Vec::new(),
                torn_pending: false,
            })
            .collect();
        let mut sim = Self {
            config,
            genesis,
            ctx,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            slots,
            links,
            trace: Sha256::new(),
            decided: BTreeMap::new(),
            commit_times: Vec::new(),
            agreement_violations: 0,
            own_votes: BTreeMap::new(),
            honest_double_signs: 0,
            delivered: 0,
            sent: 0,
            sent_bytes: 0,
            torn_crashes: 0,
            verify_cache: VerifyCache::new(VERIFY_CACHE_CAPACITY),
            consensus_bytes: vec![0; n],
            light: None,
        };
        if let Some(cfg) = sim.config.light.clone() {
            sim.light = Some(Box::new(Light::new(cfg, &sim.genesis, n, sim.config.seed)));
            sim.flush_light();
        }
        for c in sim.config.crashes.clone() {
            sim.push(c.at_ms, Event::Crash(c.node, c.torn));
            if let Some(r) = c.restart_ms {
                sim.push(r.max(c.at_ms + 1), Event::Restart(c.node));
            }
        }
        sim.with_cache(|sim| (0..n).try_for_each(|i| sim.boot(i)))?;
        Ok(sim)
    }

    fn app(&self, i: usize) -> HonestApp {
        HonestApp {
            updates_per_round: self.config.updates_per_round,
            propose_invalid: self.config.behaviour(i) == Behaviour::InvalidProposals,
        }
    }

    fn boot(&mut self, i: usize) -> Result<(), SimError> {
        let slot = &self.slots[i];
        let node = Node::restart(
            self.genesis.clone(),
            slot.key.clone(),
            self.app(i),
            slot.store.clone(),
        )
        .map_err(|e| SimError::Node(i, e))?;
        self.slots[i].node = Some(node);
        if let Some(l) = self.light.as_mut() {
            l.set_validator_up(i, true);
        }
        let out = self.slots[i]
            .node
            .as_mut()
            .map(|n| n.start())
            .transpose()
            .map_err(|e| SimError::Node(i, e))?
            .unwrap_or_default();
        self.apply(i, out)
    }

    fn push(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn honest(&self, i: usize) -> bool {
        self.config.behaviour(i) == Behaviour::Honest
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.config.partitions.iter().any(|p| {
            self.now >= p.from_ms
                && self.now < p.until_ms
                && !p.groups.iter().any(|g| g.contains(&a) && g.contains(&b))
        })
    }

    /// Schedules what the light layer sent.
    fn flush_light(&mut self) {
        let out = self
            .light
            .as_mut()
            .map(|l| std::mem::take(&mut l.out))
            .unwrap_or_default();
        for (at, e) in out {
            self.push(at, e);
        }
    }

    fn crash(&mut self, i: usize) {
        if let Some(l) = self.light.as_mut() {
            l.set_validator_up(i, false);
        }
        let slot = &mut self.slots[i];
        slot.node = None;
        slot.epoch += 1;
        slot.timers.clear();
        slot.torn_pending = false;
    }

    fn apply(&mut self, i: usize, outputs: Vec<Output>) -> Result<(), SimError> {
        for o in outputs {
            if self.slots[i].node.is_none() {
                // Crashed part-way through this batch: the rest never happened.
                return Ok(());
            }
            match o {
                Output::Persist(r) => {
                    // Through bytes, as a host writing to disk would: what a restarted node
                    // gets back is what `Record::decode` reads, not the in-memory value.
                    let bytes = r.encode().map_err(|e| SimError::Store(i, e.to_string()))?;
                    let r =
                        Record::decode(&bytes).map_err(|e| SimError::Store(i, e.to_string()))?;
                    self.slots[i].store.apply(&r);
                    if self.slots[i].torn_pending && matches!(r, Record::Signer(_)) {
                        self.trace.update([4, i as u8]);
                        self.torn_crashes += 1;
                        self.crash(i);
                    }
                }
                Output::Broadcast(m) => self.broadcast(i, m),
                Output::ScheduleTimer(t, after) => {
                    let slot = &mut self.slots[i];
                    slot.generation += 1;
                    slot.timers.insert(t, slot.generation);
                    let (epoch, generation) = (slot.epoch, slot.generation);
                    let at = self.now + after.as_millis() as u64;
                    self.push(
                        at,
                        Event::Timer {
                            node: i,
                            timeout: t,
                            epoch,
                            generation,
                        },
                    );
                }
                Output::CancelTimer(t) => {
                    self.slots[i].timers.remove(&t);
                }
                Output::CancelAllTimers => self.slots[i].timers.clear(),
                Output::Committed(b) => {
                    let h = b.height.0;
                    let hash = b.hash();
                    self.trace.update(h.to_le_bytes());
                    self.trace.update(hash);
                    match self.decided.get(&h) {
                        Some(x) if *x != hash => self.agreement_violations += 1,
                        Some(_) => {}
                        None => {
                            self.decided.insert(h, hash);
                            self.commit_times.push(self.now);
                            if let Some(l) = self.light.as_mut() {
                                l.on_new_height(self.now, h);
                            }
                        }
                    }
                    if let Some(l) = self.light.as_mut() {
                        l.publish(self.now, i, &b);
                        self.flush_light();
                    }
                }
                Output::CallAgain => {
                    let epoch = self.slots[i].epoch;
                    self.push(self.now, Event::Wake { node: i, epoch });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn broadcast(&mut self, i: usize, m: Message) {
        if self.honest(i)
            && let Message::Vote(v) = &m
            && v.vote.validator == self.slots[i].key.address()
        {
            let k = (
                i,
                v.vote.height.0,
                v.vote.round.as_i64(),
                v.vote.vote_type == VoteType::Prevote,
            );
            match self.own_votes.get(&k) {
                Some(old) if *old != v.vote.value => self.honest_double_signs += 1,
                Some(_) => {}
                None => {
                    self.own_votes.insert(k, v.vote.value);
                }
            }
        }
        let n = self.slots.len();
        let coin = self.rng.next_u64();
        let victim = self.slots[(i + 1) % n].key.address();
        let sender = byzantine::Sender {
            ctx: &self.ctx,
            key: &self.slots[i].key,
            me: i,
            n,
            history: &self.slots[i].history,
            victim,
            coin,
        };
        let msgs = byzantine::rewrite(self.config.behaviour(i), m, &sender);
        for (targets, msg) in msgs {
            let Ok(bytes) = msg.encode() else { continue };
            let bytes = std::rc::Rc::new(bytes);
            let to: Vec<usize> = targets.unwrap_or_else(|| (0..n).collect());
            for j in to.into_iter().filter(|&j| j != i) {
                self.sent += 1;
                self.sent_bytes += bytes.len() as u64;
                self.consensus_bytes[i] += bytes.len() as u64;
                let lossy = self.config.loss_until_ms.is_none_or(|t| self.now < t);
                let lost = roll(&mut self.rng, 1000) < u64::from(self.config.loss_per_mille);
                if self.partitioned(i, j) || (lossy && lost) {
                    continue;
                }
                let delay = self.links[i][j] + roll(&mut self.rng, self.config.jitter_ms + 1);
                self.push(
                    self.now + delay,
                    Event::Deliver {
                        to: j,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    /// Runs `f` with the shared verification cache serving every node's signature checks.
    fn with_cache<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut cache = std::mem::take(&mut self.verify_cache);
        let r = cache.scope(|| f(self));
        self.verify_cache = cache;
        r
    }

    /// Runs every event up to `until_ms` of virtual time.
    pub fn run_until(&mut self, until_ms: u64) -> Result<Report, SimError> {
        self.with_cache(|sim| sim.run_events(until_ms))?;
        Ok(self.report())
    }

    fn run_events(&mut self, until_ms: u64) -> Result<(), SimError> {
        while let Some(entry) = self.queue.first_entry() {
            let (at, _) = *entry.key();
            if at > until_ms {
                break;
            }
            let event = entry.remove();
            self.now = at;
            self.trace.update(at.to_le_bytes());
            self.step(event)?;
        }
        self.now = self.now.max(until_ms);
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), SimError> {
        match event {
            Event::Deliver { to, bytes } => {
                let Some(node) = self.slots[to].node.as_mut() else {
                    return Ok(());
                };
                self.delivered += 1;
                self.consensus_bytes[to] += bytes.len() as u64;
                self.trace.update([0, to as u8]);
                self.trace.update(Sha256::digest(bytes.as_slice()));
                let out = node.on_bytes(&bytes).map_err(|e| SimError::Node(to, e))?;
                if self.config.behaviour(to) == Behaviour::Replay
                    && let Ok(m) = Message::decode(&bytes)
                {
                    let h = &mut self.slots[to].history;
                    if h.len() >= 64 {
                        h.remove(0);
                    }
                    h.push(m);
                }
                self.apply(to, out)?;
            }
            Event::Timer {
                node,
                timeout,
                epoch,
                generation,
            } => {
                let slot = &mut self.slots[node];
                if slot.epoch != epoch || slot.timers.get(&timeout) != Some(&generation) {
                    return Ok(());
                }
                slot.timers.remove(&timeout);
                let Some(n) = slot.node.as_mut() else {
                    return Ok(());
                };
                self.trace.update([1, node as u8]);
                let out = n.on_timeout(timeout).map_err(|e| SimError::Node(node, e))?;
                self.apply(node, out)?;
            }
            Event::Wake { node, epoch } => {
                let slot = &mut self.slots[node];
                if slot.epoch != epoch {
                    return Ok(());
                }
                let Some(n) = slot.node.as_mut() else {
                    return Ok(());
                };
                let out = n.resume().map_err(|e| SimError::Node(node, e))?;
                self.apply(node, out)?;
            }
            Event::Light {
                to,
                from,
                msg,
                size,
            } => {
                if let Some(l) = self.light.as_mut() {
                    l.deliver(self.now, to, from, &msg, size);
                    self.flush_light();
                }
            }
            Event::Crash(i, torn) => {
                self.trace.update([2, i as u8]);
                if torn {
                    self.slots[i].torn_pending = true;
                } else {
                    self.crash(i);
                }
            }
            Event::Restart(i) => {
                self.trace.update([3, i as u8]);
                // A torn crash that never found its moment becomes a plain crash first.
                if self.slots[i].torn_pending {
                    self.crash(i);
                }
                if self.slots[i].node.is_none() {
                    self.boot(i)?;
                }
            }
        }
        Ok(())
    }

    /// Summary of the run so far.
    pub fn report(&self) -> Report {
        let heights: Vec<u64> = self
            .slots
            .iter()
            .map(|s| s.store.blocks.len() as u64)
            .collect();
        let min_honest_height = (0..self.slots.len())
            .filter(|&i| self.honest(i) && self.slots[i].node.is_some())
            .map(|i| heights[i])
            .min()
            .unwrap_or(0);
        let mut honest_stats = Stats::default();
        for (i, s) in self.slots.iter().enumerate() {
            if let (true, Some(n)) = (self.honest(i), s.node.as_ref()) {
                let st = n.stats();
                honest_stats.received += st.received;
                honest_stats.bad_signatures += st.bad_signatures;
                honest_stats.stale += st.stale;
                honest_stats.bad_evidence += st.bad_evidence;
                honest_stats.invalid_proposals += st.invalid_proposals;
                honest_stats.refused_to_sign += st.refused_to_sign;
            }
        }
        let slashed = self
            .slots
            .iter()
            .find_map(|s| s.node.as_ref())
            .map(|n| {
                let stakes = n.ledger().stakes();
                let gone: BTreeSet<Address> = self
                    .slots
                    .iter()
                    .map(|s| s.key.address())
                    .filter(|a| !stakes.contains_key(a))
                    .collect();
                (0..self.slots.len())
                    .filter(|&i| gone.contains(&self.slots[i].key.address()))
                    .collect()
            })
            .unwrap_or_default();
        Report {
            trace_hash: self.trace.clone().finalize().into(),
            now_ms: self.now,
            heights,
            min_honest_height,
            agreement_violations: self.agreement_violations,
            honest_double_signs: self.honest_double_signs,
            delivered: self.delivered,
            sent: self.sent,
            sent_bytes: self.sent_bytes,
            honest_stats,
            slashed,
            commit_times: self.commit_times.clone(),
            torn_crashes: self.torn_crashes,
            signature_checks: self.verify_cache.checks(),
            signature_cache_hits: self.verify_cache.hits(),
            consensus_bytes: self.consensus_bytes.clone(),
            light: self.light.as_ref().map(|l| l.report(&self.consensus_bytes)),
        }
    }

    /// The persisted chain of validator `i`.
    pub fn chain(&self, i: usize) -> &[tabswarm_consensus::ledger::Block] {
        &self.slots[i].store.blocks
    }

    /// The genesis used.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
}

pub(crate) fn roll(rng: &mut ChaCha8Rng, below: u64) -> u64 {
    if below <= 1 {
        0
    } else {
        rng.next_u64() % below
    }
}
