//! Real peers on the virtual network: every member runs the [`tabswarm_peer::Peer`] that
//! `tabswarm-node` and the browser tab run, so the fault schedules here exercise the code
//! that ships.
//!
//! The network is a priority queue of deliveries on a virtual clock, like [`crate::Sim`]'s:
//! per-link latency and jitter, gossip loss, partitions (connections drop at the cut and come
//! back when it heals), crashes with restart from what the peer persisted (through bytes),
//! and Byzantine validators whose outgoing consensus messages are rewritten by
//! [`Behaviour`]. Gossip is forwarded as gossipsub does: a member that accepts a message
//! passes it on to a few neighbours (at most [`PeerConfig::mesh_degree`]), one that rejects it
//! does not, and copies seen before are dropped by message id. Requests travel over reliable
//! links: a request to a member that is down or cut off fails, one to a silent member times
//! out in the peer itself.
//!
//! Jobs run through a [`JobModel`] (the shipped burn jobs on a small synthetic image set, or
//! a quadratic cost model for large networks) and take the virtual time [`Cost`] says, on
//! [`PeerConfig::workers`] workers per member.
//!
//! Adversaries that are not peers at all are [`Fake`]s: functions answering requests (a peer
//! lying about its height, a server of bad chunks); raw gossip goes in with
//! [`PeerSim::inject`].

mod attack;
mod disk;
mod model;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use malachitebft_core_types::{NilOrVal, VoteType};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tabswarm_consensus::context::{TabswarmContext, ValueId};
use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::{
    AggregationRule, Compression, Genesis, GenesisFile, TrainingRules, ValidatorEntry, hex,
};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::node::Record;
use tabswarm_consensus::testkit::{fast_timeouts, key};
use tabswarm_consensus::wire::Message;
use tabswarm_core::flat;
use tabswarm_peer::jobs::{self, Job, Output};
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{Effect, Event as PeerEvent, Input, Peer, Persist, RequestId, Roles, TICK_MS};

use crate::byzantine::{self, Behaviour};
use crate::config::{Crash, Partition};
use crate::sim::roll;
pub use attack::Attack;
pub use disk::Disk;
pub use model::{Cost, JobModel, Quadratic, synthetic_dataset};

/// A participant that is not an honest peer: answers requests by a rule (`None`: silence).
pub type Fake = Box<dyn FnMut(&Request) -> Option<Response>>;

/// Every member acts as trainer and validator (a staked key votes).
pub const ALL: Roles = Roles {
    train: true,
    validate: true,
    store: false,
    max_train_shards: 0,
};

/// A trainer only.
pub const TRAINER: Roles = Roles {
    train: true,
    validate: false,
    store: false,
    max_train_shards: 0,
};

/// A run's rules for simulation: a small MLP run that commits in a few virtual seconds.
pub fn small_rules() -> TrainingRules {
    TrainingRules {
        local_steps: 4,
        batch_size: 16,
        shards: 4,
        min_updates: 1,
        round_deadline_ms: 400,
        checkpoint_every: 2,
        learning_rate: 0.1,
        ..TrainingRules::default()
    }
}

/// A genesis staking keys `0..stakes.len()` (see [`key`]) with `rules` and `rule`, fast
/// timeouts.
pub fn genesis(
    stakes: &[u64],
    rules: TrainingRules,
    rule: AggregationRule,
) -> Result<Genesis, String> {
    let params = jobs::initial_params(&rules).map_err(|e| e.to_string())?;
    Genesis::from_file(GenesisFile {
        data: None,
        compression: Default::default(),
        version: 1,
        name: "tabswarm-sim".into(),
        initial_param_hash: hex(&flat::param_hash(&params).0),
        aggregation_rule: rule,
        timeouts_ms: fast_timeouts(),
        training: rules,
        validators: stakes
            .iter()
            .enumerate()
            .map(|(i, s)| ValidatorEntry {
                public_key: hex(&key(i as u32).address().0),
                stake: *s,
            })
            .collect(),
    })
    .map_err(|e| e.to_string())
}

/// A simulation of real peers; with the seed, it fixes the whole trace.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Slots (members); keys `0..members` (see [`key`]).
    pub members: usize,
    /// Stakes of keys `0..stakes.len()` in the genesis.
    pub stakes: Vec<u64>,
    /// The run's rules.
    pub rules: TrainingRules,
    /// Base one-way latency, ms.
    pub latency_ms: u64,
    /// Extra per-link latency drawn once per link in `0..=link_spread_ms`.
    pub link_spread_ms: u64,
    /// Per-message jitter in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability of losing a gossip message on a link, in thousandths.
    pub loss_per_mille: u32,
    /// When loss stops (`None`: never).
    pub loss_until_ms: Option<u64>,
    /// Partitions (member indices).
    pub partitions: Vec<Partition>,
    /// Crashes; a restart brings the member back with the roles it had.
    pub crashes: Vec<Crash>,
    /// Behaviour of each member's consensus messages (missing entries are honest).
    pub behaviours: Vec<Behaviour>,
    /// Neighbours a member forwards an accepted gossip message to.
    pub mesh_degree: usize,
    /// Jobs a member runs at once.
    pub workers: usize,
    /// Virtual time of jobs.
    pub cost: Cost,
    /// Members whose jobs take this many times [`PeerConfig::cost`] (slow machines).
    pub slowdown: BTreeMap<usize, u64>,
    /// How the run combines updates (genesis).
    pub aggregation_rule: AggregationRule,
    /// How updates travel (genesis).
    pub compression: Compression,
    /// Hostile trainers: members whose updates are rewritten after honest training.
    pub attacks: BTreeMap<usize, Attack>,
}

impl PeerConfig {
    /// `members` slots, the first `stakes.len()` staked, [`small_rules`], a 20 ms (+0..10 per
    /// link, +0..5 jitter) lossless network, two workers per member.
    pub fn new(seed: u64, members: usize, stakes: &[u64]) -> Self {
        Self {
            seed,
            members,
            stakes: stakes.to_vec(),
            rules: small_rules(),
            latency_ms: 20,
            link_spread_ms: 10,
            jitter_ms: 5,
            loss_per_mille: 0,
            loss_until_ms: None,
            partitions: Vec::new(),
            crashes: Vec::new(),
            behaviours: Vec::new(),
            mesh_degree: 6,
            workers: 2,
            cost: Cost::default(),
            slowdown: BTreeMap::new(),
            aggregation_rule: AggregationRule::Mean,
            compression: Compression::None,
            attacks: BTreeMap::new(),
        }
    }

    fn behaviour(&self, i: usize) -> Behaviour {
        self.behaviours.get(i).copied().unwrap_or(Behaviour::Honest)
    }
}

/// One slot of the network.
pub enum Member {
    /// A real peer.
    Honest(Box<Peer<u32>>),
    /// An adversary answering requests by a rule.
    Fake(Fake),
    /// Not running.
    Down,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Member::Honest(_) => "Honest",
            Member::Fake(_) => "Fake",
            Member::Down => "Down",
        })
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerReport {
    /// Hash over every processed event: equal configs give equal hashes.
    pub trace_hash: [u8; 32],
    /// Virtual time reached, ms.
    pub now_ms: u64,
    /// Committed height of each member (on its disk).
    pub heights: Vec<u64>,
    /// Lowest committed height among honest members that are up.
    pub min_honest_height: u64,
    /// Heights at which two members committed different blocks (must be 0).
    pub agreement_violations: u64,
    /// Heights at which two members' applied parameters differ (must be 0).
    pub param_divergences: u64,
    /// Conflicting votes signed by honest validators, restarts included (must be 0).
    pub honest_double_signs: u64,
    /// First commit time of each height (virtual ms).
    pub commit_times: Vec<u64>,
    /// Gossip messages and requests delivered.
    pub delivered: u64,
    /// Bytes of gossip sent (forwarding included).
    pub gossip_bytes: u64,
    /// Jobs run.
    pub jobs: u64,
}

struct Slot {
    member: Member,
    disk: Disk,
    key: Keypair,
    roles: Option<Roles>,
    /// Bumped at every crash: events for an older epoch are dropped.
    epoch: u64,
    tick_at: Option<u64>,
    last_tick: u64,
    queued: VecDeque<Job>,
    busy: usize,
    /// Most jobs asked for and not yet finished at once (queued or running).
    peak_jobs: usize,
    /// Gossip ids seen, with when (pruned), for duplicate suppression.
    seen: BTreeMap<[u8; 32], u64>,
    /// Consensus messages received lately (what a replaying validator re-sends).
    history: Vec<Message>,
    events: Vec<PeerEvent>,
    published: BTreeMap<Topic, u64>,
    verdicts: Vec<Verdict>,
}

struct Gossip {
    topic: Topic,
    data: Rc<Vec<u8>>,
    id: [u8; 32],
    publisher: usize,
}

enum Event {
    Gossip {
        to: usize,
        epoch: u64,
        source: usize,
        gossip: Rc<Gossip>,
    },
    Request {
        to: usize,
        from: usize,
        from_epoch: u64,
        id: RequestId,
        request: Request,
    },
    Notice {
        to: usize,
        epoch: u64,
        input: Input<u32>,
    },
    JobDone {
        to: usize,
        epoch: u64,
        output: Output,
        elapsed_ms: u64,
    },
    Tick {
        to: usize,
        epoch: u64,
    },
    Crash(usize),
    Restart(usize),
    /// A partition began or ended.
    Cut,
}

/// Why a simulation stopped.
pub type PeerSimError = String;

/// A running simulation of real peers.
pub struct PeerSim {
    config: PeerConfig,
    genesis: Genesis,
    ctx: TabswarmContext,
    model: JobModel,
    slots: Vec<Slot>,
    latency: Vec<Vec<u64>>,
    /// Connected pairs (a < b), whether or not a partition cuts them now.
    links: BTreeSet<(usize, usize)>,
    /// Linked pairs a partition cuts now (their peers were told the connection dropped).
    severed: BTreeSet<(usize, usize)>,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    trace: Sha256,
    decided: BTreeMap<u64, [u8; 32]>,
    params_at: BTreeMap<u64, [u8; 32]>,
    own_votes: BTreeMap<(usize, u64, i64, bool), NilOrVal<ValueId>>,
    commit_times: Vec<u64>,
    agreement_violations: u64,
    param_divergences: u64,
    honest_double_signs: u64,
    delivered: u64,
    gossip_bytes: u64,
    jobs: u64,
}

impl std::fmt::Debug for PeerSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSim")
            .field("now_ms", &self.now)
            .field("members", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// How long a member remembers a gossip id.
const SEEN_MS: u64 = 120_000;

impl PeerSim {
    /// A network of `config.members` empty slots (start members with [`PeerSim::start`] or
    /// [`PeerSim::start_all`]), computing jobs with `model`.
    pub fn new(config: PeerConfig, model: JobModel) -> Result<Self, PeerSimError> {
        let mut genesis = genesis(&config.stakes, config.rules, config.aggregation_rule)?;
        genesis.compression = config.compression;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n = config.members;
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| config.latency_ms + roll(&mut rng, config.link_spread_ms + 1))
                    .collect()
            })
            .collect();
        let slots = (0..n)
            .map(|i| Slot {
                member: Member::Down,
                disk: Disk::default(),
                key: key(i as u32),
                roles: None,
                epoch: 0,
                tick_at: None,
                last_tick: 0,
                queued: VecDeque::new(),
                busy: 0,
                peak_jobs: 0,
                seen: BTreeMap::new(),
                history: Vec::new(),
                events: Vec::new(),
                published: BTreeMap::new(),
                verdicts: Vec::new(),
            })
            .collect();
        let mut sim = Self {
            ctx: TabswarmContext::new(genesis.run_id()),
            genesis,
            model,
            slots,
            latency,
            links: BTreeSet::new(),
            severed: BTreeSet::new(),
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: Sha256::new(),
            decided: BTreeMap::new(),
            params_at: BTreeMap::new(),
            own_votes: BTreeMap::new(),
            commit_times: Vec::new(),
            agreement_violations: 0,
            param_divergences: 0,
            honest_double_signs: 0,
            delivered: 0,
            gossip_bytes: 0,
            jobs: 0,
            config,
        };
        for c in sim.config.crashes.clone() {
            sim.push(c.at_ms, Event::Crash(c.node));
            if let Some(r) = c.restart_ms {
                sim.push(r.max(c.at_ms + 1), Event::Restart(c.node));
            }
        }
        for p in sim.config.partitions.clone() {
            sim.push(p.from_ms, Event::Cut);
            sim.push(p.until_ms, Event::Cut);
        }
        Ok(sim)
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// Virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Member `i`'s key.
    pub fn key(&self, i: usize) -> &Keypair {
        &self.slots[i].key
    }

    /// Member `i`'s store.
    pub fn disk(&self, i: usize) -> &Disk {
        &self.slots[i].disk
    }

    /// Events member `i` reported, in order.
    pub fn events(&self, i: usize) -> &[PeerEvent] {
        &self.slots[i].events
    }

    /// Most jobs member `i` had asked for and not yet got back at once: what a slow
    /// machine's queue would hold.
    pub fn peak_jobs(&self, i: usize) -> usize {
        self.slots[i].peak_jobs
    }

    /// Gossip member `i` published, per topic (before any Byzantine rewriting).
    pub fn published(&self, i: usize, topic: Topic) -> u64 {
        self.slots[i].published.get(&topic).copied().unwrap_or(0)
    }

    /// Verdicts member `i` gave on gossip, in order.
    pub fn verdicts(&self, i: usize) -> &[Verdict] {
        &self.slots[i].verdicts
    }

    /// Member `i`'s peer.
    ///
    /// # Panics
    /// If member `i` is not a running peer (a test asking for a peer that is down is wrong).
    pub fn peer(&self, i: usize) -> &Peer<u32> {
        match &self.slots[i].member {
            Member::Honest(p) => p,
            other => panic!("member {i} is {other:?}, not a running peer"),
        }
    }

    /// Whether member `i` is a running peer.
    pub fn is_up(&self, i: usize) -> bool {
        matches!(self.slots[i].member, Member::Honest(_))
    }

    /// Committed height of member `i` (0 when it is not a running peer).
    pub fn height(&self, i: usize) -> u64 {
        match &self.slots[i].member {
            Member::Honest(p) => p.ledger().height().0,
            _ => 0,
        }
    }

    /// Test accuracy member `i` last reported, if any.
    pub fn accuracy(&self, i: usize) -> Option<f32> {
        self.slots[i].events.iter().rev().find_map(|e| match e {
            PeerEvent::Tested { accuracy, .. } => Some(*accuracy),
            _ => None,
        })
    }

    /// Starts every member with `roles`.
    pub fn start_all(&mut self, roles: Roles) -> Result<(), PeerSimError> {
        (0..self.slots.len()).try_for_each(|i| self.start(i, roles))
    }

    /// Starts (or restarts from its disk) member `i`, connected to every member up.
    pub fn start(&mut self, i: usize, roles: Roles) -> Result<(), PeerSimError> {
        let live = self.live_except(i);
        self.start_linked(i, roles, &live)
    }

    /// Starts member `i` connected to `links` only (see [`PeerSim::link`] for more later).
    pub fn start_linked(
        &mut self,
        i: usize,
        roles: Roles,
        links: &[usize],
    ) -> Result<(), PeerSimError> {
        let slot = &mut self.slots[i];
        let peer = Peer::new(
            self.genesis.clone(),
            slot.key.clone(),
            roles,
            slot.disk.restored(),
            self.now,
        )
        .map_err(|e| format!("member {i}: {e}"))?;
        slot.member = Member::Honest(Box::new(peer));
        slot.roles = Some(roles);
        slot.last_tick = self.now;
        self.trace.update([5, i as u8]);
        for &j in links {
            self.link(i, j);
        }
        self.schedule_tick(i);
        Ok(())
    }

    /// Connects `i` and `j`.
    pub fn link(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.links.insert((i.min(j), i.max(j)));
        if !self.cut(i, j) {
            self.connected(i, j);
        }
    }

    /// Puts an adversary in slot `i`, connected to every member up.
    pub fn fake(&mut self, i: usize, f: Fake) {
        self.slots[i].member = Member::Fake(f);
        for j in self.live_except(i) {
            self.link(i, j);
        }
    }

    /// Kills member `i` now (its disk stays).
    pub fn crash(&mut self, i: usize) {
        self.trace.update([2, i as u8]);
        let slot = &mut self.slots[i];
        slot.member = Member::Down;
        slot.epoch += 1;
        slot.tick_at = None;
        slot.queued.clear();
        slot.busy = 0;
        slot.seen.clear();
        for j in self.neighbours(i) {
            let at = self.now + self.delay(i, j);
            let epoch = self.slots[j].epoch;
            self.push(
                at,
                Event::Notice {
                    to: j,
                    epoch,
                    input: Input::PeerDown { peer: i as u32 },
                },
            );
        }
    }

    /// Pauses (`false`) or resumes (`true`) member `i`'s training now, as a volunteer does.
    pub fn set_training(&mut self, i: usize, on: bool) -> Result<(), PeerSimError> {
        self.feed(i, Input::Training(on), None)
    }

    /// Gossips raw bytes into member `to` now, as if `from` published them.
    pub fn inject(&mut self, from: usize, to: usize, topic: Topic, data: Vec<u8>) {
        let gossip = Rc::new(Gossip {
            topic,
            id: Sha256::digest(&data).into(),
            data: Rc::new(data),
            publisher: from,
        });
        let epoch = self.slots[to].epoch;
        self.push(
            self.now,
            Event::Gossip {
                to,
                epoch,
                source: from,
                gossip,
            },
        );
    }

    /// Runs until `done` holds or `until_ms` of virtual time pass; returns whether `done`.
    pub fn run_until(
        &mut self,
        until_ms: u64,
        mut done: impl FnMut(&PeerSim) -> bool,
    ) -> Result<bool, PeerSimError> {
        loop {
            if done(self) {
                return Ok(true);
            }
            let Some(entry) = self.queue.first_entry() else {
                break;
            };
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
        Ok(done(self))
    }

    /// Runs `ms` more of virtual time and reports.
    pub fn run_for(&mut self, ms: u64) -> Result<PeerReport, PeerSimError> {
        self.run_until(self.now + ms, |_| false)?;
        Ok(self.report())
    }

    /// Summary of the run so far.
    pub fn report(&self) -> PeerReport {
        let heights: Vec<u64> = self.slots.iter().map(|s| s.disk.height()).collect();
        let min_honest_height = (0..self.slots.len())
            .filter(|&i| self.is_up(i) && self.config.behaviour(i) == Behaviour::Honest)
            .map(|i| heights[i])
            .min()
            .unwrap_or(0);
        PeerReport {
            trace_hash: self.trace.clone().finalize().into(),
            now_ms: self.now,
            heights,
            min_honest_height,
            agreement_violations: self.agreement_violations,
            param_divergences: self.param_divergences,
            honest_double_signs: self.honest_double_signs,
            commit_times: self.commit_times.clone(),
            delivered: self.delivered,
            gossip_bytes: self.gossip_bytes,
            jobs: self.jobs,
        }
    }

    fn push(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn live_except(&self, i: usize) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&j| j != i && !matches!(self.slots[j].member, Member::Down))
            .collect()
    }

    /// Members linked to `i`, up and not cut off from it now.
    fn neighbours(&self, i: usize) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&j| j != i && self.reachable(i, j))
            .collect()
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
            && !self.cut(a, b)
            && !matches!(self.slots[b].member, Member::Down)
            && !matches!(self.slots[a].member, Member::Down)
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.config.partitions.iter().any(|p| {
            self.now >= p.from_ms
                && self.now < p.until_ms
                && !p.groups.iter().any(|g| g.contains(&a) && g.contains(&b))
        })
    }

    fn delay(&mut self, from: usize, to: usize) -> u64 {
        self.latency[from][to] + roll(&mut self.rng, self.config.jitter_ms + 1)
    }

    /// Tells both ends of a fresh connection.
    fn connected(&mut self, i: usize, j: usize) {
        for (a, b) in [(i, j), (j, i)] {
            let at = self.now + self.delay(b, a);
            let epoch = self.slots[a].epoch;
            self.push(
                at,
                Event::Notice {
                    to: a,
                    epoch,
                    input: Input::PeerUp {
                        peer: b as u32,
                        relay: false,
                    },
                },
            );
        }
    }

    /// A partition boundary: connections it cuts drop, connections it healed come back.
    fn recut(&mut self) {
        let links: Vec<(usize, usize)> = self.links.iter().copied().collect();
        for (a, b) in links {
            let cut = self.cut(a, b);
            let was = self.severed.contains(&(a, b));
            if cut == was {
                continue;
            }
            let both_up = !matches!(self.slots[a].member, Member::Down)
                && !matches!(self.slots[b].member, Member::Down);
            if cut {
                self.severed.insert((a, b));
                if both_up {
                    for (x, y) in [(a, b), (b, a)] {
                        let epoch = self.slots[x].epoch;
                        self.push(
                            self.now,
                            Event::Notice {
                                to: x,
                                epoch,
                                input: Input::PeerDown { peer: y as u32 },
                            },
                        );
                    }
                }
            } else {
                self.severed.remove(&(a, b));
                if both_up {
                    self.connected(a, b);
                }
            }
        }
    }

    fn restart(&mut self, i: usize) -> Result<(), PeerSimError> {
        self.trace.update([3, i as u8]);
        let Some(roles) = self.slots[i].roles else {
            return Ok(());
        };
        if !matches!(self.slots[i].member, Member::Down) {
            return Ok(());
        }
        let linked: Vec<usize> = (0..self.slots.len())
            .filter(|&j| self.links.contains(&(i.min(j), i.max(j))))
            .filter(|&j| !matches!(self.slots[j].member, Member::Down))
            .collect();
        self.start_linked(i, roles, &linked)
    }

    fn schedule_tick(&mut self, i: usize) {
        let Member::Honest(peer) = &self.slots[i].member else {
            return;
        };
        let periodic = self.slots[i].last_tick + TICK_MS;
        let want = peer
            .next_deadline()
            .map_or(periodic, |d| d.min(periodic))
            .max(self.now + 1);
        if self.slots[i].tick_at.is_none_or(|t| want < t) {
            self.slots[i].tick_at = Some(want);
            let epoch = self.slots[i].epoch;
            self.push(want, Event::Tick { to: i, epoch });
        }
    }

    fn step(&mut self, event: Event) -> Result<(), PeerSimError> {
        match event {
            Event::Gossip {
                to,
                epoch,
                source,
                gossip,
            } => self.receive(to, epoch, source, gossip),
            Event::Request {
                to,
                from,
                from_epoch,
                id,
                request,
            } => self.serve(to, from, from_epoch, id, request),
            Event::Notice { to, epoch, input } => {
                if self.slots[to].epoch == epoch {
                    self.trace.update([6, to as u8]);
                    self.feed(to, input, None)?;
                }
                Ok(())
            }
            Event::JobDone {
                to,
                epoch,
                output,
                elapsed_ms,
            } => {
                if self.slots[to].epoch != epoch {
                    return Ok(());
                }
                self.trace.update([7, to as u8]);
                self.slots[to].busy -= 1;
                self.feed(to, Input::JobDone { output, elapsed_ms }, None)?;
                self.pump_jobs(to);
                Ok(())
            }
            Event::Tick { to, epoch } => {
                let slot = &mut self.slots[to];
                if slot.epoch != epoch || slot.tick_at != Some(self.now) {
                    return Ok(());
                }
                slot.tick_at = None;
                slot.last_tick = self.now;
                if self.now % 10_000 < TICK_MS {
                    let horizon = self.now.saturating_sub(SEEN_MS);
                    slot.seen.retain(|_, at| *at >= horizon);
                }
                self.feed(to, Input::Tick, None)
            }
            Event::Crash(i) => {
                self.crash(i);
                Ok(())
            }
            Event::Restart(i) => self.restart(i),
            Event::Cut => {
                self.recut();
                Ok(())
            }
        }
    }

    fn receive(
        &mut self,
        to: usize,
        epoch: u64,
        source: usize,
        gossip: Rc<Gossip>,
    ) -> Result<(), PeerSimError> {
        let slot = &mut self.slots[to];
        if slot.epoch != epoch || !matches!(slot.member, Member::Honest(_)) {
            return Ok(());
        }
        if slot.seen.insert(gossip.id, self.now).is_some() {
            return Ok(());
        }
        self.delivered += 1;
        self.trace.update([0, to as u8]);
        self.trace.update(gossip.id);
        if self.config.behaviour(to) == Behaviour::Replay
            && matches!(gossip.topic, Topic::Votes | Topic::Proposals)
            && let Ok(m) = Message::decode(&gossip.data)
        {
            let h = &mut self.slots[to].history;
            if h.len() >= 64 {
                h.remove(0);
            }
            h.push(m);
        }
        let input = Input::Gossip {
            source: source as u32,
            publisher: Some(gossip.publisher as u32),
            topic: gossip.topic,
            data: gossip.data.to_vec(),
        };
        self.feed(to, input, Some((source, gossip)))
    }

    fn serve(
        &mut self,
        to: usize,
        from: usize,
        from_epoch: u64,
        id: RequestId,
        request: Request,
    ) -> Result<(), PeerSimError> {
        if self.slots[from].epoch != from_epoch {
            return Ok(());
        }
        let back = self.now + self.delay(to, from);
        if !self.reachable(to, from) {
            self.push(
                back,
                Event::Notice {
                    to: from,
                    epoch: from_epoch,
                    input: Input::RequestFailed { id },
                },
            );
            return Ok(());
        }
        self.delivered += 1;
        self.trace.update([8, to as u8, from as u8]);
        let answer = if let Member::Fake(f) = &mut self.slots[to].member {
            f(&request)
        } else {
            let input = Input::Request {
                from: from as u32,
                request,
            };
            self.feed_answering(to, input)?
        };
        if let Some(response) = answer {
            self.push(
                back,
                Event::Notice {
                    to: from,
                    epoch: from_epoch,
                    input: Input::Response {
                        from: to as u32,
                        id,
                        response,
                    },
                },
            );
        }
        Ok(())
    }

    /// Feeds a request to `i`; returns its answer.
    fn feed_answering(
        &mut self,
        i: usize,
        input: Input<u32>,
    ) -> Result<Option<Response>, PeerSimError> {
        let mut answer = None;
        self.feed_with(i, input, None, &mut answer)?;
        Ok(answer)
    }

    fn feed(
        &mut self,
        i: usize,
        input: Input<u32>,
        gossip: Option<(usize, Rc<Gossip>)>,
    ) -> Result<(), PeerSimError> {
        self.feed_with(i, input, gossip, &mut None)
    }

    /// Feeds `input` to member `i` and carries out its effects in order.
    fn feed_with(
        &mut self,
        i: usize,
        input: Input<u32>,
        gossip: Option<(usize, Rc<Gossip>)>,
        answer: &mut Option<Response>,
    ) -> Result<(), PeerSimError> {
        let now = self.now;
        let Member::Honest(peer) = &mut self.slots[i].member else {
            return Ok(());
        };
        let effects = peer.handle(now, input);
        for effect in effects {
            match effect {
                Effect::Persist(p) => self.persist(i, p)?,
                Effect::Publish { topic, data } => self.publish(i, topic, data),
                Effect::Validated(v) => {
                    self.slots[i].verdicts.push(v);
                    if v == Verdict::Accept
                        && let Some((source, g)) = &gossip
                    {
                        self.forward(i, *source, g.clone());
                    }
                }
                Effect::Send { to, id, request } => self.send(i, to as usize, id, request),
                Effect::Respond(r) => *answer = Some(r),
                Effect::Run(job) => {
                    self.slots[i].queued.push_back(job);
                    let open = self.slots[i].queued.len() + self.slots[i].busy;
                    self.slots[i].peak_jobs = self.slots[i].peak_jobs.max(open);
                    self.pump_jobs(i);
                }
                Effect::Event(e) => self.slots[i].events.push(e),
                // Gossip scores live in the transport; here every member is connected anyway.
                Effect::Penalise(_) => {}
                _ => {}
            }
        }
        self.schedule_tick(i);
        Ok(())
    }

    fn persist(&mut self, i: usize, p: Persist) -> Result<(), PeerSimError> {
        match &p {
            Persist::Consensus(Record::Block(b)) => {
                let (h, hash) = (b.height.0, b.hash());
                self.trace.update(h.to_le_bytes());
                self.trace.update(hash);
                match self.decided.get(&h) {
                    Some(x) if *x != hash => self.agreement_violations += 1,
                    Some(_) => {}
                    None => {
                        self.decided.insert(h, hash);
                        self.commit_times.push(self.now);
                    }
                }
            }
            Persist::Params { height, bytes, .. } => {
                let hash: [u8; 32] = Sha256::digest(bytes.as_slice()).into();
                match self.params_at.get(height) {
                    Some(x) if *x != hash => self.param_divergences += 1,
                    Some(_) => {}
                    None => {
                        self.params_at.insert(*height, hash);
                    }
                }
            }
            _ => {}
        }
        self.slots[i]
            .disk
            .apply(p)
            .map_err(|e| format!("member {i}: persisting: {e}"))
    }

    fn publish(&mut self, i: usize, topic: Topic, data: Vec<u8>) {
        *self.slots[i].published.entry(topic).or_default() += 1;
        let behaviour = self.config.behaviour(i);
        let consensus = !matches!(topic, Topic::Updates);
        let msg = consensus.then(|| Message::decode(&data).ok()).flatten();
        if let Some(Message::Vote(v)) = &msg
            && behaviour == Behaviour::Honest
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
        let outgoing: Vec<(Option<Vec<usize>>, Vec<u8>)> = match (behaviour, msg) {
            (Behaviour::Honest, _) | (_, None) => vec![(None, data)],
            (b, Some(m)) => {
                let n = self.slots.len();
                let victim = self.slots[(i + 1) % n].key.address();
                let sender = byzantine::Sender {
                    ctx: &self.ctx,
                    key: &self.slots[i].key,
                    me: i,
                    n,
                    history: &self.slots[i].history,
                    victim,
                    coin: self.rng.next_u64(),
                };
                byzantine::rewrite(b, m, &sender)
                    .into_iter()
                    .filter_map(|(to, m)| Some((to, m.encode().ok()?)))
                    .collect()
            }
        };
        for (targets, data) in outgoing {
            let gossip = Rc::new(Gossip {
                topic,
                id: Sha256::digest(&data).into(),
                data: Rc::new(data),
                publisher: i,
            });
            self.slots[i].seen.insert(gossip.id, self.now);
            let to = targets.unwrap_or_else(|| self.neighbours(i));
            for j in to {
                self.gossip_to(i, j, gossip.clone());
            }
        }
    }

    /// Passes an accepted message on to up to `mesh_degree` neighbours (the ones after `i` in
    /// index order, wrapping: a fixed, connected mesh).
    fn forward(&mut self, i: usize, source: usize, gossip: Rc<Gossip>) {
        let n = self.slots.len();
        let mesh: Vec<usize> = (1..n)
            .map(|k| (i + k) % n)
            .filter(|&j| j != source && j != gossip.publisher && self.reachable(i, j))
            .take(self.config.mesh_degree)
            .collect();
        for j in mesh {
            self.gossip_to(i, j, gossip.clone());
        }
    }

    fn gossip_to(&mut self, from: usize, to: usize, gossip: Rc<Gossip>) {
        if to == from || !self.reachable(from, to) {
            return;
        }
        self.gossip_bytes += gossip.data.len() as u64;
        let lossy = self.config.loss_until_ms.is_none_or(|t| self.now < t);
        let lost = roll(&mut self.rng, 1000) < u64::from(self.config.loss_per_mille);
        if lossy && lost {
            return;
        }
        let at = self.now + self.delay(from, to);
        let epoch = self.slots[to].epoch;
        self.push(
            at,
            Event::Gossip {
                to,
                epoch,
                source: from,
                gossip,
            },
        );
    }

    fn send(&mut self, i: usize, to: usize, id: RequestId, request: Request) {
        let from_epoch = self.slots[i].epoch;
        if to >= self.slots.len() || !self.reachable(i, to) {
            self.push(
                self.now + 1,
                Event::Notice {
                    to: i,
                    epoch: from_epoch,
                    input: Input::RequestFailed { id },
                },
            );
            return;
        }
        let at = self.now + self.delay(i, to);
        self.push(
            at,
            Event::Request {
                to,
                from: i,
                from_epoch,
                id,
                request,
            },
        );
    }

    fn pump_jobs(&mut self, i: usize) {
        while self.slots[i].busy < self.config.workers.max(1) {
            let Some(job) = self.slots[i].queued.pop_front() else {
                return;
            };
            let elapsed_ms = self.config.cost.of(&job, &self.config.rules)
                * self.config.slowdown.get(&i).copied().unwrap_or(1);
            let seed = match &job {
                Job::Train { seed, .. } => *seed,
                _ => 0,
            };
            let mut output = self.model.run(job, &self.config.rules);
            if let (Some(attack), Output::Trained { result: Ok(u), .. }) =
                (self.config.attacks.get(&i), &mut output)
            {
                attack.apply(&mut u.delta, seed);
            }
            self.jobs += 1;
            self.slots[i].busy += 1;
            let epoch = self.slots[i].epoch;
            self.push(
                self.now + elapsed_ms,
                Event::JobDone {
                    to: i,
                    epoch,
                    output,
                    elapsed_ms,
                },
            );
        }
    }
}
