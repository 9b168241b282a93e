//! The training round as the consensus application (DESIGN.md, "A round"): what the proposer
//! proposes, how validators judge a proposal, what every peer applies on commit.
//!
//! Everything here is deterministic given the committed parameters and the update payloads:
//! aggregation is core's fixed-order f64-accumulated weighted mean, so every peer computes the
//! same parameter bytes and hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use malachitebft_core_types::Round;
use sha2::{Digest, Sha256};
use tabswarm_consensus::context::{Height, IncludedUpdate, MAX_UPDATES, RoundProposal};
use tabswarm_consensus::genesis::{Genesis, LocalOptimizer, ModelArch, RunId, TrainingRules};
use tabswarm_consensus::identity::Address;
use tabswarm_consensus::ledger::Block;
use tabswarm_consensus::node::Application;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_core::Backend;
use tabswarm_core::data::{Batches, Dataset, Split};
use tabswarm_core::flat;
use tabswarm_core::model::ModelKind;
use tabswarm_core::rng::SeededRng;
use tabswarm_core::train::{Config, Evaluation, LocalUpdate, Optimizer, Trainer};
use tracing::{debug, warn};

/// Examples held out of the training shards to score updates on.
const VALIDATION_EXAMPLES: usize = 500;
/// An update whose validation loss exceeds `base * FACTOR + SLACK` is refused as harmful.
const HARM_FACTOR: f32 = 1.5;
const HARM_SLACK: f32 = 0.5;
/// Most updates held for the next height (each carries a ~0.4 MB payload for the MLP).
const MAX_POOL: usize = 256;
/// Heights a trainer counts as active after its last announcement.
const ACTIVE_HEIGHTS: u64 = 3;

/// The data a peer trains and scores on, cut as the run's rules say.
#[derive(Debug)]
pub(crate) struct DataPlan {
    shards: Vec<Arc<Dataset>>,
    validation: Dataset,
    test: Arc<Dataset>,
}

impl DataPlan {
    /// Cuts the 9,000 training digits into a held-out validation set and `shards` shards
    /// (a seeded permutation first, so shards are not sorted by class).
    pub(crate) fn new(dataset: &Dataset, rules: &TrainingRules) -> anyhow::Result<Self> {
        let split = Split::mnist(dataset);
        let mut order: Vec<usize> = (0..split.train.len()).collect();
        SeededRng::new(rules.seed, "tabswarm/shards").shuffle(&mut order);
        let (validation, rest) = order.split_at(VALIDATION_EXAMPLES.min(order.len() / 2));
        let shards = rules.shards as usize;
        if rest.len() < shards {
            anyhow::bail!(
                "{} training examples cannot fill {shards} shards: lower `training.shards` in the genesis",
                rest.len()
            );
        }
        let per = rest.len() / shards;
        Ok(Self {
            shards: (0..shards)
                .map(|i| Arc::new(split.train.subset(&rest[i * per..(i + 1) * per])))
                .collect(),
            validation: split.train.subset(validation),
            test: split.test,
        })
    }

    /// The shard a trainer works on at `height`: a hash of (run, height, trainer).
    pub(crate) fn shard_for(&self, run: &RunId, height: u64, trainer: &Address) -> usize {
        let mut h = Sha256::new();
        h.update(b"tabswarm/shard/v1\0");
        h.update(run.0);
        h.update(height.to_le_bytes());
        h.update(trainer.0);
        let d: [u8; 32] = h.finalize().into();
        (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
            % self.shards.len() as u64) as usize
    }
}

/// The local training config the run's rules imply.
pub(crate) fn train_config(rules: &TrainingRules) -> Config {
    Config {
        model: match rules.model {
            ModelArch::Mlp => ModelKind::Mlp,
            ModelArch::Cnn => ModelKind::Cnn,
        },
        backend: Backend::Flex,
        optimizer: match rules.optimizer {
            LocalOptimizer::Sgd => Optimizer::Sgd,
            LocalOptimizer::Adam => Optimizer::Adam,
        },
        lr: rules.learning_rate,
        batch_size: rules.batch_size as usize,
        seed: rules.seed,
    }
}

/// The initial parameters a genesis's rules produce.
pub(crate) fn initial_params(rules: &TrainingRules) -> anyhow::Result<Vec<f32>> {
    Ok(Trainer::new(&train_config(rules))?.params().to_vec())
}

/// One trainer's work for a height: local steps from the committed parameters on its shard.
/// Runs on a blocking thread; takes everything by value.
pub(crate) fn train_locally(
    rules: TrainingRules,
    plan: Arc<DataPlan>,
    params: Arc<Vec<f32>>,
    run: RunId,
    height: u64,
    trainer: Address,
) -> anyhow::Result<LocalUpdate> {
    let config = train_config(&rules);
    let mut model = Trainer::with_params(&config, &params)?;
    let shard = plan.shard_for(&run, height, &trainer);
    let seed = u64::from_le_bytes(trainer.0[..8].try_into().unwrap_or_default()) ^ height;
    let mut batches = Batches::new(plan.shards[shard].clone(), config.batch_size, seed);
    Ok(model.local_update(&mut batches, rules.local_steps as usize)?)
}

/// An announcement and, once fetched and checked, its delta.
#[derive(Debug, Clone)]
struct Entry {
    update: SignedUpdate,
    delta: Option<Arc<Vec<f32>>>,
    /// Validation loss after applying this update alone (scored once).
    score: Option<f32>,
}

/// What the application reports about the last commit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoundReport {
    pub(crate) height: u64,
    pub(crate) updates: usize,
    pub(crate) samples: u64,
    pub(crate) mean_train_loss: f32,
    pub(crate) test: Option<(f32, f32)>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AppStats {
    pub(crate) proposals_judged: u64,
    pub(crate) proposals_refused: u64,
    pub(crate) updates_refused: u64,
}

/// The consensus application of a training run.
pub(crate) struct RoundApp {
    rules: TrainingRules,
    plan: Arc<DataPlan>,
    scorer: Trainer,
    /// Committed parameters after `height`.
    params: Arc<Vec<f32>>,
    param_hash: [u8; 32],
    height: u64,
    height_started: Instant,
    base_loss: Option<f32>,
    pool: BTreeMap<[u8; 32], Entry>,
    results: HashMap<[u8; 32], Arc<Vec<f32>>>,
    active_trainers: BTreeMap<Address, u64>,
    last_report: RoundReport,
    stats: AppStats,
}

impl std::fmt::Debug for RoundApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundApp")
            .field("height", &self.height)
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl RoundApp {
    /// The application holding `params`, committed at `height`.
    pub(crate) fn new(
        genesis: &Genesis,
        plan: Arc<DataPlan>,
        height: u64,
        params: Vec<f32>,
    ) -> anyhow::Result<Self> {
        let rules = genesis.training;
        let scorer = Trainer::with_params(&train_config(&rules), &params)?;
        let mut app = Self {
            rules,
            plan,
            scorer,
            param_hash: flat::param_hash(&params).0,
            params: Arc::new(params),
            height,
            height_started: Instant::now(),
            base_loss: None,
            pool: BTreeMap::new(),
            results: HashMap::new(),
            active_trainers: BTreeMap::new(),
            last_report: RoundReport::default(),
            stats: AppStats::default(),
        };
        app.last_report.height = height;
        app.last_report.test = app.evaluate_test();
        Ok(app)
    }

    pub(crate) fn height(&self) -> u64 {
        self.height
    }
    pub(crate) fn params(&self) -> &Arc<Vec<f32>> {
        &self.params
    }
    pub(crate) fn param_hash(&self) -> [u8; 32] {
        self.param_hash
    }
    pub(crate) fn plan(&self) -> &Arc<DataPlan> {
        &self.plan
    }
    pub(crate) fn rules(&self) -> TrainingRules {
        self.rules
    }
    pub(crate) fn last_report(&self) -> RoundReport {
        self.last_report
    }
    pub(crate) fn stats(&self) -> AppStats {
        self.stats
    }

    /// Whether an announcement is worth fetching: for the next height, on our parameters.
    pub(crate) fn wants(&self, update: &SignedUpdate) -> bool {
        update.header.height == self.height + 1 && update.header.base_param_hash == self.param_hash
    }

    /// Records an announcement (already signature-checked). Returns whether it is new.
    pub(crate) fn announce(&mut self, update: SignedUpdate) -> bool {
        if !self.wants(&update) {
            return false;
        }
        self.active_trainers
            .insert(update.header.trainer, update.header.height);
        let id = update.id();
        // One update per trainer per height, and a bounded pool: payloads are ~0.4 MB each,
        // so an unbounded pool would let a crowd of fresh keys exhaust memory.
        let trainer_has_one = self.pool.values().any(|e| {
            e.update.header.trainer == update.header.trainer
                && e.update.header.height == update.header.height
        });
        if self.pool.contains_key(&id) || trainer_has_one || self.pool.len() >= MAX_POOL {
            return false;
        }
        self.pool.insert(
            id,
            Entry {
                update,
                delta: None,
                score: None,
            },
        );
        true
    }

    /// The announcement with this id, if known.
    pub(crate) fn update(&self, id: &[u8; 32]) -> Option<&SignedUpdate> {
        self.pool.get(id).map(|e| &e.update)
    }

    /// Whether the payload of `id` is here.
    pub(crate) fn has_payload(&self, id: &[u8; 32]) -> bool {
        self.pool.get(id).is_some_and(|e| e.delta.is_some())
    }

    /// Attaches a fetched payload to its announcement; refuses one of the wrong size.
    pub(crate) fn add_payload(&mut self, id: &[u8; 32], delta: Vec<f32>) -> bool {
        let expected = self.params.len();
        match self.pool.get_mut(id) {
            Some(entry) if delta.len() == expected => {
                entry.delta = Some(Arc::new(delta));
                true
            }
            Some(_) => {
                warn!(id = %short(id), "payload has the wrong length; ignoring the update");
                self.stats.updates_refused += 1;
                self.pool.remove(id);
                false
            }
            None => false,
        }
    }

    fn evaluate_test(&mut self) -> Option<(f32, f32)> {
        self.scorer.set_params(&self.params).ok()?;
        let Evaluation { loss, accuracy, .. } = self.scorer.evaluate(&self.plan.test).ok()?;
        Some((loss, accuracy))
    }

    fn validation_loss(&mut self, params: &[f32]) -> Option<f32> {
        self.scorer.set_params(params).ok()?;
        self.scorer
            .evaluate(&self.plan.validation)
            .ok()
            .map(|e| e.loss)
    }

    /// Scores one update on the held-out validation examples; `false` if it is harmful.
    fn score(&mut self, id: &[u8; 32]) -> bool {
        let base_loss = match self.base_loss {
            Some(l) => l,
            None => {
                let params = self.params.clone();
                let Some(l) = self.validation_loss(&params) else {
                    return false;
                };
                self.base_loss = Some(l);
                l
            }
        };
        let Some(entry) = self.pool.get(id) else {
            return false;
        };
        let loss = match (entry.score, &entry.delta) {
            (Some(s), _) => s,
            (None, Some(delta)) => {
                let mut candidate = self.params.to_vec();
                if flat::apply_delta(&mut candidate, delta, 1.0).is_err() {
                    return false;
                }
                let loss = self.validation_loss(&candidate).unwrap_or(f32::NAN);
                if let Some(e) = self.pool.get_mut(id) {
                    e.score = Some(loss);
                }
                loss
            }
            (None, None) => return false,
        };
        let ok = loss.is_finite() && loss <= base_loss * HARM_FACTOR + HARM_SLACK;
        if !ok {
            debug!(id = %short(id), loss, base_loss, "update judged harmful");
        }
        ok
    }

    /// The parameters after the mean of the listed updates (all must be fetched).
    fn aggregate(&mut self, updates: &[IncludedUpdate]) -> Option<(Arc<Vec<f32>>, [u8; 32])> {
        let mut deltas = Vec::with_capacity(updates.len());
        let mut weights = Vec::with_capacity(updates.len());
        for u in updates {
            let entry = self.pool.get(&u.id)?;
            deltas.push(entry.delta.clone()?);
            weights.push(f64::from(entry.update.header.samples));
        }
        let slices: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
        let mean = flat::weighted_mean(&slices, &weights).ok()?;
        let mut next = self.params.to_vec();
        flat::apply_delta(&mut next, &mean, 1.0).ok()?;
        let hash = flat::param_hash(&next).0;
        let next = Arc::new(next);
        self.results.insert(hash, next.clone());
        Some((next, hash))
    }

    /// Applies a committed block. `false` means the payloads are missing and the parameters
    /// must come from a peer's checkpoint instead.
    pub(crate) fn on_commit(&mut self, block: &Block) -> bool {
        let proposal = &block.value.proposal;
        let target = proposal.result_param_hash;
        let next = match self.results.get(&target) {
            Some(p) => Some(p.clone()),
            None if proposal.base_param_hash == self.param_hash => {
                self.aggregate(&proposal.updates).map(|(p, _)| p)
            }
            None => None,
        };
        let Some(next) = next.filter(|p| flat::param_hash(p).0 == target) else {
            return false;
        };
        let (mut samples, mut loss) = (0u64, 0f64);
        for u in &proposal.updates {
            if let Some(e) = self.pool.get(&u.id) {
                samples += u64::from(e.update.header.samples);
                loss += f64::from(e.update.header.loss_after);
            }
        }
        let n = proposal.updates.len();
        self.set_committed(block.height.0, next);
        self.last_report = RoundReport {
            height: block.height.0,
            updates: n,
            samples,
            mean_train_loss: if n == 0 {
                f32::NAN
            } else {
                (loss / n as f64) as f32
            },
            test: self.evaluate_test(),
        };
        true
    }

    /// Adopts parameters committed at `height` (from a block or a verified checkpoint).
    pub(crate) fn set_committed(&mut self, height: u64, params: Arc<Vec<f32>>) {
        self.param_hash = flat::param_hash(&params).0;
        self.params = params;
        self.height = height;
        self.height_started = Instant::now();
        self.base_loss = None;
        self.results.clear();
        self.pool.retain(|_, e| e.update.header.height > height);
        self.active_trainers
            .retain(|_, last| *last + ACTIVE_HEIGHTS > height);
    }

    /// Adopts a verified checkpoint and refreshes the report.
    pub(crate) fn adopt_checkpoint(&mut self, height: u64, params: Arc<Vec<f32>>) {
        self.set_committed(height, params);
        self.last_report = RoundReport {
            height,
            test: self.evaluate_test(),
            ..RoundReport::default()
        };
    }

    fn deadline_passed(&self) -> bool {
        self.height_started.elapsed() >= Duration::from_millis(self.rules.round_deadline_ms)
    }
}

impl Application for RoundApp {
    fn propose(&mut self, height: Height, _round: Round, base: [u8; 32]) -> Option<RoundProposal> {
        if height.0 != self.height + 1 || base != self.param_hash {
            return None;
        }
        let ids: Vec<[u8; 32]> = self
            .pool
            .iter()
            .filter(|(_, e)| e.delta.is_some())
            .map(|(id, _)| *id)
            .collect();
        let mut updates: Vec<IncludedUpdate> = Vec::new();
        for id in ids {
            if self.score(&id) {
                if let Some(e) = self.pool.get(&id) {
                    updates.push(e.update.included());
                }
            } else {
                self.pool.remove(&id);
                self.stats.updates_refused += 1;
            }
        }
        let expected = self
            .active_trainers
            .len()
            .max(self.rules.min_updates as usize);
        let enough = updates.len() >= self.rules.min_updates as usize;
        if !enough || (updates.len() < expected && !self.deadline_passed()) {
            return None;
        }
        updates.sort();
        updates.truncate(MAX_UPDATES);
        let (_, result) = self.aggregate(&updates)?;
        Some(RoundProposal {
            base_param_hash: base,
            updates,
            aggregation_rule: tabswarm_consensus::genesis::AggregationRule::Mean,
            result_param_hash: result,
        })
    }

    fn validate(&mut self, height: Height, proposal: &RoundProposal) -> bool {
        self.stats.proposals_judged += 1;
        let ok = self.judge(height, proposal);
        if !ok {
            self.stats.proposals_refused += 1;
        }
        ok
    }
}

impl RoundApp {
    fn judge(&mut self, height: Height, proposal: &RoundProposal) -> bool {
        if height.0 != self.height + 1 || proposal.base_param_hash != self.param_hash {
            debug!("proposal on other parameters than ours");
            return false;
        }
        if proposal.updates.len() < self.rules.min_updates as usize {
            return false;
        }
        for u in &proposal.updates {
            let Some(entry) = self.pool.get(&u.id) else {
                debug!(id = %short(&u.id), "proposal names an update we do not have");
                return false;
            };
            if entry.update.header.trainer.0 != u.trainer || entry.update.header.height != height.0
            {
                return false;
            }
            if !self.score(&u.id) {
                return false;
            }
        }
        match self.aggregate(&proposal.updates) {
            Some((_, hash)) => hash == proposal.result_param_hash,
            None => false,
        }
    }
}

/// First bytes of an id, for logs.
pub(crate) fn short(id: &[u8; 32]) -> String {
    tabswarm_consensus::genesis::hex(&id[..4])
}
