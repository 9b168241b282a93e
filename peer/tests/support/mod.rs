//! A synchronous in-memory network of real [`Peer`]s for the peer's own tests: messages are
//! delivered in order, jobs run inline on a small synthetic dataset, time is virtual. Faster
//! than real time and deterministic; adversaries are plain functions answering requests.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)] // a panic is the failure report

use std::collections::VecDeque;
use std::sync::Arc;

use tabswarm_consensus::genesis::{
    AggregationRule, Genesis, GenesisFile, TrainingRules, ValidatorEntry, hex,
};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::node::{Persisted, Record};
use tabswarm_consensus::testkit::{fast_timeouts, key};
use tabswarm_core::data::Dataset;
use tabswarm_core::flat;
use tabswarm_core::rng::SeededRng;
use tabswarm_peer::jobs::{self, DataPlan, Job};
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{Effect, Event, Input, Peer, Persist, Restored, Roles};

/// The rules every test run uses: a small MLP run that commits in a few virtual seconds.
pub fn rules() -> TrainingRules {
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

/// A genesis staking keys `0..stakes.len()` with these rules (initial hash computed).
pub fn genesis(stakes: &[u64], rules: TrainingRules) -> Genesis {
    let params = jobs::initial_params(&rules).unwrap();
    Genesis::from_file(GenesisFile {
        version: 1,
        name: "peer-tests".into(),
        initial_param_hash: hex(&flat::param_hash(&params).0),
        aggregation_rule: AggregationRule::Mean,
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
    .unwrap()
}

/// 1,200 28x28 images in 10 classes, each class a bright band at its own rows plus noise:
/// learnable in a few steps, so loss falls visibly.
pub fn dataset() -> Dataset {
    let n = 1200;
    let mut rng = SeededRng::new(7, "peer-tests/data");
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * 784);
    for i in 0..n {
        let class = (i % 10) as u8;
        labels.push(class);
        for p in 0..784 {
            let row = p / 28;
            let band = row / 3 == usize::from(class) % 9 && (class < 9 || p % 28 < 14);
            let noise = rng.below(64) as u8;
            pixels.push(if band { 192 + noise / 2 } else { noise });
        }
    }
    Dataset::from_parts(28, 28, 10, labels, pixels).unwrap()
}

/// What a peer has on "disk".
#[derive(Debug, Default, Clone)]
pub struct Disk {
    pub persisted: Persisted,
    pub params: Option<(u64, Vec<u8>)>,
    pub checkpoint: Option<(u64, Vec<u8>)>,
    pub updates: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

impl Disk {
    fn apply(&mut self, p: Persist) {
        match p {
            Persist::Consensus(record) => {
                if let Record::Block(b) = &record {
                    let h = b.height.0;
                    self.updates.retain(|(uh, _, _)| *uh > h);
                }
                self.persisted.apply(&record);
            }
            Persist::Params {
                height,
                bytes,
                checkpoint,
            } => {
                self.params = Some((height, bytes.to_vec()));
                if checkpoint {
                    self.checkpoint = Some((height, bytes.to_vec()));
                }
            }
            Persist::Update {
                height,
                announcement,
                payload,
                ..
            } => self.updates.push((height, announcement, payload)),
        }
    }

    pub fn restored(&self) -> Restored {
        Restored {
            persisted: self.persisted.clone(),
            params: self
                .params
                .iter()
                .chain(self.checkpoint.iter())
                .cloned()
                .collect(),
            updates: self
                .updates
                .iter()
                .map(|(_, a, p)| (a.clone(), p.clone()))
                .collect(),
        }
    }
}

/// A participant that is not an honest peer: answers requests and gossip by a rule.
pub type Fake = Box<dyn FnMut(&Request) -> Option<Response>>;

/// One slot of the network.
pub enum Member {
    Honest(Box<Peer<u32>>),
    Fake(Fake),
    Down,
}

/// The network.
pub struct Net {
    pub genesis: Genesis,
    pub plan: Arc<DataPlan>,
    pub members: Vec<Member>,
    pub disks: Vec<Disk>,
    pub keys: Vec<Keypair>,
    pub now: u64,
    pub events: Vec<Vec<Event>>,
    /// Gossip published per member and topic (count).
    pub published: Vec<std::collections::BTreeMap<Topic, u64>>,
    /// Verdicts each member gave, in order.
    pub verdicts: Vec<Vec<tabswarm_consensus::gate::Verdict>>,
    queue: VecDeque<(usize, Input<u32>)>,
    jobs: VecDeque<(usize, Job)>,
    /// Requests in flight: (requester, id) answered by whom.
    pending: Vec<(usize, tabswarm_peer::RequestId, usize)>,
}

impl Net {
    /// `n` slots; stakes for the first `stakes.len()` keys.
    pub fn new(n: usize, stakes: &[u64], rules: TrainingRules) -> Self {
        let genesis = genesis(stakes, rules);
        let plan = Arc::new(DataPlan::new(&dataset(), &genesis.training).unwrap());
        Self {
            genesis,
            plan,
            members: (0..n).map(|_| Member::Down).collect(),
            disks: vec![Disk::default(); n],
            keys: (0..n).map(|i| key(i as u32)).collect(),
            now: 0,
            events: vec![Vec::new(); n],
            published: vec![Default::default(); n],
            verdicts: vec![Vec::new(); n],
            queue: VecDeque::new(),
            jobs: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    /// Starts (or restarts from its disk) member `i`, connected to every live member.
    pub fn start(&mut self, i: usize, roles: Roles) {
        let live = self.live_except(i);
        self.start_linked(i, roles, &live);
    }

    /// Starts member `i` connected to `links` only (see [`Net::link`] for more later).
    pub fn start_linked(&mut self, i: usize, roles: Roles, links: &[usize]) {
        let peer = Peer::new(
            self.genesis.clone(),
            self.keys[i].clone(),
            roles,
            self.disks[i].restored(),
            self.now,
        )
        .unwrap();
        self.members[i] = Member::Honest(Box::new(peer));
        for &j in links {
            self.link(i, j);
        }
    }

    /// Connects `i` and `j`.
    pub fn link(&mut self, i: usize, j: usize) {
        for (a, b) in [(i, j), (j, i)] {
            self.queue.push_back((
                a,
                Input::PeerUp {
                    peer: b as u32,
                    relay: false,
                },
            ));
        }
    }

    /// Puts an adversary in slot `i`.
    pub fn fake(&mut self, i: usize, f: Fake) {
        self.members[i] = Member::Fake(f);
        self.connect(i);
    }

    fn live_except(&self, i: usize) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&j| j != i && !matches!(self.members[j], Member::Down))
            .collect()
    }

    fn connect(&mut self, i: usize) {
        for j in self.live_except(i) {
            self.link(i, j);
        }
    }

    /// Kills member `i` (its disk stays).
    pub fn crash(&mut self, i: usize) {
        self.members[i] = Member::Down;
        for j in 0..self.members.len() {
            if j != i {
                self.queue
                    .push_back((j, Input::PeerDown { peer: i as u32 }));
            }
        }
        self.jobs.retain(|(k, _)| *k != i);
        for (req, id, _) in std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|(_, _, to)| *to == i)
        {
            self.queue.push_back((req, Input::RequestFailed { id }));
        }
        self.pending.retain(|(_, _, to)| *to != i);
    }

    pub fn peer(&self, i: usize) -> &Peer<u32> {
        match &self.members[i] {
            Member::Honest(p) => p,
            _ => panic!("member {i} is not an honest peer"),
        }
    }

    pub fn height(&self, i: usize) -> u64 {
        match &self.members[i] {
            Member::Honest(p) => p.ledger().height().0,
            _ => 0,
        }
    }

    /// Gossips raw bytes into member `to` as if `from` published them.
    pub fn inject(&mut self, from: usize, to: usize, topic: Topic, data: Vec<u8>) {
        self.queue.push_back((
            to,
            Input::Gossip {
                source: from as u32,
                publisher: Some(from as u32),
                topic,
                data,
            },
        ));
    }

    fn handle(&mut self, i: usize, input: Input<u32>) {
        let from = match &input {
            Input::Request { from, .. } => Some(*from as usize),
            _ => None,
        };
        let effects = match &mut self.members[i] {
            Member::Honest(p) => p.handle(self.now, input),
            Member::Fake(f) => {
                if let Input::Request { request, .. } = &input {
                    f(request).map(Effect::Respond).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            Member::Down => return,
        };
        for e in effects {
            match e {
                Effect::Persist(p) => self.disks[i].apply(p),
                Effect::Publish { topic, data } => {
                    *self.published[i].entry(topic).or_default() += 1;
                    for j in 0..self.members.len() {
                        if j != i && matches!(self.members[j], Member::Honest(_)) {
                            self.queue.push_back((
                                j,
                                Input::Gossip {
                                    source: i as u32,
                                    publisher: Some(i as u32),
                                    topic,
                                    data: data.clone(),
                                },
                            ));
                        }
                    }
                }
                Effect::Send { to, id, request } => {
                    let to = to as usize;
                    if matches!(self.members[to], Member::Down) {
                        self.queue.push_back((i, Input::RequestFailed { id }));
                    } else {
                        self.pending.push((i, id, to));
                        self.queue.push_back((
                            to,
                            Input::Request {
                                from: i as u32,
                                request,
                            },
                        ));
                    }
                }
                Effect::Respond(response) => {
                    let Some(req) = from else { continue };
                    // Answer the oldest request of `req` to `i` (requests are served in
                    // order on this lossless network).
                    if let Some(pos) = self
                        .pending
                        .iter()
                        .position(|(r, _, to)| *r == req && *to == i)
                    {
                        let (_, id, _) = self.pending.remove(pos);
                        self.queue.push_back((
                            req,
                            Input::Response {
                                from: i as u32,
                                id,
                                response,
                            },
                        ));
                    }
                }
                Effect::Validated(v) => self.verdicts[i].push(v),
                Effect::Run(job) => self.jobs.push_back((i, job)),
                Effect::Event(ev) => self.events[i].push(ev),
                Effect::Penalise(_) => {}
                _ => {}
            }
        }
    }

    /// Runs until `done` holds or `until_ms` of virtual time pass; returns whether `done`.
    pub fn run_until(&mut self, until_ms: u64, mut done: impl FnMut(&Net) -> bool) -> bool {
        let mut steps = 0u64;
        while self.now <= until_ms {
            if done(self) {
                return true;
            }
            steps += 1;
            assert!(steps < 5_000_000, "the network does not settle");
            if let Some((i, input)) = self.queue.pop_front() {
                self.handle(i, input);
                continue;
            }
            if let Some((i, job)) = self.jobs.pop_front() {
                let output = jobs::run(&self.plan, job);
                // Jobs take virtual time: 20 ms each.
                self.now += 20;
                self.queue.push_back((
                    i,
                    Input::JobDone {
                        output,
                        elapsed_ms: 20,
                    },
                ));
                continue;
            }
            self.now += 10;
            for i in 0..self.members.len() {
                if matches!(self.members[i], Member::Honest(_)) {
                    self.queue.push_back((i, Input::Tick));
                }
            }
        }
        done(self)
    }

    /// Test accuracy member `i` last reported, if any.
    pub fn accuracy(&self, i: usize) -> Option<f32> {
        self.events[i].iter().rev().find_map(|e| match e {
            Event::Tested { accuracy, .. } => Some(*accuracy),
            _ => None,
        })
    }
}

pub const ALL: Roles = Roles {
    train: true,
    validate: true,
};
