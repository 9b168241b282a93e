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
    /// Non-voting light peers next to the validators (`None`: none).
    pub light: Option<LightPeers>,
}

/// Light (non-voting) peers: each announces one signed update per height to the height's
/// likely proposers and follows the chain through a gossip mesh (see the simulator's
/// `light` module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LightPeers {
    /// Light peers online at any time.
    pub count: usize,
    /// Target mesh degree D of the commit-notice topic (gossipsub's `mesh_n`).
    pub mesh_degree: usize,
    /// Validators each announcement is sent to: the proposers of rounds 0, 1, ... of the
    /// next height (so the proposer and its fallbacks hear every update).
    pub attach: usize,
    /// Per height, this many thousandths of the online light peers leave and as many
    /// offline ones join (rejoining with empty state).
    pub churn_per_mille: u32,
    /// Base one-way latency of every light link, ms (plus 0..=20 per link, 0..=10 jitter).
    pub latency_ms: u64,
}

impl LightPeers {
    /// `count` light peers: D = 8, announcements to 2 validators, 1% churn per height, 100 ms
    /// one way (about 200 ms RTT).
    pub fn new(count: usize) -> Self {
        Self {
            count,
            mesh_degree: 8,
            attach: 2,
            churn_per_mille: 10,
            latency_ms: 90,
        }
    }

    /// With this churn per height, in thousandths.
    pub fn with_churn_per_mille(mut self, churn: u32) -> Self {
        self.churn_per_mille = churn;
        self
    }

    /// With this mesh degree.
    pub fn with_mesh_degree(mut self, d: usize) -> Self {
        self.mesh_degree = d;
        self
    }
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
            light: None,
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
