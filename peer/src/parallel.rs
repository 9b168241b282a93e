//! One training job on several workers of one machine (a tab's Web Workers): synchronous
//! data parallelism. Every [`Replica`] starts from the job's parameters with a fresh optimizer
//! and walks the same batch order (the job's seed). At each step each computes the gradient
//! of its slice of the batch ([`Replica::gradient`]), the coordinator averages them by rows
//! ([`average`]) and every replica applies that average ([`Replica::apply`]). All replicas
//! stay identical and the update is the one-worker update up to float rounding: the network
//! sees one ordinary update, only sooner. One gradient per worker per step crosses each way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tabswarm_core::data::Batches;
use tabswarm_core::flat;
use tabswarm_core::train::{LocalUpdate, Trainer};

use crate::jobs::{DataPlan, Job, Output, train_config};

/// One replica's gradient for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceGradient {
    /// Examples in its slice (0: the batch had fewer examples than replicas).
    pub rows: u32,
    /// Mean loss over the slice.
    pub loss: f32,
    /// Mean gradient over the slice, flat (empty when `rows` is 0).
    pub grad: Vec<f32>,
}

/// One step's gradient for every replica: the row-weighted mean of the slices'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepGradient {
    /// Mean loss over the whole batch.
    pub loss: f32,
    /// Mean gradient over the whole batch.
    pub grad: Vec<f32>,
}

/// Averages the slices of one step, weighted by their rows (so the result is the gradient of
/// the mean loss over the whole batch). Fails on slices of different lengths or no rows.
pub fn average(slices: &[SliceGradient]) -> Result<StepGradient, String> {
    let full: Vec<&SliceGradient> = slices.iter().filter(|s| s.rows > 0).collect();
    let rows: u64 = full.iter().map(|s| u64::from(s.rows)).sum();
    let Some(first) = full.first() else {
        return Err("no replica had examples for this step".into());
    };
    let len = first.grad.len();
    if let Some(bad) = full.iter().find(|s| s.grad.len() != len) {
        return Err(format!(
            "replicas disagree on the model: gradients of {len} and {} values",
            bad.grad.len()
        ));
    }
    let mut grad = vec![0.0f64; len];
    let mut loss = 0.0f64;
    for s in &full {
        let w = f64::from(s.rows) / rows as f64;
        loss += w * f64::from(s.loss);
        for (g, x) in grad.iter_mut().zip(&s.grad) {
            *g += w * f64::from(*x);
        }
    }
    Ok(StepGradient {
        loss: loss as f32,
        grad: grad.into_iter().map(|g| g as f32).collect(),
    })
}

/// One worker's copy of a training job split `parts` ways.
#[derive(Debug)]
pub struct Replica {
    height: u64,
    trainer: Trainer,
    batches: Batches,
    before: Arc<Vec<f32>>,
    part: usize,
    parts: usize,
    steps_left: usize,
    samples: usize,
    first_loss: Option<f32>,
    last_loss: f32,
}

impl Replica {
    /// Replica `part` (of `parts`) of the training job `job`.
    pub fn new(plan: &DataPlan, job: Job, part: usize, parts: usize) -> Result<Self, String> {
        let Job::Train {
            height,
            params,
            shard,
            seed,
        } = job
        else {
            return Err("only training jobs split across workers".into());
        };
        if parts == 0 || part >= parts {
            return Err(format!("replica {part} of {parts} does not exist"));
        }
        let config = train_config(plan.rules());
        let trainer = Trainer::with_params(&config, &params).map_err(|e| e.to_string())?;
        Ok(Self {
            height,
            trainer,
            batches: Batches::new(plan.shard(shard), config.batch_size, seed),
            before: params,
            part,
            parts,
            steps_left: plan.rules().local_steps as usize,
            samples: 0,
            first_loss: None,
            last_loss: f32::NAN,
        })
    }

    /// Steps still to take.
    pub fn steps_left(&self) -> usize {
        self.steps_left
    }

    /// This replica's gradient on its slice of the next batch.
    pub fn gradient(&mut self) -> Result<SliceGradient, String> {
        if self.steps_left == 0 {
            return Err("every step is taken".into());
        }
        let batch = self.batches.next_batch();
        let n = batch.len();
        self.samples += n;
        let slice = batch.slice(n * self.part / self.parts..n * (self.part + 1) / self.parts);
        if slice.is_empty() {
            return Ok(SliceGradient {
                rows: 0,
                loss: f32::NAN,
                grad: Vec::new(),
            });
        }
        let (loss, grad) = self.trainer.gradient(&slice).map_err(|e| e.to_string())?;
        Ok(SliceGradient {
            rows: slice.len() as u32,
            loss,
            grad,
        })
    }

    /// Takes the step every replica takes.
    pub fn apply(&mut self, step: &StepGradient) -> Result<(), String> {
        self.trainer
            .apply_gradient(&step.grad)
            .map_err(|e| e.to_string())?;
        self.first_loss.get_or_insert(step.loss);
        self.last_loss = step.loss;
        self.steps_left = self.steps_left.saturating_sub(1);
        Ok(())
    }

    /// The update, once every step is taken (any replica's: they are identical).
    pub fn finish(self) -> Output {
        let result = if self.steps_left > 0 {
            Err(format!("{} steps were never taken", self.steps_left))
        } else {
            Ok(LocalUpdate {
                delta: flat::difference(self.trainer.params(), &self.before).unwrap_or_default(),
                base: flat::param_hash(&self.before),
                samples: self.samples,
                loss_before: self.first_loss.unwrap_or(f32::NAN),
                loss_after: self.last_loss,
            })
        };
        Output::Trained {
            height: self.height,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use tabswarm_consensus::genesis::TrainingRules;
    use tabswarm_core::data::Dataset;
    use tabswarm_core::rng::SeededRng;

    use super::*;
    use crate::jobs::{initial_params, run};

    fn rules() -> TrainingRules {
        TrainingRules {
            local_steps: 4,
            batch_size: 16,
            shards: 4,
            ..TrainingRules::default()
        }
    }

    /// Noisy bands, one row band per class: enough to give real gradients.
    fn plan(rules: &TrainingRules) -> DataPlan {
        let n = 1200;
        let mut rng = SeededRng::new(3, "parallel-tests");
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels = labels
            .iter()
            .flat_map(|&c| (0..784).map(move |p| (p / 28 / 3 == usize::from(c), p)))
            .map(|(band, _)| if band { 200 } else { rng.below(64) as u8 })
            .collect();
        let data = Dataset::from_parts(28, 28, 10, labels, pixels).unwrap();
        DataPlan::new(&data, rules).unwrap()
    }

    fn job(rules: &TrainingRules) -> Job {
        Job::Train {
            height: 5,
            params: Arc::new(initial_params(rules).unwrap()),
            shard: 1,
            seed: 42,
        }
    }

    fn update(out: Output) -> LocalUpdate {
        match out {
            Output::Trained { result, .. } => result.unwrap(),
            other => panic!("not a training output: {other:?}"),
        }
    }

    /// Runs `parts` replicas in lock step, as a tab's page does with its workers.
    fn run_split(plan: &DataPlan, job: &Job, parts: usize) -> Vec<LocalUpdate> {
        let mut replicas: Vec<Replica> = (0..parts)
            .map(|p| Replica::new(plan, job.clone(), p, parts).unwrap())
            .collect();
        while replicas[0].steps_left() > 0 {
            let slices: Vec<SliceGradient> =
                replicas.iter_mut().map(|r| r.gradient().unwrap()).collect();
            let step = average(&slices).unwrap();
            for r in &mut replicas {
                r.apply(&step).unwrap();
            }
        }
        replicas.into_iter().map(|r| update(r.finish())).collect()
    }

    #[test]
    fn one_replica_is_the_single_worker_job_bit_for_bit() {
        let rules = rules();
        let plan = plan(&rules);
        let single = update(run(&plan, job(&rules)));
        let split = run_split(&plan, &job(&rules), 1).remove(0);
        assert_eq!(split.delta, single.delta);
        assert_eq!(split.samples, single.samples);
        assert_eq!(split.loss_before, single.loss_before);
        assert_eq!(split.base, single.base);
    }

    #[test]
    fn replicas_agree_and_give_the_single_worker_update_up_to_rounding() {
        let rules = rules();
        let plan = plan(&rules);
        let single = update(run(&plan, job(&rules)));
        // 3 does not divide the batch of 16: slices of 5, 5 and 6 examples.
        let split = run_split(&plan, &job(&rules), 3);
        for other in &split[1..] {
            assert_eq!(other.delta, split[0].delta, "replicas drifted apart");
        }
        let u = &split[0];
        assert_eq!(u.samples, single.samples, "every example is counted once");
        let scale = single.delta.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "no training happened");
        let worst = u
            .delta
            .iter()
            .zip(&single.delta)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-3 * scale,
            "off by {worst} (largest change {scale})"
        );
        assert!((u.loss_before - single.loss_before).abs() < 1e-4);
    }

    #[test]
    fn more_replicas_than_examples_still_take_every_step() {
        let rules = rules();
        let plan = plan(&rules);
        let single = update(run(&plan, job(&rules)));
        let split = run_split(&plan, &job(&rules), 20);
        assert_eq!(split[0].samples, single.samples);
        assert!(split[0].loss_after.is_finite());
    }

    #[test]
    fn mismatched_or_empty_steps_are_refused() {
        let slice = |rows, n| SliceGradient {
            rows,
            loss: 1.0,
            grad: vec![1.0; n],
        };
        assert!(average(&[slice(4, 3), slice(4, 2)]).is_err());
        assert!(average(&[slice(0, 0)]).is_err());
        let step = average(&[slice(1, 2), slice(3, 2), slice(0, 0)]).unwrap();
        assert_eq!(step.grad, vec![1.0, 1.0]);
        let rules = rules();
        let plan = plan(&rules);
        let mut r = Replica::new(&plan, job(&rules), 0, 2).unwrap();
        assert!(
            r.apply(&StepGradient {
                loss: 0.0,
                grad: vec![0.0; 3]
            })
            .is_err()
        );
        assert!(Replica::new(&plan, job(&rules), 2, 2).is_err());
        let test = Job::Test {
            height: 1,
            params: Arc::new(vec![]),
        };
        assert!(Replica::new(&plan, test, 0, 1).is_err());
        assert!(matches!(r.finish(), Output::Trained { result: Err(_), .. }));
    }
}
