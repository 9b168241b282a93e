//! Helpers shared by tests, the simulator and the benchmark: keys, a genesis, a simple
//! deterministic application.

use malachitebft_core_types::Round;
use sha2::{Digest, Sha256};

use crate::context::{Height, IncludedUpdate, RoundProposal};
use crate::genesis::{AggregationRule, Genesis, GenesisFile, TimeoutsMs, ValidatorEntry, hex};
use crate::identity::{Address, Keypair};
use crate::node::Application;

/// Deterministic key `i` (seeded from `i`, so runs are reproducible).
pub fn key(i: u32) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    seed[31] = 0x5a;
    Keypair::from_seed(seed)
}

/// JSON genesis with these validators and fast timeouts (propose 300 ms, votes 100 ms).
pub fn genesis_json(validators: &[(Address, u64)]) -> String {
    let file = GenesisFile {
        data: None,
        compression: Default::default(),
        version: 1,
        name: "testkit".into(),
        initial_param_hash: hex(&[0; 32]),
        aggregation_rule: AggregationRule::Mean,
        timeouts_ms: fast_timeouts(),
        training: Default::default(),
        validators: validators
            .iter()
            .map(|(a, stake)| ValidatorEntry {
                public_key: hex(&a.0),
                stake: *stake,
            })
            .collect(),
    };
    serde_json::to_string(&file).unwrap_or_default()
}

/// Timeouts suited to simulated networks with tens of milliseconds of latency.
pub fn fast_timeouts() -> TimeoutsMs {
    TimeoutsMs {
        propose: 300,
        propose_delta: 100,
        prevote: 100,
        prevote_delta: 50,
        precommit: 100,
        precommit_delta: 50,
        rebroadcast: 400,
        max: 5000,
    }
}

/// A validated genesis for `stakes`, keys from [`key`].
pub fn genesis(stakes: &[u64]) -> Genesis {
    let validators: Vec<(Address, u64)> = stakes
        .iter()
        .enumerate()
        .map(|(i, s)| (key(i as u32).address(), *s))
        .collect();
    Genesis::from_file(
        serde_json::from_str(&genesis_json(&validators)).unwrap_or_else(|_| GenesisFile {
            data: None,
            compression: Default::default(),
            version: 0,
            name: String::new(),
            initial_param_hash: String::new(),
            aggregation_rule: AggregationRule::Mean,
            timeouts_ms: TimeoutsMs::default(),
            training: Default::default(),
            validators: Vec::new(),
        }),
    )
    .unwrap_or_else(|e| panic!("testkit genesis is valid: {e}"))
}

/// The "next parameters" every honest peer computes: hash of the base and the update ids.
pub fn result_hash(base: [u8; 32], updates: &[IncludedUpdate]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(base);
    for u in updates {
        h.update(u.id);
    }
    h.finalize().into()
}

/// An honest application: proposes `updates_per_round` synthetic updates and accepts a
/// proposal only if its result hash is what it recomputes.
#[derive(Clone, Debug)]
pub struct HonestApp {
    /// Updates per proposal.
    pub updates_per_round: u8,
    /// Whether to propose garbage (a Byzantine proposer).
    pub propose_invalid: bool,
}

impl HonestApp {
    /// An honest app with `n` updates per round.
    pub fn new(n: u8) -> Self {
        Self {
            updates_per_round: n,
            propose_invalid: false,
        }
    }
}

impl Application for HonestApp {
    fn propose(&mut self, height: Height, round: Round, base: [u8; 32]) -> Option<RoundProposal> {
        let updates: Vec<IncludedUpdate> = (0..self.updates_per_round)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&height.0.to_be_bytes());
                id[8] = i;
                let mut trainer = [0u8; 32];
                trainer[0] = i % 3;
                IncludedUpdate { id, trainer }
            })
            .collect();
        let mut result = result_hash(base, &updates);
        if self.propose_invalid {
            result[0] ^= 0xff;
            result[1] = round.as_u32().unwrap_or(0) as u8;
        }
        Some(RoundProposal {
            base_param_hash: base,
            updates,
            aggregation_rule: AggregationRule::Mean,
            result_param_hash: result,
        })
    }

    fn validate(&mut self, _height: Height, _round: Round, p: &RoundProposal) -> bool {
        p.result_param_hash == result_hash(p.base_param_hash, &p.updates)
    }
}

/// Validators on a perfect in-process network: messages arrive at once, in order; timers
/// fire on a virtual clock only when no message is in flight. Real ed25519 throughout.
#[derive(Debug)]
pub struct Cluster {
    /// The validators.
    pub nodes: Vec<crate::node::Node<HonestApp>>,
    /// What each persisted.
    pub stores: Vec<crate::node::Persisted>,
    queue: std::collections::VecDeque<(usize, Vec<u8>)>,
    wake: std::collections::VecDeque<usize>,
    timers: Vec<Vec<(malachitebft_core_types::Timeout, u64)>>,
    /// Virtual time in milliseconds.
    pub now_ms: u64,
    /// Messages sent (one per broadcast per recipient).
    pub messages: u64,
    /// Bytes sent (encoded size times recipients).
    pub bytes: u64,
    /// Blocks committed, per node.
    pub committed: Vec<Vec<crate::ledger::Block>>,
}

impl Cluster {
    /// `stakes.len()` validators with keys from [`key`], each with an [`HonestApp`].
    pub fn new(stakes: &[u64]) -> Result<Self, crate::node::NodeError> {
        let g = genesis(stakes);
        let nodes = (0..stakes.len())
            .map(|i| crate::node::Node::new(g.clone(), key(i as u32), HonestApp::new(4)))
            .collect::<Result<Vec<_>, _>>()?;
        let n = nodes.len();
        let mut c = Self {
            nodes,
            stores: vec![Default::default(); n],
            queue: Default::default(),
            wake: Default::default(),
            timers: vec![Vec::new(); n],
            now_ms: 0,
            messages: 0,
            bytes: 0,
            committed: vec![Vec::new(); n],
        };
        for i in 0..n {
            let out = c.nodes[i].start()?;
            c.apply(i, out);
        }
        Ok(c)
    }

    /// Carries out a node's outputs in order.
    pub fn apply(&mut self, i: usize, outputs: Vec<crate::node::Output>) {
        use crate::node::Output;
        for o in outputs {
            match o {
                Output::Persist(r) => self.stores[i].apply(&r),
                Output::Broadcast(m) => {
                    if let Ok(bytes) = m.encode() {
                        let peers = self.nodes.len() as u64 - 1;
                        self.messages += peers;
                        self.bytes += bytes.len() as u64 * peers;
                        self.queue.push_back((i, bytes));
                    }
                }
                Output::ScheduleTimer(t, after) => {
                    self.timers[i].retain(|(x, _)| *x != t);
                    self.timers[i].push((t, self.now_ms + after.as_millis() as u64));
                }
                Output::CancelTimer(t) => self.timers[i].retain(|(x, _)| *x != t),
                Output::CancelAllTimers => self.timers[i].clear(),
                Output::Committed(b) => self.committed[i].push(*b),
                Output::CallAgain => self.wake.push_back(i),
            }
        }
    }

    /// Delivers one message or fires the earliest timer; `false` if nothing is left to do.
    pub fn step(&mut self) -> Result<bool, crate::node::NodeError> {
        if let Some((from, bytes)) = self.queue.pop_front() {
            for to in 0..self.nodes.len() {
                if to != from {
                    let out = self.nodes[to].on_bytes(&bytes)?;
                    self.apply(to, out);
                }
            }
            return Ok(true);
        }
        if let Some(i) = self.wake.pop_front() {
            let out = self.nodes[i].resume()?;
            self.apply(i, out);
            return Ok(true);
        }
        let next = self
            .timers
            .iter()
            .enumerate()
            .flat_map(|(i, ts)| ts.iter().enumerate().map(move |(j, (_, due))| (*due, i, j)))
            .min();
        let Some((due, i, j)) = next else {
            return Ok(false);
        };
        let (t, _) = self.timers[i].remove(j);
        self.now_ms = self.now_ms.max(due);
        let out = self.nodes[i].on_timeout(t)?;
        self.apply(i, out);
        Ok(true)
    }

    /// Runs until every node has committed `height` or `max_steps` pass.
    pub fn run_until_height(
        &mut self,
        height: u64,
        max_steps: usize,
    ) -> Result<bool, crate::node::NodeError> {
        for _ in 0..max_steps {
            if self.committed.iter().all(|c| c.len() as u64 >= height) {
                return Ok(true);
            }
            if !self.step()? {
                break;
            }
        }
        Ok(self.committed.iter().all(|c| c.len() as u64 >= height))
    }
}
