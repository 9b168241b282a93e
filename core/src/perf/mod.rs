//! Measurement helpers shared by the native and the browser benchmarks.
//!
//! No clock is read here: callers pass one (`std::time::Instant` natively,
//! `performance.now()` in a tab), so both sides measure the same code the same way.

use burn::tensor::{Tensor, TensorData};

mod aggregate;
mod vault;

pub use aggregate::{AggregationCosts, CLIP_ITERATIONS, TRIM_PER_MILLE, aggregation_costs};
pub use vault::{VaultRates, shard_samples, vault_rates};

use crate::Backend;
use crate::model::{CLASSES, INPUT_PIXELS};

/// Hidden units of the MLP (see [`crate::model::Mlp`]).
const HIDDEN: usize = 128;

/// Floating-point operations of the matmuls in one MLP training step at `batch`:
/// forward (`x W1`, `h W2`), weight gradients (`x^T dh`, `h^T dy`) and the one input
/// gradient that is needed (`dy W2^T`). `2 m k n` each. 26.2 MFLOP at batch 64.
pub fn mlp_step_flops(batch: usize) -> f64 {
    let layer1 = 2.0 * (batch * INPUT_PIXELS * HIDDEN) as f64;
    let layer2 = 2.0 * (batch * HIDDEN * CLASSES) as f64;
    2.0 * layer1 + 3.0 * layer2
}

/// GFLOP/s of a `[m,k] x [k,n]` matmul that took `seconds`.
pub fn gflops([m, k, n]: [usize; 3], seconds: f64) -> f64 {
    2.0 * (m * k * n) as f64 / seconds / 1e9
}

/// Matmuls timed together per sample, so that one sample spans many clock ticks even
/// where the clock is coarse (browsers round `performance.now()` to 5-100 us).
const MATMULS_PER_SAMPLE: usize = 10;

/// Median time (in `now`'s units) of one matmul `[m,k] x [k,n]` on `backend`, over `iters`
/// samples of ten matmuls each, every result finished before the next starts, after a few
/// warm-up samples.
pub fn matmul_median(
    backend: Backend,
    [m, k, n]: [usize; 3],
    iters: usize,
    now: &mut dyn FnMut() -> f64,
) -> f64 {
    let device = backend.device();
    let mut rng = crate::rng::SeededRng::new(1, "perf/matmul");
    let a = Tensor::<2>::from_data(
        TensorData::new(
            (0..m * k).map(|_| rng.uniform(1.0)).collect::<Vec<f32>>(),
            [m, k],
        ),
        &device,
    );
    let b = Tensor::<2>::from_data(
        TensorData::new(
            (0..k * n).map(|_| rng.uniform(1.0)).collect::<Vec<f32>>(),
            [k, n],
        ),
        &device,
    );
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters + 3 {
        let t0 = now();
        for _ in 0..MATMULS_PER_SAMPLE {
            // CPU backends compute eagerly; sync makes sure, without the read-back copy a
            // training step never pays for its intermediate products.
            let c = a.clone().matmul(b.clone());
            let _ = device.sync();
            drop(c);
        }
        if i >= 3 {
            times.push((now() - t0) / MATMULS_PER_SAMPLE as f64);
        }
    }
    median(&mut times)
}

/// The median of `values` (NaN when empty); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `q`-quantile (`0..=1`, nearest rank) of `values`; sorts them.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let idx = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    values[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_flops_match_the_documented_figure() {
        let f = mlp_step_flops(64);
        assert!((f / 1e6 - 26.18).abs() < 0.01, "{f}");
    }

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(quantile(&mut [5.0, 1.0, 3.0, 2.0, 4.0], 0.0), 1.0);
        assert_eq!(quantile(&mut [5.0, 1.0, 3.0, 2.0, 4.0], 1.0), 5.0);
    }
}
