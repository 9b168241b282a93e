//! Native training-step benchmark: `cargo xtask bench` runs it and merges its JSON with the
//! browser's into `bench/results/train_step.json`.
//!
//! Usage: `train_step [--steps N] [--runs N] [--out FILE]` (cargo passes `--bench`, which is
//! ignored). Writes one record per run; `cargo xtask bench` folds them into median, min and
//! max.

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
/// Samples (of ten matmuls each) per matmul shape and run.
const MATMUL_SAMPLES: usize = 200;

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
    let mut runs = 5usize;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(steps),
            "--runs" => runs = args.next().and_then(|s| s.parse().ok()).unwrap_or(runs),
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

    // Whole runs one after another, rather than five repetitions of each configuration in
    // a row, so that a burst of other work on the machine spreads over every figure instead
    // of landing on one configuration.
    let mut records = Vec::with_capacity(runs);
    for run in 0..runs {
        eprintln!("native run {}/{runs}", run + 1);
        records.push(one_run(&split, steps, &mut clock)?);
    }
    let report = serde_json::json!({
        "config": {
            "batch": BATCH,
            "warmup_steps": WARMUP,
            "timed_steps": steps,
            "phase_steps": steps.min(200),
            "matmul_samples": MATMUL_SAMPLES,
            "runs": runs,
        },
        "peak_kernels": peak::describe(),
        "runs": records,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match out {
        Some(path) => std::fs::write(path, text)?,
        None => println!("{text}"),
    }
    Ok(())
}

/// Every figure once: the peak kernels, each configuration's step, burn's optimizer for
/// reference, the step's matmuls alone, and the time to 94% accuracy.
fn one_run(
    split: &Split,
    steps: usize,
    clock: &mut dyn FnMut() -> f64,
) -> anyhow::Result<serde_json::Value> {
    let peak = peak::measure();
    let mut configs = Vec::new();
    for backend in Backend::ALL {
        for optimizer in [Optimizer::Sgd, Optimizer::Adam] {
            let r = step_time(split, backend, optimizer, steps, clock)?;
            eprintln!(
                "  {backend} {optimizer}: median {:.3} ms/step",
                r["median_ms"]
            );
            configs.push(r);
        }
    }
    let mut reference = Vec::new();
    for optimizer in [Optimizer::Sgd, Optimizer::Adam] {
        let ms = burn_optimizer_step(split, optimizer, steps, clock);
        eprintln!("  flex {optimizer} with burn's own optimizer: median {ms:.3} ms/step");
        reference.push(
            serde_json::json!({"backend": "flex", "optimizer": optimizer.name(), "median_ms": ms}),
        );
    }
    let mut matmul = serde_json::Map::new();
    for backend in Backend::ALL {
        let mut total_ms = 0.0;
        let mut shapes = Vec::new();
        for shape in STEP_MATMULS {
            let ms = perf::matmul_median(backend, shape, MATMUL_SAMPLES, clock);
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
    let t94 = time_to_accuracy(split, 0.94, clock)?;
    eprintln!(
        "  time to 94%: {:.2} s; peak {}",
        t94["train_seconds"], peak
    );
    Ok(serde_json::json!({
        "peak": peak,
        "steps": configs,
        "burn_optimizer_reference": reference,
        "matmul": matmul,
        "time_to_94": t94,
    }))
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
        "timed_steps": steps,
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

/// FMA-bound kernels, timed in the same run as the steps, so that the step's GFLOP/s is
/// compared with a ceiling measured on the same core under the same load rather than with a
/// datasheet figure.
mod peak {
    use std::hint::black_box;
    use std::time::Instant;

    use serde_json::{Value, json};
    use tabswarm_core::perf;

    /// Independent accumulator registers per kernel. Keeping both FMA ports busy takes
    /// latency (4 cycles) x ports (2) = 8 chains in flight; 12 leave slack and still fit
    /// in 16 vector registers beside the two operands.
    const VECTORS: usize = 12;
    /// Each timed call lasts about this long: long against the clock and the loop's set-up,
    /// short enough for several samples per run.
    const TARGET_SECONDS: f64 = 0.02;
    const SAMPLES: usize = 7;

    struct Kernel {
        name: &'static str,
        what: &'static str,
        theory: &'static str,
        /// f32 lanes per register.
        lanes: usize,
        /// Where the port count makes it unambiguous: two FMA ports on every AVX2 core.
        /// A multiply then add also uses the add-only ports, whose number varies by core.
        theoretical_flops_per_cycle: Option<f64>,
        run: fn(u64, f32, f32) -> f32,
    }

    const KERNELS: [Kernel; 2] = [
        Kernel {
            name: "fma256",
            what: "AVX2+FMA, 256-bit fused multiply-add (runtime-detected, as burn's matmul kernels \
                   do on this build)",
            theory: "2 FMA ports x 8 lanes x 2 flops = 32 flops per cycle on AVX2 cores; \
                     AVX-512 doubles the lanes (64 on cores with two 512-bit FMA units), not \
                     measured here",
            lanes: 8,
            theoretical_flops_per_cycle: Some(32.0),
            run: fma256,
        },
        Kernel {
            name: "mul_add128",
            what: "128-bit multiply then add (SSE): the operations a wasm simd128 kernel \
                   without relaxed SIMD has",
            theory: "4 lanes x (multiplies + adds per cycle): 8 flops per cycle where two ports \
                     take either, 12 where a third port adds (Intel Golden Cove), 16 with two \
                     add-only ports (AMD Zen)",
            lanes: 4,
            theoretical_flops_per_cycle: None,
            run: mul_add128,
        },
    ];

    /// `x = x * a + b` over `N` independent floats held in registers. Rust never fuses a
    /// multiply and an add by itself, so `mul_add` is what asks for FMA.
    #[inline(always)]
    fn chains_fma<const N: usize>(iters: u64, a: f32, b: f32) -> f32 {
        let mut acc: [f32; N] = black_box(std::array::from_fn(|i| i as f32 * 1e-3));
        for _ in 0..iters {
            for x in &mut acc {
                *x = x.mul_add(a, b);
            }
        }
        acc.iter().sum()
    }

    /// NaN where the CPU lacks AVX2 or FMA. pulp compiles the closure with those features
    /// enabled, behind a runtime check, without unsafe code here.
    fn fma256(iters: u64, a: f32, b: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return simd.vectorize(|| chains_fma::<{ VECTORS * 8 }>(iters, a, b));
        }
        let _ = (iters, a, b);
        f32::NAN
    }

    /// Written with explicit 128-bit vectors: the plain-array form of this loop, compiled for
    /// the default target, came out with the lanes packed and unpacked on every iteration.
    fn mul_add128(iters: u64, a: f32, b: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V1::try_new() {
            return simd.vectorize(|| {
                let (va, vb) = (simd.splat_f32x4(a), simd.splat_f32x4(b));
                let mut acc: [pulp::f32x4; VECTORS] =
                    black_box(std::array::from_fn(|i| simd.splat_f32x4(i as f32 * 1e-3)));
                for _ in 0..iters {
                    for x in &mut acc {
                        *x = simd.add_f32x4(simd.mul_f32x4(*x, va), vb);
                    }
                }
                let sum = acc
                    .into_iter()
                    .fold(simd.splat_f32x4(0.0), |s, x| simd.add_f32x4(s, x));
                simd.reduce_sum_f32x4(sum)
            });
        }
        let _ = (iters, a, b);
        f32::NAN
    }

    /// What each kernel is, for the results file.
    pub(crate) fn describe() -> Value {
        KERNELS
            .iter()
            .map(|k| {
                (
                    k.name.to_owned(),
                    json!({
                        "what": k.what,
                        "lanes": k.lanes,
                        "registers": VECTORS,
                        "theoretical_flops_per_cycle": k.theoretical_flops_per_cycle,
                        "theory": k.theory,
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// GFLOP/s of each kernel this CPU runs (median of a few timed calls), and the clock
    /// that rate implies at the theoretical flops per cycle: near the core's real clock, the
    /// kernel is at the hardware's limit.
    pub(crate) fn measure() -> Value {
        let mut out = serde_json::Map::new();
        for k in &KERNELS {
            let g = gflops(k);
            if g.is_finite() {
                let mut r = json!({"gflops": g});
                if let Some(f) = k.theoretical_flops_per_cycle {
                    r["implied_ghz"] = json!(g / f);
                }
                out.insert(k.name.to_owned(), r);
            }
        }
        out.into()
    }

    fn gflops(k: &Kernel) -> f64 {
        // Values that stay near 1: no overflow, no denormals to slow the chains down.
        let (a, b) = (black_box(0.999_9f32), black_box(1e-4f32));
        let flops_per_iter = 2.0 * (VECTORS * k.lanes) as f64;
        let timed = |iters: u64| {
            let t = Instant::now();
            let r = black_box((k.run)(black_box(iters), a, b));
            (t.elapsed().as_secs_f64(), r)
        };
        let mut iters = 1u64 << 12;
        loop {
            let (s, r) = timed(iters);
            if r.is_nan() {
                return f64::NAN;
            }
            if s > TARGET_SECONDS / 4.0 {
                iters = (iters as f64 * TARGET_SECONDS / s).ceil() as u64;
                break;
            }
            iters *= 4;
        }
        let mut rates: Vec<f64> = (0..SAMPLES)
            .map(|_| flops_per_iter * iters as f64 / timed(iters).0 / 1e9)
            .collect();
        perf::median(&mut rates)
    }
}
