//! Lock-step rounds: real trainers and one validator running the round protocol height by
//! height, with no network in between, to measure what an aggregation rule and the
//! validators' scores let hostile trainers do to a real model.
//!
//! Each height, every trainer runs the shipped training job ([`jobs::run`]) on the shard the
//! protocol assigns it, the hostile ones craft their update ([`Threat`]), and every update is
//! signed, wrapped as a payload and announced to a [`RoundApp`], the validator's application
//! that every driver ships: it scores each update and each aggregate on its secret draw of the
//! validation pool, drops what fails the harm lines, and proposes under the genesis rule. The
//! proposal is committed as is. This is the robust-aggregation literature's setting (every
//! update of a round arrives; the attacker is omniscient), on our protocol's rules: what
//! [`crate::peers::PeerSim`] adds (latency, loss, consensus) changes when an update arrives,
//! not what is accepted.

mod threat;

use std::sync::Arc;

use malachitebft_core_types::Round;
use tabswarm_consensus::context::{Height, Value, ValueId};
use tabswarm_consensus::genesis::{AggregationRule, Genesis};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::ledger::{Block, CommitCert};
use tabswarm_consensus::node::Application;
use tabswarm_consensus::testkit;
use tabswarm_core::data::Dataset;
use tabswarm_core::train::LocalUpdate;
use tabswarm_peer::jobs::{self, DataPlan, Job, Output};
use tabswarm_peer::payload;
use tabswarm_peer::round::{EMPTY_FROM_ROUND, RoundApp, combine};

pub use threat::{LINE_MARGIN, Probe, Threat, alie_z, flip_labels};

/// One lock-step run.
#[derive(Clone, Copy, Debug)]
pub struct RoundsConfig {
    /// The genesis rule.
    pub rule: AggregationRule,
    /// Trainers, honest and hostile.
    pub trainers: usize,
    /// How many of them are hostile (the last ones).
    pub hostile: usize,
    /// What the hostile ones do.
    pub threat: Threat,
    /// Heights to commit.
    pub heights: u64,
    /// Test the committed model every this many heights (and at the last).
    pub test_every: u64,
    /// Whether the validator scores (the protocol). `false` measures the rule alone, as the
    /// robust-aggregation literature does: every update of the height is aggregated.
    pub scoring: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundsReport {
    /// `(height, test loss, test accuracy)` at every tested height, the last one included.
    pub curve: Vec<(u64, f32, f32)>,
    /// Hostile updates that reached a block.
    pub hostile_included: u64,
    /// Honest updates that reached a block.
    pub honest_included: u64,
    /// Updates the validator refused alone (over the per-update harm line).
    pub updates_refused: u64,
    /// Aggregates over the harm budget (each cost the proposer its worst update).
    pub aggregates_refused: u64,
    /// Heights committed with no update.
    pub empty_heights: u64,
}

impl RoundsReport {
    /// Test accuracy at the last height.
    pub fn accuracy(&self) -> f32 {
        self.curve.last().map_or(f32::NAN, |c| c.2)
    }
}

/// The data both kinds of trainer train on: the run's plan and, for label flippers, the
/// same plan with mirrored labels.
#[derive(Debug)]
pub struct RoundsData {
    honest: DataPlan,
    flipped: DataPlan,
}

impl RoundsData {
    /// Cuts `dataset` by `rules` (see [`DataPlan::new`]) twice, the second time with flipped
    /// labels: the same examples in the same shards.
    pub fn new(
        dataset: &Dataset,
        rules: &tabswarm_consensus::genesis::TrainingRules,
    ) -> Result<Self, String> {
        let plan = |d: &Dataset| DataPlan::new(d, rules).map_err(|e| e.to_string());
        Ok(Self {
            honest: plan(dataset)?,
            flipped: plan(&flip_labels(dataset))?,
        })
    }
}

/// Most proposal attempts per height: each refused aggregate costs one (the proposer drops
/// its worst update and asks for a new score), plus the scoring of the updates.
const MAX_ATTEMPTS: usize = 2 * tabswarm_peer::round::MAX_INCLUDED + 4;

/// Runs `config` on `data` and reports what was committed and what the model became.
pub fn run(data: &RoundsData, config: &RoundsConfig) -> Result<RoundsReport, String> {
    let mut run = Lockstep::new(data, config)?;
    for height in 1..=config.heights {
        let deltas = run.train(height)?;
        run.params = if config.scoring {
            run.propose_and_commit(height, &deltas)?
        } else {
            run.combine_alone(height, &deltas)?
        };
        run.test(height)?;
    }
    let stats = run.app.stats();
    run.report.updates_refused = stats.updates_refused;
    run.report.aggregates_refused = stats.aggregates_refused;
    Ok(run.report)
}

/// One run's state between heights.
struct Lockstep<'a> {
    data: &'a RoundsData,
    config: &'a RoundsConfig,
    rules: tabswarm_consensus::genesis::TrainingRules,
    genesis: Genesis,
    run_id: tabswarm_consensus::genesis::RunId,
    /// The committed parameters (the app's under the protocol; the app is idle for the rule
    /// alone).
    params: Arc<Vec<f32>>,
    app: RoundApp,
    trainers: Vec<Keypair>,
    honest_count: usize,
    now: u64,
    report: RoundsReport,
}

impl<'a> Lockstep<'a> {
    fn new(data: &'a RoundsData, config: &'a RoundsConfig) -> Result<Self, String> {
        let rules = *data.honest.rules();
        let validator = testkit::key(0);
        let genesis = crate::peers::genesis(&[1], rules, config.rule)?;
        let params = jobs::initial_params(&rules).map_err(|e| e.to_string())?;
        let mut app = RoundApp::new(&genesis, 0, params.clone(), 0);
        app.set_draw_secret(jobs::draw_secret(&validator.seed()));
        Ok(Self {
            data,
            config,
            rules,
            run_id: genesis.run_id(),
            genesis,
            params: Arc::new(params),
            app,
            trainers: (0..config.trainers)
                .map(|i| testkit::key(1_000 + i as u32))
                .collect(),
            honest_count: config.trainers.saturating_sub(config.hostile),
            now: 0,
            report: RoundsReport::default(),
        })
    }

    /// Every trainer's update for `height` from the committed parameters: the honest ones
    /// first, as trained, then the hostile ones as their threat crafts them.
    fn train(&self, height: u64) -> Result<Vec<LocalUpdate>, String> {
        let base = &self.params;
        let mut updates = Vec::with_capacity(self.trainers.len());
        for (i, key) in self.trainers.iter().enumerate() {
            let plan = match (i >= self.honest_count, self.config.threat) {
                (true, Threat::LabelFlip) => &self.data.flipped,
                _ => &self.data.honest,
            };
            let job = Job::Train {
                height,
                params: base.clone(),
                shard: self.shard(height, key),
                seed: jobs::train_seed(&key.address(), height),
            };
            match jobs::run(plan, job) {
                Output::Trained { result: Ok(u), .. } => updates.push(u),
                other => return Err(format!("trainer {i} at height {height}: {other:?}")),
            }
        }
        let (honest, hostile) = updates.split_at(self.honest_count);
        let honest_deltas: Vec<&[f32]> = honest.iter().map(|u| u.delta.as_slice()).collect();
        let mut crafted = Vec::with_capacity(hostile.len());
        for (key, u) in self.trainers[self.honest_count..].iter().zip(hostile) {
            let mut probe = OwnShard::new(
                &self.rules,
                base,
                &self.data.honest,
                self.shard(height, key),
            );
            crafted.push(self.config.threat.craft(
                &u.delta,
                &honest_deltas,
                (self.config.trainers, self.config.hostile),
                jobs::train_seed(&key.address(), height),
                &mut probe,
            ));
        }
        for (u, delta) in updates[self.honest_count..].iter_mut().zip(crafted) {
            u.delta = delta;
        }
        Ok(updates)
    }

    fn shard(&self, height: u64, key: &Keypair) -> usize {
        DataPlan::shard_for(self.rules.shards, &self.run_id, height, &key.address())
    }

    /// The rule alone: every update combined, nothing scored.
    fn combine_alone(
        &mut self,
        height: u64,
        updates: &[LocalUpdate],
    ) -> Result<Arc<Vec<f32>>, String> {
        let deltas: Vec<&[f32]> = updates.iter().map(|u| u.delta.as_slice()).collect();
        let combined = combine(self.config.rule, &deltas, jobs::update_weight(&self.rules))
            .ok_or_else(|| format!("height {height}: the rule refused the updates"))?;
        let mut next = self.params.to_vec();
        tabswarm_core::flat::apply_delta(&mut next, &combined, 1.0).map_err(|e| e.to_string())?;
        self.report.honest_included += self.honest_count as u64;
        self.report.hostile_included += self.config.hostile as u64;
        Ok(Arc::new(next))
    }

    /// The protocol: every update signed, wrapped, announced and fetched; the validator's
    /// proposal committed.
    fn propose_and_commit(
        &mut self,
        height: u64,
        updates: &[LocalUpdate],
    ) -> Result<Arc<Vec<f32>>, String> {
        let mut ids = Vec::with_capacity(updates.len());
        for (i, u) in updates.iter().enumerate() {
            ids.push(self.announce(height, i, u)?);
        }
        // Every update is in; the proposer need not wait for anyone.
        self.now += self.rules.round_deadline_ms;
        self.app.set_now(self.now);
        let proposal = propose(&mut self.app, &self.data.honest, height)
            .ok_or_else(|| format!("no proposal at height {height}"))?;
        for u in &proposal.updates {
            match ids.iter().position(|id| *id == u.id) {
                Some(i) if i >= self.honest_count => self.report.hostile_included += 1,
                Some(_) => self.report.honest_included += 1,
                None => {
                    return Err(format!(
                        "height {height}: a proposal names an unknown update"
                    ));
                }
            }
        }
        if proposal.updates.is_empty() {
            self.report.empty_heights += 1;
        }
        if !self.app.on_commit(&block(height, proposal)) {
            return Err(format!(
                "height {height}: the proposal's result could not be applied"
            ));
        }
        Ok(self.app.params().clone())
    }

    /// Trainer `i`'s update as the validator meets it: signed, its payload decoded from the
    /// bytes a fetch would bring. Returns its id.
    fn announce(&mut self, height: u64, i: usize, u: &LocalUpdate) -> Result<[u8; 32], String> {
        let key = &self.trainers[i];
        let (signed, blob, _) =
            payload::Encoder::default().sign(key, &self.run_id, &self.genesis, height, u);
        let id = signed.id();
        self.app
            .announce(signed, i as u64)
            .map_err(|e| format!("trainer {i}'s update at height {height}: {e:?}"))?;
        let decoded = payload::decode(
            &blob.bytes,
            &key.address(),
            self.genesis.compression,
            u.delta.len(),
        )
        .map_err(|e| e.to_string())?;
        self.app.add_payload(&id, decoded);
        Ok(id)
    }

    /// Tests the parameters committed at `height`, if the schedule says so.
    fn test(&mut self, height: u64) -> Result<(), String> {
        let config = self.config;
        if !height.is_multiple_of(config.test_every.max(1)) && height != config.heights {
            return Ok(());
        }
        let params = self.params.clone();
        match jobs::run(&self.data.honest, Job::Test { height, params }) {
            Output::Tested {
                result: Some((loss, accuracy)),
                ..
            } => {
                self.report.curve.push((height, loss, accuracy));
                Ok(())
            }
            other => Err(format!("test at height {height}: {other:?}")),
        }
    }
}

/// Examples of its own shard an attacker measures a candidate update on.
const PROBE_EXAMPLES: usize = 1_000;

/// A hostile trainer's loss estimate: the loss of `base + delta` on the first
/// [`PROBE_EXAMPLES`] of the shard it trained on this height (it has no other data). Only
/// threats that measure ask, so the examples are cut on the first question.
struct OwnShard<'a> {
    rules: &'a tabswarm_consensus::genesis::TrainingRules,
    base: &'a [f32],
    plan: &'a DataPlan,
    shard: usize,
    data: Option<Dataset>,
}

impl<'a> OwnShard<'a> {
    fn new(
        rules: &'a tabswarm_consensus::genesis::TrainingRules,
        base: &'a [f32],
        plan: &'a DataPlan,
        shard: usize,
    ) -> Self {
        Self {
            rules,
            base,
            plan,
            shard,
            data: None,
        }
    }
}

impl Probe for OwnShard<'_> {
    fn loss_with(&mut self, delta: &[f32]) -> Option<f32> {
        let data = self.data.get_or_insert_with(|| {
            let all = self.plan.shard(self.shard);
            let take: Vec<usize> = (0..all.len().min(PROBE_EXAMPLES)).collect();
            all.subset(&take)
        });
        let mut params = self.base.to_vec();
        tabswarm_core::flat::apply_delta(&mut params, delta, 1.0).ok()?;
        let config = jobs::train_config(self.rules);
        let trainer = tabswarm_core::train::Trainer::with_params(&config, &params).ok()?;
        trainer
            .evaluate(data)
            .ok()
            .map(|e| e.loss)
            .filter(|l| l.is_finite())
    }
}

/// The validator's proposal for `height`, answering the scores it asks for as a driver would;
/// from [`EMPTY_FROM_ROUND`] on an empty one if no update fits.
fn propose(
    app: &mut RoundApp,
    plan: &DataPlan,
    height: u64,
) -> Option<tabswarm_consensus::context::RoundProposal> {
    let base = app.param_hash();
    for round in [0, EMPTY_FROM_ROUND] {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(p) = app.propose(Height(height), Round::new(round as u32), base) {
                return Some(p);
            }
            let jobs = app.take_jobs();
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                // Tests of the app's own are not needed: the run tests on its own schedule.
                if let Job::Validate { .. } = job
                    && let Output::Validated { key, draw, loss } = jobs::run(plan, job)
                {
                    app.on_score(key, draw, loss);
                }
            }
        }
    }
    None
}

/// A block committing `proposal` at `height` (lock-step runs need no certificate).
fn block(height: u64, proposal: tabswarm_consensus::context::RoundProposal) -> Block {
    Block {
        height: Height(height),
        parent: [0; 32],
        value: Value {
            proposal,
            evidence: vec![],
        },
        certificate: CommitCert {
            height: Height(height),
            round: Round::new(0),
            value_id: ValueId([0; 32]),
            signatures: vec![],
        },
        credits: vec![],
    }
}
