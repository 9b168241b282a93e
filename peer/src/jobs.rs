//! Work too heavy for the event loop: local training, scoring on validation data, evaluation
//! on test data. The peer asks for a job with [`crate::Effect::Run`]; the driver runs it off
//! its loop (a blocking pool natively, a Web Worker in a tab) with [`run`] and feeds the
//! [`Output`] back as [`crate::Input::JobDone`]. Votes and timers never wait behind a CNN.
//!
//! What a job computes is fixed here (which shard, which seed, which examples), so every
//! driver computes the same thing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tabswarm_consensus::genesis::{LocalOptimizer, ModelArch, RunId, TrainingRules};
use tabswarm_consensus::identity::Address;
use tabswarm_core::Backend;
use tabswarm_core::data::{Batches, Dataset, Split};
use tabswarm_core::model::ModelKind;
use tabswarm_core::rng::SeededRng;
use tabswarm_core::train::{Config, Evaluation, LocalUpdate, Optimizer, TrainError, Trainer};

/// Examples held out of the training shards to score updates on (the validation pool).
pub const VALIDATION_POOL: usize = 2_000;

/// Examples of the pool each score is computed on: drawn afresh at every height
/// ([`validation_draw`]), so no trainer can tune an update to a fixed set.
pub const VALIDATION_EXAMPLES: usize = 500;

/// What a validation score is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScoreKey {
    /// The committed parameters with this hash (the base every update is judged against).
    Base([u8; 32]),
    /// One update applied alone to the base, by update id.
    Update([u8; 32]),
    /// An aggregate's resulting parameters, by their hash.
    Aggregate([u8; 32]),
}

/// A job for the driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Local steps from `params` on the trainer's shard for `height`.
    Train {
        /// Height the update is for.
        height: u64,
        /// Committed parameters to start from.
        #[serde(with = "shared_f32s")]
        params: Arc<Vec<f32>>,
        /// Shard index (see [`DataPlan::shard_for`]).
        shard: usize,
        /// Batch order seed.
        seed: u64,
    },
    /// Validation loss of `params` on the examples `draw` picks from the pool.
    Validate {
        /// What the loss is for.
        key: ScoreKey,
        /// Parameters to evaluate.
        #[serde(with = "shared_f32s")]
        params: Arc<Vec<f32>>,
        /// The height's draw of validation examples ([`validation_draw`]).
        draw: u64,
    },
    /// Test loss and accuracy of the parameters committed at `height`.
    Test {
        /// Height the parameters were committed at.
        height: u64,
        /// Parameters to evaluate.
        #[serde(with = "shared_f32s")]
        params: Arc<Vec<f32>>,
    },
}

/// A finished job.
#[derive(Debug, Serialize, Deserialize)]
pub enum Output {
    /// Local training finished (or failed).
    Trained {
        /// Height the update is for.
        height: u64,
        /// The update, or why training failed.
        result: Result<LocalUpdate, String>,
    },
    /// A validation loss (`None`: the parameters could not be evaluated, e.g. NaN).
    Validated {
        /// What it is for.
        key: ScoreKey,
        /// The draw of validation examples it was computed on.
        draw: u64,
        /// The loss.
        loss: Option<f32>,
    },
    /// A test evaluation.
    Tested {
        /// Height of the parameters.
        height: u64,
        /// Loss and accuracy.
        result: Option<(f32, f32)>,
    },
}

/// Shared parameter vectors cross a worker boundary as plain lists (serde's `rc` feature
/// would change serde for every crate of the workspace, and rebuild them all).
mod shared_f32s {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Arc<Vec<f32>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<f32>>, D::Error> {
        Vec::<f32>::deserialize(d).map(Arc::new)
    }
}

/// Version of the job codec ([`encode`], [`decode`]).
pub const JOB_FORMAT: u8 = 2;

/// The largest encoded job or output: parameters or a delta of the largest model with room
/// to spare (the CNN has about 1.2 M parameters, 5 MB).
pub const MAX_JOB_BYTES: usize = 64 << 20;

/// Why a job or output could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Longer than [`MAX_JOB_BYTES`].
    #[error("{0} bytes is more than a job may have ({MAX_JOB_BYTES})")]
    TooLarge(usize),
    /// Another version of the codec (a worker from an older page still running?).
    #[error("job format {0} is not {JOB_FORMAT}: reload the page so the workers match it")]
    Version(u8),
    /// Not a job.
    #[error("not a job: {0}")]
    Malformed(String),
}

/// Encodes a job or an output for a worker that runs in another memory (a Web Worker):
/// a version byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![JOB_FORMAT];
    // postcard cannot fail on these types (no maps with non-string keys, no unsized data).
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

/// Decodes what [`encode`] made, refusing other versions and oversized input.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_JOB_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    match bytes.split_first() {
        Some((&JOB_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| CodecError::Malformed(e.to_string()))
        }
        Some((&v, _)) => Err(CodecError::Version(v)),
        None => Err(CodecError::Malformed("empty".into())),
    }
}

/// The local training config a run's rules imply.
pub fn train_config(rules: &TrainingRules) -> Config {
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
pub fn initial_params(rules: &TrainingRules) -> Result<Vec<f32>, TrainError> {
    Ok(Trainer::new(&train_config(rules))?.params().to_vec())
}

/// The weight every update has in the mean: the examples the rules make a trainer see.
pub fn update_weight(rules: &TrainingRules) -> u32 {
    rules.local_steps.saturating_mul(rules.batch_size)
}

/// The data a peer trains and scores on, cut as the run's rules say.
#[derive(Debug)]
pub struct DataPlan {
    rules: TrainingRules,
    shards: Vec<Arc<Dataset>>,
    validation: Dataset,
    test: Arc<Dataset>,
}

/// Why the data cannot serve a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

impl DataPlan {
    /// Cuts the training digits into a held-out validation set and `rules.shards` shards (a
    /// seeded permutation first, so shards are not sorted by class).
    pub fn new(dataset: &Dataset, rules: &TrainingRules) -> Result<Self, PlanError> {
        let split = Split::mnist(dataset);
        let mut order: Vec<usize> = (0..split.train.len()).collect();
        SeededRng::new(rules.seed, "tabswarm/shards").shuffle(&mut order);
        let (validation, rest) = order.split_at(VALIDATION_POOL.min(order.len() / 2));
        let shards = rules.shards as usize;
        if rest.len() < shards {
            return Err(PlanError(format!(
                "{} training examples cannot fill {shards} shards: lower `training.shards` in the genesis",
                rest.len()
            )));
        }
        let per = rest.len() / shards;
        Ok(Self {
            rules: *rules,
            shards: (0..shards)
                .map(|i| Arc::new(split.train.subset(&rest[i * per..(i + 1) * per])))
                .collect(),
            validation: split.train.subset(validation),
            test: split.test,
        })
    }

    /// A plan from parts fetched from the network (a run's sealed data, DESIGN.md "Data"):
    /// training shards as they are, the validation and test shards each joined into one set.
    pub fn from_parts(
        rules: &TrainingRules,
        train: Vec<Arc<Dataset>>,
        validation: &[Arc<Dataset>],
        test: &[Arc<Dataset>],
    ) -> Result<Self, PlanError> {
        if train.is_empty() {
            return Err(PlanError("no training shard".into()));
        }
        Ok(Self {
            rules: *rules,
            shards: train,
            validation: join(validation)?,
            test: Arc::new(join(test)?),
        })
    }

    /// The training shards.
    pub fn shards(&self) -> &[Arc<Dataset>] {
        &self.shards
    }

    /// The test set.
    pub fn test(&self) -> &Dataset {
        &self.test
    }

    /// The shard a trainer works on at `height`: a hash of (run, height, trainer).
    pub fn shard_for(shards: u32, run: &RunId, height: u64, trainer: &Address) -> usize {
        let mut h = Sha256::new();
        h.update(b"tabswarm/shard/v1\0");
        h.update(run.0);
        h.update(height.to_le_bytes());
        h.update(trainer.0);
        (first_u64(h) % u64::from(shards.max(1))) as usize
    }

    /// The validation pool.
    pub fn validation(&self) -> &Dataset {
        &self.validation
    }

    /// The [`VALIDATION_EXAMPLES`] examples of the pool that `draw` picks (the whole pool
    /// when it is no larger), in the pool's order.
    pub fn validation_sample(&self, draw: u64) -> Dataset {
        let n = self.validation.len();
        let mut order: Vec<usize> = (0..n).collect();
        if n > VALIDATION_EXAMPLES {
            SeededRng::new(draw, "tabswarm/validation-draw").shuffle(&mut order);
            order.truncate(VALIDATION_EXAMPLES);
            order.sort_unstable();
        }
        self.validation.subset(&order)
    }

    /// The run's training rules.
    pub fn rules(&self) -> &TrainingRules {
        &self.rules
    }

    /// Training shard `i` (wrapping around the shards there are).
    pub fn shard(&self, i: usize) -> Arc<Dataset> {
        self.shards[i % self.shards.len()].clone()
    }

    /// The plan as bytes for a worker in another memory (a tab's Web Workers get the plan
    /// the peer made from fetched shards): each part as a `.tsd` file, training shards in
    /// the plan's order (a job's shard index points into it), framed like a job.
    pub fn encode(&self) -> Vec<u8> {
        encode(&PlanBytes {
            shards: self.shards.iter().map(|d| d.encode()).collect(),
            validation: self.validation.encode(),
            test: self.test.encode(),
        })
    }

    /// A plan [`DataPlan::encode`] made, for a run with `rules`. Each part is checked as any
    /// `.tsd` file is (its trailer hash): bytes damaged on the way are refused, not trained on.
    pub fn decode(bytes: &[u8], rules: &TrainingRules) -> Result<Self, PlanError> {
        let parts: PlanBytes = decode(bytes).map_err(|e| PlanError(format!("a data plan: {e}")))?;
        let part = |b: &[u8], what: &str| {
            Dataset::decode(b).map_err(|e| PlanError(format!("a data plan's {what}: {e}")))
        };
        let train = parts
            .shards
            .iter()
            .map(|b| part(b, "training shard").map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let validation = part(&parts.validation, "validation set")?;
        let test = part(&parts.test, "test set")?;
        Self::from_parts(rules, train, &[Arc::new(validation)], &[Arc::new(test)])
    }
}

/// [`DataPlan`] on the way to a worker.
#[derive(Serialize, Deserialize)]
struct PlanBytes {
    shards: Vec<Vec<u8>>,
    validation: Vec<u8>,
    test: Vec<u8>,
}

fn join(parts: &[Arc<Dataset>]) -> Result<Dataset, PlanError> {
    Dataset::concat(parts.iter().map(|p| &**p)).ok_or_else(|| {
        PlanError("no validation or test shard, or shards of different image sizes".into())
    })
}

/// A validator's secret for its validation draws, derived from its signing seed (which is
/// never used raw for anything else).
pub fn draw_secret(signing_seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tabswarm/validation-draw-secret/v1\0");
    h.update(signing_seed);
    h.finalize().into()
}

/// The draw of validation examples for every score a validator computes in the height after
/// the one committed at `height` with parameters hashing to `param_hash`. New at every height
/// and, through the validator's `secret` ([`draw_secret`]), known to nobody else: a trainer
/// trains after the previous block is decided, so a draw seeded by public state (that block's
/// hash, the parameters) is one it could tune its update to. Each validator compares the
/// base and every update on its own draw, so the comparison stays paired; validators' verdicts
/// on an update near the harm line may differ by sampling noise, which the line's slack
/// absorbs. A peer without a secret (`[0; 32]`) draws from public state.
pub fn validation_draw(secret: &[u8; 32], param_hash: &[u8; 32], height: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(b"tabswarm/validation-draw/v2\0");
    h.update(secret);
    h.update(height.to_le_bytes());
    h.update(param_hash);
    first_u64(h)
}

/// The first 8 bytes of a hash as a number (seeds and choices made from labelled hashes).
fn first_u64(h: Sha256) -> u64 {
    let d: [u8; 32] = h.finalize().into();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The batch-order seed of a trainer's job at `height`.
pub fn train_seed(trainer: &Address, height: u64) -> u64 {
    u64::from_le_bytes(trainer.0[..8].try_into().unwrap_or_default()) ^ height
}

/// The output of `job` when it could not run at all (its worker died, the page closed a
/// worker): the peer treats it as a failed computation, never as a result.
pub fn failed(job: &Job, why: String) -> Output {
    match job {
        Job::Train { height, .. } => Output::Trained {
            height: *height,
            result: Err(why),
        },
        Job::Validate { key, draw, .. } => Output::Validated {
            key: *key,
            draw: *draw,
            loss: None,
        },
        Job::Test { height, .. } => Output::Tested {
            height: *height,
            result: None,
        },
    }
}

/// Runs a job. Called by drivers on a worker thread; deterministic given its inputs (up to
/// floating point differences between machines in training itself).
pub fn run(plan: &DataPlan, job: Job) -> Output {
    let config = train_config(&plan.rules);
    match job {
        Job::Train {
            height,
            params,
            shard,
            seed,
        } => {
            let result = (|| -> Result<LocalUpdate, TrainError> {
                let mut model = Trainer::with_params(&config, &params)?;
                let mut batches = Batches::new(plan.shard(shard), config.batch_size, seed);
                model.local_update(&mut batches, plan.rules.local_steps as usize)
            })()
            .map_err(|e| e.to_string());
            Output::Trained { height, result }
        }
        Job::Validate { key, params, draw } => Output::Validated {
            key,
            draw,
            loss: evaluate(&config, &params, &plan.validation_sample(draw))
                .map(|e| e.loss)
                .filter(|l| l.is_finite()),
        },
        Job::Test { height, params } => Output::Tested {
            height,
            result: evaluate(&config, &params, &plan.test).map(|e| (e.loss, e.accuracy)),
        },
    }
}

fn evaluate(config: &Config, params: &[f32], data: &Dataset) -> Option<Evaluation> {
    Trainer::with_params(config, params)
        .ok()?
        .evaluate(data)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_outputs_cross_the_worker_boundary_intact() {
        let job = Job::Train {
            height: 7,
            params: Arc::new(vec![0.5, -1.25, f32::MIN_POSITIVE]),
            shard: 3,
            seed: 99,
        };
        let back: Job = decode(&encode(&job)).unwrap();
        match back {
            Job::Train {
                height: 7,
                params,
                shard: 3,
                seed: 99,
            } => assert_eq!(*params, vec![0.5, -1.25, f32::MIN_POSITIVE]),
            other => panic!("changed on the way: {other:?}"),
        }
        let out = Output::Validated {
            key: ScoreKey::Update([4; 32]),
            draw: 11,
            loss: Some(0.25),
        };
        let back: Output = decode(&encode(&out)).unwrap();
        match back {
            Output::Validated {
                key: ScoreKey::Update(id),
                draw: 11,
                loss: Some(l),
            } => {
                assert_eq!(id, [4; 32]);
                assert_eq!(l, 0.25);
            }
            other => panic!("changed on the way: {other:?}"),
        }
    }

    #[test]
    fn each_height_scores_on_its_own_draw_of_the_validation_pool() {
        let n = VALIDATION_POOL;
        // Each example's first two pixels name it, so a sample says what it holds.
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels: Vec<u8> = (0..n)
            .flat_map(|i| [(i % 256) as u8, (i / 256) as u8, 0, 0])
            .collect();
        let pool = Arc::new(Dataset::from_parts(2, 2, 10, labels, pixels).unwrap());
        let some = Arc::new(Dataset::from_parts(2, 2, 10, vec![0], vec![0; 4]).unwrap());
        let plan = DataPlan::from_parts(
            &TrainingRules::default(),
            vec![some.clone()],
            std::slice::from_ref(&pool),
            &[some],
        )
        .unwrap();
        let (hash, mine) = ([7u8; 32], draw_secret(&[1; 32]));
        let (a, b) = (
            validation_draw(&mine, &hash, 5),
            validation_draw(&mine, &hash, 6),
        );
        assert_ne!(a, b, "two heights, one draw");
        assert_ne!(
            a,
            validation_draw(&mine, &[8; 32], 5),
            "other parameters, same draw"
        );
        assert_eq!(
            a,
            validation_draw(&mine, &hash, 5),
            "a validator's draw changed"
        );
        // Another validator's secret, or none (what anyone can compute), draws otherwise.
        assert_ne!(a, validation_draw(&draw_secret(&[2; 32]), &hash, 5));
        assert_ne!(a, validation_draw(&[0; 32], &hash, 5));
        let (sa, sb) = (plan.validation_sample(a), plan.validation_sample(b));
        assert_eq!(sa, plan.validation_sample(a));
        assert_eq!(
            (sa.len(), sb.len()),
            (VALIDATION_EXAMPLES, VALIDATION_EXAMPLES)
        );
        assert_ne!(sa, sb);
        // Distinct examples in the pool's order, spread over all of it.
        let ids = |d: &Dataset| -> Vec<usize> {
            (0..d.len())
                .map(|i| usize::from(d.image(i)[0]) + 256 * usize::from(d.image(i)[1]))
                .collect()
        };
        let ids = ids(&sa);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "not in the pool's order"
        );
        assert!(
            ids[0] < n / 10 && ids[ids.len() - 1] > n - n / 10,
            "{ids:?}"
        );
        // A pool no larger than a draw is used whole.
        let small = DataPlan::from_parts(
            &TrainingRules::default(),
            plan.shards().to_vec(),
            &[Arc::new(pool.subset(&(0..100).collect::<Vec<_>>()))],
            &[plan.shards()[0].clone()],
        )
        .unwrap();
        assert_eq!(small.validation_sample(a), *small.validation());
    }

    #[test]
    fn a_plan_reaches_a_worker_whole_in_order_and_damage_is_refused() {
        let images = |n: usize, c: u8| {
            let labels: Vec<u8> = (0..n).map(|i| (i as u8 + c) % 10).collect();
            let pixels = (0..n * 16).map(|i| (i as u8).wrapping_mul(c)).collect();
            Arc::new(Dataset::from_parts(4, 4, 10, labels, pixels).unwrap())
        };
        let rules = TrainingRules::default();
        // Shards of different sizes: swapping two on the way would show.
        let train = vec![images(30, 1), images(20, 2), images(25, 3)];
        let plan =
            DataPlan::from_parts(&rules, train.clone(), &[images(12, 4)], &[images(9, 5)]).unwrap();
        let bytes = plan.encode();
        let back = DataPlan::decode(&bytes, &rules).unwrap();
        assert_eq!(back.shards().len(), 3);
        for (a, b) in back.shards().iter().zip(&train) {
            assert_eq!(**a, **b);
        }
        assert_eq!(back.validation(), plan.validation());
        assert_eq!(back.test(), plan.test());
        // A flipped byte anywhere in a part fails its trailer hash or the framing; no panic.
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 5] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(
                DataPlan::decode(&bad, &rules).is_err(),
                "flip at {at} taken"
            );
        }
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                DataPlan::decode(&bytes[..cut], &rules).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn other_versions_garbage_and_oversize_are_refused() {
        let mut bytes = encode(&Job::Test {
            height: 1,
            params: Arc::new(vec![1.0]),
        });
        bytes[0] = 9;
        assert_eq!(decode::<Job>(&bytes).unwrap_err(), CodecError::Version(9));
        assert!(matches!(
            decode::<Job>(&[JOB_FORMAT, 200, 1, 2]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(decode::<Job>(&[]), Err(CodecError::Malformed(_))));
        assert!(matches!(
            decode::<Job>(&vec![JOB_FORMAT; MAX_JOB_BYTES + 1]),
            Err(CodecError::TooLarge(_))
        ));
    }
}
