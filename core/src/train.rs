//! Local training: steps on mini-batches, local updates as flat deltas, evaluation.
//!
//! Time is never read here. Callers that want phase timings pass a clock
//! ([`Trainer::step_phases`]), so the same code runs in a Web Worker, on a server and in tests.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};

use crate::Backend;
use crate::data::{Batch, Batches, Dataset};
use crate::flat::{self, ParamHash};
use crate::model::{self, Model, ModelKind, ParamError};
use crate::optim::FlatOptimizer;

/// The optimizer a trainer applies its gradients with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Plain stochastic gradient descent.
    Sgd,
    /// Adam with burn's defaults (beta1 0.9, beta2 0.999, epsilon 1e-5).
    #[default]
    Adam,
}

impl Optimizer {
    /// A learning rate that trains the MNIST models well with this optimizer.
    pub fn default_lr(self) -> f64 {
        match self {
            Optimizer::Sgd => 0.05,
            Optimizer::Adam => 1e-3,
        }
    }

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An optimizer name that is not `sgd` or `adam`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown optimizer {0:?}: use \"sgd\" or \"adam\"")]
pub struct UnknownOptimizer(pub String);

impl FromStr for Optimizer {
    type Err = UnknownOptimizer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Optimizer::Sgd),
            "adam" => Ok(Optimizer::Adam),
            _ => Err(UnknownOptimizer(s.to_owned())),
        }
    }
}

/// How to train.
///
/// Defaults: MLP, flex backend, Adam, learning rate 1e-3, batch 64, seed 0.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Architecture.
    pub model: ModelKind,
    /// burn backend to compute with.
    pub backend: Backend,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Learning rate.
    pub lr: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Seed of the initial parameters and of the batch order.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model: ModelKind::Mlp,
            backend: Backend::Flex,
            optimizer: Optimizer::Adam,
            lr: Optimizer::Adam.default_lr(),
            batch_size: 64,
            seed: 0,
        }
    }
}

impl Config {
    /// Checks the settings, saying which one is wrong and what would do.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return Err(TrainError::BadConfig(format!(
                "learning rate {} is out of range: use a value in (0, 10], e.g. {}",
                self.lr,
                self.optimizer.default_lr()
            )));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return Err(TrainError::BadConfig(format!(
                "batch size {} is out of range: use 1..=4096, e.g. 64",
                self.batch_size
            )));
        }
        Ok(())
    }
}

/// Why training could not start or continue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting is out of range.
    #[error("{0}")]
    BadConfig(String),
    /// Parameters that do not fit the model.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// Data whose images do not fit the model's input.
    #[error("images have {found} pixels but the model takes {expected} (28 x 28)")]
    InputSize {
        /// Pixels the model takes.
        expected: usize,
        /// Pixels per image in the data.
        found: usize,
    },
}

/// Loss and accuracy on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction classified correctly, in `[0, 1]`.
    pub accuracy: f32,
    /// Examples evaluated.
    pub examples: usize,
}

/// What a trainer sends after local steps: the change to the parameters it started from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalUpdate {
    /// `params_after - params_before`, flat, in layout order.
    pub delta: Vec<f32>,
    /// Hash of the parameters the steps started from (the update's base).
    pub base: ParamHash,
    /// Examples seen.
    pub samples: usize,
    /// Loss of the first step.
    pub loss_before: f32,
    /// Loss of the last step.
    pub loss_after: f32,
}

/// Wall time of each phase of one step, in the caller's clock units.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StepPhases {
    /// Building the input tensors.
    pub input: f64,
    /// Forward pass and loss, finished (loss read back).
    pub forward: f64,
    /// Backward pass, finished.
    pub backward: f64,
    /// Optimizer update, finished.
    pub optimizer: f64,
}

/// Trains one model on one peer.
///
/// The trainer keeps the parameters as a flat vector (the form they travel in) and mirrors
/// them into the burn model after every update; gradients come out of burn flat and the
/// optimizer updates the vector in one pass (see [`crate::optim`]).
pub struct Trainer {
    model: Option<Model>,
    params: Vec<f32>,
    optim: FlatOptimizer,
    loss: CrossEntropyLoss,
    device: Device,
    config: Config,
}

impl fmt::Debug for Trainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer with the seeded initial parameters of `config.model`.
    pub fn new(config: &Config) -> Result<Self, TrainError> {
        let params = config.model.layout().initial_params(config.seed);
        Self::with_params(config, &params)
    }

    /// A trainer starting from the given flat parameters.
    pub fn with_params(config: &Config, params: &[f32]) -> Result<Self, TrainError> {
        config.validate()?;
        let device = config.backend.autodiff_device();
        let model = Model::from_flat(config.model, params, &device)?;
        Ok(Self {
            model: Some(model),
            params: params.to_vec(),
            optim: FlatOptimizer::new(config.optimizer, config.lr),
            loss: CrossEntropyLossConfig::new().init(&device),
            device,
            config: config.clone(),
        })
    }

    /// The settings this trainer was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        // Present between calls: only `sync_model` takes it out, and puts it back.
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("model taken"))
    }

    /// The current parameters, flat, in layout order.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The hash of the current parameters.
    pub fn param_hash(&self) -> ParamHash {
        flat::param_hash(&self.params)
    }

    /// Replaces the parameters (e.g. with the network's newly committed model), keeping
    /// the optimizer's state.
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), TrainError> {
        model::check_len(&self.config.model.layout(), params.len())?;
        self.params.copy_from_slice(params);
        self.sync_model();
        Ok(())
    }

    /// Mirrors the flat parameters into the burn model.
    fn sync_model(&mut self) {
        let model = self.take_model();
        // The length was checked when `params` was set, so this cannot fail.
        self.model =
            Some(model::set_flat(model, &self.params).unwrap_or_else(|e| unreachable!("{e}")));
    }

    fn take_model(&mut self) -> Model {
        self.model
            .take()
            .unwrap_or_else(|| unreachable!("model taken"))
    }

    fn check_input(&self, image_len: usize) -> Result<(), TrainError> {
        if image_len == model::INPUT_PIXELS {
            Ok(())
        } else {
            Err(TrainError::InputSize {
                expected: model::INPUT_PIXELS,
                found: image_len,
            })
        }
    }

    /// One optimizer step on `batch`; returns the batch's loss before the step.
    pub fn step(&mut self, batch: &Batch) -> Result<f32, TrainError> {
        self.check_input(batch.image_len)?;
        let (images, targets) = batch_tensors(batch, &self.device);
        let loss = self.loss.forward(self.model().forward(images), targets);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        self.apply(grads);
        Ok(value)
    }

    /// Like [`Trainer::step`], timing each phase with `now` (any monotonic clock; the
    /// result is in its units). Synchronises the device between phases, so it is a little
    /// slower than `step`: use it to see where time goes, not to measure throughput.
    pub fn step_phases(
        &mut self,
        batch: &Batch,
        now: &mut dyn FnMut() -> f64,
    ) -> Result<(f32, StepPhases), TrainError> {
        self.check_input(batch.image_len)?;
        let t0 = now();
        let (images, targets) = batch_tensors(batch, &self.device);
        let _ = self.device.sync();
        let t1 = now();
        let loss = self.loss.forward(self.model().forward(images), targets);
        let value = loss.clone().into_scalar::<f32>();
        let t2 = now();
        let grads = loss.backward();
        let _ = self.device.sync();
        let t3 = now();
        self.apply(grads);
        let _ = self.device.sync();
        let t4 = now();
        Ok((
            value,
            StepPhases {
                input: t1 - t0,
                forward: t2 - t1,
                backward: t3 - t2,
                optimizer: t4 - t3,
            },
        ))
    }

    fn apply(&mut self, grads: Gradients) {
        let grads = self.flat_gradient(&grads);
        self.optim.step(&mut self.params, &grads);
        self.sync_model();
    }

    fn flat_gradient(&self, grads: &Gradients) -> Vec<f32> {
        let mut collect = CollectGrads {
            grads,
            unshare: self.config.backend == Backend::Ndarray,
            out: Vec::with_capacity(self.params.len()),
        };
        self.model().visit(&mut collect);
        collect.out
    }

    /// The loss on `batch` and its gradient as a flat vector in layout order, without
    /// changing the parameters.
    pub fn gradient(&self, batch: &Batch) -> Result<(f32, Vec<f32>), TrainError> {
        self.check_input(batch.image_len)?;
        let (images, targets) = batch_tensors(batch, &self.device);
        let loss = self.loss.forward(self.model().forward(images), targets);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        Ok((value, self.flat_gradient(&grads)))
    }

    /// One optimizer step with a gradient computed elsewhere (by [`Trainer::gradient`] on
    /// another copy of these parameters, or an average of several): data parallelism.
    pub fn apply_gradient(&mut self, grads: &[f32]) -> Result<(), TrainError> {
        model::check_len(&self.config.model.layout(), grads.len())?;
        self.optim.step(&mut self.params, grads);
        self.sync_model();
        Ok(())
    }

    /// Runs `steps` optimizer steps on batches from `batches` and returns the change to
    /// the parameters: the update a trainer announces to the network.
    pub fn local_update(
        &mut self,
        batches: &mut Batches,
        steps: usize,
    ) -> Result<LocalUpdate, TrainError> {
        let before = self.params.clone();
        let base = flat::param_hash(&before);
        let (mut first, mut last, mut samples) = (f32::NAN, f32::NAN, 0);
        for i in 0..steps {
            let batch = batches.next_batch();
            samples += batch.len();
            let loss = self.step(&batch)?;
            if i == 0 {
                first = loss;
            }
            last = loss;
        }
        // Same model, same layout: the lengths always agree.
        let delta = flat::difference(&self.params, &before).unwrap_or_default();
        Ok(LocalUpdate {
            delta,
            base,
            samples,
            loss_before: first,
            loss_after: last,
        })
    }

    /// Mean loss and accuracy over every example of `dataset`, without training.
    pub fn evaluate(&self, dataset: &Dataset) -> Result<Evaluation, TrainError> {
        evaluate(self.model(), dataset)
    }
}

/// Mean loss and accuracy of `model` over `dataset`.
pub fn evaluate(model: &Model, dataset: &Dataset) -> Result<Evaluation, TrainError> {
    if dataset.image_len() != model::INPUT_PIXELS {
        return Err(TrainError::InputSize {
            expected: model::INPUT_PIXELS,
            found: dataset.image_len(),
        });
    }
    let model = model.valid();
    let device = model
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(|| Backend::Flex.device());
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for batch in crate::data::batches_in_order(dataset, 500) {
        let n = batch.len();
        let (images, targets) = batch_tensors(&batch, &device);
        let logits = model.forward(images);
        let loss = loss_fn
            .forward(logits.clone(), targets)
            .into_scalar::<f32>();
        loss_sum += f64::from(loss) * n as f64;
        let mut scores = Vec::with_capacity(n * model::CLASSES);
        model::extend_f32(&mut scores, logits.into_data());
        for (row, &label) in scores.chunks(model::CLASSES).zip(&batch.labels) {
            if argmax(row) == label as usize {
                correct += 1;
            }
        }
    }
    let examples = dataset.len();
    Ok(Evaluation {
        loss: (loss_sum / examples.max(1) as f64) as f32,
        accuracy: correct as f32 / examples.max(1) as f32,
        examples,
    })
}

/// A batch as input and target tensors on `device`.
fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let n = batch.len();
    let images = Tensor::<2>::from_data(
        TensorData::new(batch.images.clone(), [n, batch.image_len]),
        device,
    );
    let targets = Tensor::<1, Int>::from_data(TensorData::new(batch.labels.clone(), [n]), device);
    (images, targets)
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

struct CollectGrads<'a> {
    grads: &'a Gradients,
    /// burn-ndarray reads out a tensor that is still shared (a gradient always is: the
    /// gradient store holds it too) element by element through a dynamic-rank iterator,
    /// ~20 ns a value, 2 ms for the MLP. A scalar op first yields an unshared array that it
    /// hands over without copying: one fast pass instead.
    unshare: bool,
    out: Vec<f32>,
}

impl ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        match value.grad(self.grads) {
            Some(g) if self.unshare => {
                model::extend_f32(&mut self.out, g.mul_scalar(1.0).into_data())
            }
            Some(g) => model::extend_f32(&mut self.out, g.into_data()),
            // A parameter the loss does not depend on has a zero gradient.
            None => self
                .out
                .extend(std::iter::repeat_n(0.0, value.shape().num_elements())),
        }
    }
}
