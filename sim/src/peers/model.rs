//! What a simulated peer's jobs compute and how long they take.
//!
//! Two models, both deterministic:
//!
//! - [`JobModel::Real`]: the jobs that ship ([`tabswarm_peer::jobs::run`]), burn and all, on a
//!   small synthetic image set ([`synthetic_dataset`]). Learning is real; each job costs
//!   milliseconds of host time, so a few peers over a few dozen heights.
//! - [`JobModel::Quadratic`]: a cost model for large networks. The parameters are the run's
//!   real parameter vector, but the loss is a quadratic bowl: validation loss is
//!   `mean((p - t)^2)` for a target `t` drawn from the seed, and shard `s` trains towards its
//!   own target `t_s = t + noise_s` (so shards disagree, as real non-IID shards do). `k` local
//!   steps of gradient descent with rate `eta` move `p` to `t_s + (1 - eta)^k (p - t_s)`.
//!   Updates, hashes, aggregation and the harm checks all run on real vectors; only the
//!   forward and backward passes are replaced. Host cost: a few vector passes per job.
//!
//! Either way a job's **virtual** duration comes from [`Cost`], so the same schedule runs
//! whichever model computes the numbers.

use std::sync::Arc;

use tabswarm_consensus::genesis::TrainingRules;
use tabswarm_core::data::Dataset;
use tabswarm_core::flat;
use tabswarm_core::rng::SeededRng;
use tabswarm_core::train::LocalUpdate;
use tabswarm_peer::jobs::{self, DataPlan, Job, Output};

/// Virtual time a job takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Training, per example seen (local steps x batch size examples per job).
    pub train_ms_per_example: f64,
    /// One validation loss (an update, an aggregate or the base).
    pub validate_ms: u64,
    /// One test evaluation.
    pub test_ms: u64,
}

impl Default for Cost {
    /// About a small MLP on one laptop core.
    fn default() -> Self {
        Self {
            train_ms_per_example: 0.3,
            validate_ms: 20,
            test_ms: 20,
        }
    }
}

impl Cost {
    /// Virtual milliseconds `job` takes under `rules`.
    pub fn of(&self, job: &Job, rules: &TrainingRules) -> u64 {
        match job {
            Job::Train { .. } => {
                let examples = f64::from(jobs::update_weight(rules));
                (examples * self.train_ms_per_example).ceil().max(1.0) as u64
            }
            Job::Validate { .. } => self.validate_ms.max(1),
            Job::Test { .. } => self.test_ms.max(1),
        }
    }
}

/// How jobs are computed.
#[derive(Clone, Debug)]
pub enum JobModel {
    /// The shipped jobs on this data.
    Real(Arc<DataPlan>),
    /// The quadratic cost model.
    Quadratic(Arc<Quadratic>),
}

impl JobModel {
    /// The shipped jobs on [`synthetic_dataset`], cut by `rules`.
    pub fn real(rules: &TrainingRules) -> Result<Self, String> {
        DataPlan::new(&synthetic_dataset(), rules)
            .map(|p| Self::Real(Arc::new(p)))
            .map_err(|e| e.to_string())
    }

    /// The quadratic model for `rules`' parameter vector.
    pub fn quadratic(rules: &TrainingRules, seed: u64) -> Result<Self, String> {
        let initial = jobs::initial_params(rules).map_err(|e| e.to_string())?;
        Ok(Self::Quadratic(Arc::new(Quadratic::new(
            initial.len(),
            rules.shards.max(1) as usize,
            seed,
        ))))
    }

    /// Computes `job`.
    pub fn run(&self, job: Job, rules: &TrainingRules) -> Output {
        match self {
            Self::Real(plan) => jobs::run(plan, job),
            Self::Quadratic(q) => q.run(job, rules),
        }
    }
}

/// The quadratic bowl (see the module docs).
#[derive(Debug)]
pub struct Quadratic {
    target: Vec<f32>,
    shard_targets: Vec<Vec<f32>>,
    /// Gradient step of one local step.
    pub eta: f32,
    /// Validation loss of the zero vector: the reference of the accuracy proxy.
    scale: f32,
}

impl Quadratic {
    /// A bowl over `len` parameters with `shards` shard targets.
    pub fn new(len: usize, shards: usize, seed: u64) -> Self {
        let mut rng = SeededRng::new(seed, "tabswarm-sim/quadratic");
        let target: Vec<f32> = (0..len).map(|_| rng.uniform(0.5)).collect();
        let shard_targets = (0..shards)
            .map(|_| target.iter().map(|t| t + rng.uniform(0.1)).collect())
            .collect();
        let scale = mean_sq(&vec![0.0; len], &target).max(f32::MIN_POSITIVE);
        Self {
            target,
            shard_targets,
            eta: 0.1,
            scale,
        }
    }

    /// Validation loss of `params`.
    pub fn loss(&self, params: &[f32]) -> f32 {
        mean_sq(params, &self.target)
    }

    fn run(&self, job: Job, rules: &TrainingRules) -> Output {
        match job {
            Job::Train {
                height,
                params,
                shard,
                seed,
            } => {
                let t = &self.shard_targets[shard % self.shard_targets.len()];
                let keep = (1.0 - self.eta).powi(rules.local_steps as i32);
                // Batch order moves a real step a little: two trainers on one shard do not
                // send one delta (a copy, to validators).
                let noise = 1.0 + SeededRng::new(seed, "tabswarm-sim/batch-order").uniform(0.01);
                let delta: Vec<f32> = params
                    .iter()
                    .zip(t)
                    .map(|(p, t)| (1.0 - keep) * noise * (t - p))
                    .collect();
                let after: Vec<f32> = params.iter().zip(&delta).map(|(p, d)| p + d).collect();
                Output::Trained {
                    height,
                    result: Ok(LocalUpdate {
                        base: flat::param_hash(&params),
                        samples: jobs::update_weight(rules) as usize,
                        loss_before: mean_sq(&params, t),
                        loss_after: mean_sq(&after, t),
                        delta,
                    }),
                }
            }
            // The cost model has no examples to draw: every draw sees the same loss.
            Job::Validate { key, params, draw } => Output::Validated {
                key,
                draw,
                loss: Some(self.loss(&params)).filter(|l| l.is_finite()),
            },
            Job::Test { height, params } => {
                // "Accuracy" here is the share of the zero vector's error removed: it rises
                // as the model approaches the target, like a real accuracy.
                let loss = self.loss(&params);
                let accuracy = (1.0 - loss / self.scale).clamp(0.0, 1.0);
                Output::Tested {
                    height,
                    result: Some((loss, accuracy)).filter(|(l, _)| l.is_finite()),
                }
            }
        }
    }
}

fn mean_sq(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y) * f64::from(x - y))
        .sum();
    (sum / a.len().max(1) as f64) as f32
}

/// 1,200 28x28 images in 10 classes, each class a bright band at its own rows plus noise:
/// learnable in a few steps, so loss falls visibly with the real model.
pub fn synthetic_dataset() -> Dataset {
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
    // The shape is fixed above, so this cannot fail.
    Dataset::from_parts(28, 28, 10, labels, pixels).unwrap_or_else(|e| unreachable!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadratic_training_lowers_the_validation_loss_and_shards_disagree() {
        let q = Quadratic::new(1000, 4, 1);
        let rules = TrainingRules {
            local_steps: 4,
            ..TrainingRules::default()
        };
        let params = Arc::new(vec![0.0f32; 1000]);
        let train = |shard| match q.run(
            Job::Train {
                height: 1,
                params: params.clone(),
                shard,
                seed: 0,
            },
            &rules,
        ) {
            Output::Trained { result: Ok(u), .. } => u,
            other => panic!("{other:?}"),
        };
        let (a, b) = (train(0), train(1));
        assert!(a.loss_after < a.loss_before);
        assert_ne!(a.delta, b.delta);
        let mut after = params.to_vec();
        flat::apply_delta(&mut after, &a.delta, 1.0).unwrap();
        assert!(q.loss(&after) < q.loss(&params));
    }
}
