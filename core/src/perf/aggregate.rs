//! What each aggregation rule costs for a number of updates of a model's size. A validator
//! recomputes the aggregate of every proposal it judges and a proposer each one it tries, on
//! its event loop, so these figures bound how many updates a height can hold on a machine.
//! Natively (`core/benches/aggregate.rs`) and in a tab (`tabswarm_browser::aggregation_costs`)
//! the same code runs with the caller's clock.

use serde::Serialize;

use super::median;
use crate::rng::SeededRng;
use crate::{flat, robust};

/// Centered clipping's iterations in the figures: the genesis default (`centered-clip:3`).
pub const CLIP_ITERATIONS: u32 = 3;
/// The trimmed mean's share dropped at each end in the figures, in thousandths.
pub const TRIM_PER_MILLE: u16 = 100;

/// Milliseconds per aggregate of `updates` vectors of `values` values, each the median of the
/// timings asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AggregationCosts {
    /// Updates combined.
    pub updates: usize,
    /// Values per update (the model's parameters).
    pub values: usize,
    /// The plain mean (the control; equal weights, as the rules give every update).
    pub mean_ms: f64,
    /// Coordinate-wise median.
    pub median_ms: f64,
    /// Trimmed mean, [`TRIM_PER_MILLE`] dropped at each end.
    pub trimmed_mean_ms: f64,
    /// Centered clipping, [`CLIP_ITERATIONS`] iterations from the median.
    pub centered_clip_ms: f64,
}

/// Times each rule over the same `updates` seeded vectors of `values` values: the median of
/// `reps` calls each.
pub fn aggregation_costs(
    updates: usize,
    values: usize,
    reps: usize,
    now_ms: &mut dyn FnMut() -> f64,
) -> AggregationCosts {
    let mut rng = SeededRng::new(1, "perf/aggregate");
    let deltas: Vec<Vec<f32>> = (0..updates)
        .map(|_| (0..values).map(|_| rng.uniform(0.01)).collect())
        .collect();
    let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let weights = vec![1.0; updates];
    let trim = robust::trim_count(updates, TRIM_PER_MILLE);
    let mut time = |f: &mut dyn FnMut() -> Option<Vec<f32>>| {
        let mut ms: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let t = now_ms();
                std::hint::black_box(f());
                now_ms() - t
            })
            .collect();
        median(&mut ms)
    };
    AggregationCosts {
        updates,
        values,
        mean_ms: time(&mut || flat::weighted_mean(&refs, &weights).ok()),
        median_ms: time(&mut || robust::coordinate_median(&refs).ok()),
        trimmed_mean_ms: time(&mut || robust::trimmed_mean(&refs, trim).ok()),
        centered_clip_ms: time(&mut || robust::centered_clip(&refs, CLIP_ITERATIONS).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_timed_on_the_callers_clock() {
        // A clock that advances 1 ms per read: each call "takes" exactly 1 ms.
        let mut t = 0.0;
        let mut clock = || {
            t += 1.0;
            t
        };
        let c = aggregation_costs(8, 100, 3, &mut clock);
        assert_eq!((c.updates, c.values), (8, 100));
        for ms in [
            c.mean_ms,
            c.median_ms,
            c.trimmed_mean_ms,
            c.centered_clip_ms,
        ] {
            assert_eq!(ms, 1.0);
        }
    }
}
