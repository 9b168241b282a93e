//! Native training-step benchmark: `cargo xtask bench` runs it and merges its JSON with the
//! browser's into `bench/results/train_step.json`.
//!
//! Usage: `train_step [--steps N] [--out FILE]` (cargo passes `--bench`, which is ignored).

use std::sync::Arc;
use std::time::Instant;

use tabswarm_core::data::{Batches, Dataset, Split};
use tabswarm_core::perf;
use tabswarm_core::train::{Config, Optimizer, Trainer};
use tabswarm_core::{Backend, model::ModelKind};

// The same allocator as the node binary, so the figures are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 64;
const WARMUP: usize = 30;

/// The five matmuls of an MLP step at batch 64, as `[m, k, n]`.
const STEP_MATMULS: [[usize; 3]; 5] = [
    [BATCH, 784, 128], // x W1
    [BATCH, 128, 10],  // h W2
    [128, BATCH, 10],  // h^T dy
    [BATCH, 10, 128],  // dy W2^T
    [784, BATCH, 128], // x^T dh
];

fn main() -> anyhow::Result<()> {
    let mut steps = 300usize;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(steps),
            "--out" => out = args.next(),
            _ => {}
        }
    }
    let data_path = std::env::var("TABSWARM_DATA").unwrap_or_else(|_| "data/mnist.tsd".into());
    let dataset = Dataset::decode(&std::fs::read(&data_path)?)?;
    let split = Split::mnist(&dataset);
    let mut clock = {
        let t0 = Instant::now();
        move || t0.elapsed().as_secs_f64() * 1e3
    };

    let mut configs = Vec::new();
    for backend in Backend::ALL {
        for optimizer in [Optimizer::Sgd, Optimizer::Adam] {
            let r = step_time(&split, backend, optimizer, steps, &mut clock)?;
            eprintln!(
                "native {backend} {optimizer}: median {:.3} ms/step",
                r["median_ms"]
            );
            configs.push(r);
        }
    }
    let mut reference = Vec::new();
    for optimizer in [Optimizer::Sgd, Optimizer::Adam] {
        let ms = burn_optimizer_step(&split, optimizer, steps, &mut clock);
        eprintln!("native flex {optimizer} with burn's own optimizer: median {ms:.3} ms/step");
        reference.push(
            serde_json::json!({"backend": "flex", "optimizer": optimizer.name(), "median_ms": ms}),
        );
    }
    let mut matmul = serde_json::Map::new();
    for backend in Backend::ALL {
        let mut total_ms = 0.0;
        let mut shapes = Vec::new();
        for shape in STEP_MATMULS {
            let ms = perf::matmul_median(backend, shape, 200, &mut clock);
            total_ms += ms;
            shapes.push(serde_json::json!({"shape": shape, "median_ms": ms, "gflops": perf::gflops(shape, ms / 1e3)}));
        }
        matmul.insert(
            backend.to_string(),
            serde_json::json!({
                "step_matmuls": shapes,
                "step_matmuls_ms": total_ms,
                "gflops_at_step_shapes": perf::mlp_step_flops(BATCH) / (total_ms / 1e3) / 1e9,
            }),
        );
    }
    let t94 = time_to_accuracy(&split, 0.94, &mut clock)?;
    eprintln!("native time to 94%: {:.2} s", t94["train_seconds"]);

    let report = serde_json::json!({
        "steps": configs,
        "burn_optimizer_reference": reference,
        "matmul": matmul,
        "time_to_94": t94,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match out {
        Some(path) => std::fs::write(path, text)?,
        None => println!("{text}"),
    }
    Ok(())
}

fn step_time(
    split: &Split,
    backend: Backend,
    optimizer: Optimizer,
    steps: usize,
    clock: &mut dyn FnMut() -> f64,
) -> anyhow::Result<serde_json::Value> {
    let config = Config {
        backend,
        optimizer,
        lr: optimizer.default_lr(),
        batch_size: BATCH,
        ..Config::default()
    };
    let mut trainer = Trainer::new(&config)?;
    let mut batches = Batches::new(Arc::clone(&split.train), BATCH, 0);
    for _ in 0..WARMUP {
        trainer.step(&batches.next_batch())?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let batch = batches.next_batch();
        let t = clock();
        trainer.step(&batch)?;
        times.push(clock() - t);
    }
    let mut phases = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..steps.min(200) {
        let (_, p) = trainer.step_phases(&batches.next_batch(), clock)?;
        for (v, x) in phases
            .iter_mut()
            .zip([p.input, p.forward, p.backward, p.optimizer])
        {
            v.push(x);
        }
    }
    let median = perf::median(&mut times.clone());
    let [input, forward, backward, optim] = phases.map(|mut v| perf::median(&mut v));
    Ok(serde_json::json!({
        "backend": backend.name(),
        "optimizer": optimizer.name(),
        "model": ModelKind::Mlp.name(),
        "batch": BATCH,
        "steps": steps,
        "median_ms": median,
        "p10_ms": perf::quantile(&mut times.clone(), 0.1),
        "p90_ms": perf::quantile(&mut times, 0.9),
        "gflops": perf::mlp_step_flops(BATCH) / (median / 1e3) / 1e9,
        "phases_median_ms": {"input": input, "forward_and_loss": forward, "backward": backward, "optimizer": optim},
    }))
}

fn time_to_accuracy(
    split: &Split,
    target: f32,
    clock: &mut dyn FnMut() -> f64,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::default();
    let mut trainer = Trainer::new(&config)?;
    let mut batches = Batches::new(Arc::clone(&split.train), config.batch_size, config.seed);
    let mut train_ms = 0.0;
    let mut steps = 0;
    let max_steps = 20 * batches.per_epoch();
    let mut accuracy = 0.0;
    while steps < max_steps {
        let t = clock();
        for _ in 0..20 {
            trainer.step(&batches.next_batch())?;
        }
        train_ms += clock() - t;
        steps += 20;
        accuracy = trainer.evaluate(&split.test)?.accuracy;
        if accuracy >= target {
            break;
        }
    }
    Ok(serde_json::json!({
        "config": config,
        "target_accuracy": target,
        "reached": accuracy >= target,
        "accuracy": accuracy,
        "steps": steps,
        "epochs": steps as f64 / batches.per_epoch() as f64,
        "train_seconds": train_ms / 1e3,
        "note": "wall time of the training steps only; the test set is evaluated every 20 steps, outside the clock",
    }))
}

/// The same step with burn's `ModuleOptimizer` instead of tabswarm's fused flat optimizer,
/// measured in the same run to show what the fused update saves.
fn burn_optimizer_step(
    split: &Split,
    optimizer: Optimizer,
    steps: usize,
    clock: &mut dyn FnMut() -> f64,
) -> f64 {
    use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
    use burn::tensor::{Int, Tensor, TensorData};
    use tabswarm_core::model::Model;

    let device = Backend::Flex.autodiff_device();
    let mut model = Model::init(ModelKind::Mlp, 0, &device);
    let mut optim = match optimizer {
        Optimizer::Sgd => SgdConfig::new().init(),
        Optimizer::Adam => AdamConfig::new().init(),
    };
    let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
    let mut batches = Batches::new(Arc::clone(&split.train), BATCH, 0);
    let mut times = Vec::with_capacity(steps);
    for i in 0..WARMUP + steps {
        let batch = batches.next_batch();
        let t = clock();
        let x = Tensor::<2>::from_data(TensorData::new(batch.images, [BATCH, 784]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [BATCH]), &device);
        let loss = loss_fn.forward(model.forward(x), y);
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(optimizer.default_lr(), model, grads);
        if i >= WARMUP {
            times.push(clock() - t);
        }
    }
    perf::median(&mut times)
}
