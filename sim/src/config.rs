//! What a simulation runs: validators, network, faults.

use crate::byzantine::Behaviour;

/// A partition: while active, messages only flow within a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Start, virtual ms.
    pub from_ms: u64,
    /// End (exclusive), virtual ms.
    pub until_ms: u64,
    /// Validator indices per side; nodes in no group are isolated.
    pub groups: Vec<Vec<usize>>,
}

/// A crash and (optional) restart from persisted state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// Which validator.
    pub node: usize,
    /// When it stops.
    pub at_ms: u64,
    /// When it restarts from its store, if ever.
    pub restart_ms: Option<u64>,
    /// Crash in the middle of an output batch instead: right after the node's next signer
    /// record is persisted and before the vote it was for is sent.
    pub torn: bool,
}

/// A simulation's full description; with the seed, it fixes the whole trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Seed of every random choice.
    pub seed: u64,
    /// Stake of each validator.
    pub stakes: Vec<u64>,
    /// Base one-way latency, ms.
    pub latency_ms: u64,
    /// Extra per-link latency drawn once per link in `0..=link_spread_ms`.
    pub link_spread_ms: u64,
    /// Per-message jitter in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability of losing a message, in thousandths.
    pub loss_per_mille: u32,
    /// When loss stops (`None`: never).
    pub loss_until_ms: Option<u64>,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Crashes.
    pub crashes: Vec<Crash>,
    /// Behaviour of each validator (missing entries are honest).
    pub behaviours: Vec<Behaviour>,
    /// Updates each honest proposal includes.
    pub updates_per_round: u8,
}

impl Config {
    /// Honest validators with these stakes on a 20 ms (+0..10 per link, +0..5 jitter) network.
    pub fn new(seed: u64, stakes: Vec<u64>) -> Self {
        Self {
            seed,
            stakes,
            latency_ms: 20,
            link_spread_ms: 10,
            jitter_ms: 5,
            loss_per_mille: 0,
            loss_until_ms: None,
            partitions: Vec::new(),
            crashes: Vec::new(),
            behaviours: Vec::new(),
            updates_per_round: 4,
        }
    }

    /// Behaviour of validator `i`.
    pub fn behaviour(&self, i: usize) -> Behaviour {
        self.behaviours.get(i).copied().unwrap_or(Behaviour::Honest)
    }

    /// Virtual time after which no partition, crash or (ending) loss is active.
    pub fn faults_end_ms(&self) -> u64 {
        let p = self
            .partitions
            .iter()
            .map(|p| p.until_ms)
            .chain(self.loss_until_ms);
        let c = self.crashes.iter().map(|c| c.restart_ms.unwrap_or(c.at_ms));
        p.chain(c).max().unwrap_or(0)
    }
}
