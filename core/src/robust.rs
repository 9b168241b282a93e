//! Byzantine-robust aggregation rules on flat update vectors.
//!
//! Trainers are strangers: a minority may send whatever they like. The plain mean
//! ([`crate::flat::weighted_mean`]) follows any one of them arbitrarily far; the rules here
//! bound what a minority can do. Validators recompute the proposer's aggregate and compare
//! parameter hashes, so like the rest of [`crate::flat`] these are plain scalar loops in a fixed
//! order (sorting with [`f32::total_cmp`], sums in `f64` rounded once, IEEE `sqrt`): the same
//! bits natively and in wasm.
//!
//! | rule | keeps the output within the honest inputs' range while | cost per coordinate |
//! | --- | --- | --- |
//! | [`coordinate_median`] | fewer than half the inputs are hostile | sort of n values |
//! | [`trimmed_mean`] with `trim` per side | at most `trim` inputs are hostile | sort of n values |
//! | [`centered_clip`] | a minority is hostile; each step moves the centre at most `tau` | n per iteration |
//!
//! Non-finite values (NaN, infinities) need no special case in the sorting rules:
//! `total_cmp` orders them beyond every finite value, so they are dropped like any other
//! extreme; [`centered_clip`] gives an input with a non-finite distance no weight.

use crate::flat::{FlatError, check_same_len};

/// Checks that there is at least one vector and all have the first one's length.
fn check(vectors: &[&[f32]]) -> Result<usize, FlatError> {
    let first = vectors.first().ok_or(FlatError::Empty)?;
    for v in vectors {
        check_same_len(first.len(), v.len())?;
    }
    Ok(first.len())
}

/// Calls `f` with each coordinate's values, sorted by [`f32::total_cmp`].
fn per_coordinate_sorted(
    vectors: &[&[f32]],
    mut f: impl FnMut(&[f32]) -> f32,
) -> Result<Vec<f32>, FlatError> {
    let len = check(vectors)?;
    let mut column = vec![0.0f32; vectors.len()];
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        for (c, v) in column.iter_mut().zip(vectors) {
            *c = v[i];
        }
        column.sort_unstable_by(f32::total_cmp);
        out.push(f(&column));
    }
    Ok(out)
}

/// The middle value of each coordinate (the mean of the two middle values, in `f64`, for an
/// even count).
pub fn coordinate_median(vectors: &[&[f32]]) -> Result<Vec<f32>, FlatError> {
    per_coordinate_sorted(vectors, |sorted| {
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            ((f64::from(sorted[mid - 1]) + f64::from(sorted[mid])) / 2.0) as f32
        }
    })
}

/// How many values [`trimmed_mean`] drops at each end for `n` inputs and a share in
/// thousandths (rounded down; never so many that nothing is left).
pub fn trim_count(n: usize, trim_per_mille: u16) -> usize {
    let trim = n * usize::from(trim_per_mille) / 1000;
    trim.min(n.saturating_sub(1) / 2)
}

/// The mean of each coordinate after dropping its `trim` smallest and `trim` largest values.
/// `trim` must leave at least one value (`2 * trim < n`).
pub fn trimmed_mean(vectors: &[&[f32]], trim: usize) -> Result<Vec<f32>, FlatError> {
    if 2 * trim >= vectors.len().max(1) {
        return Err(FlatError::TrimTooLarge {
            trim,
            vectors: vectors.len(),
        });
    }
    per_coordinate_sorted(vectors, |sorted| {
        let kept = &sorted[trim..sorted.len() - trim];
        let mut sum = 0.0f64;
        for &x in kept {
            sum += f64::from(x);
        }
        (sum / kept.len() as f64) as f32
    })
}

/// Euclidean distance between two equal-length vectors, summed in `f64` in index order.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    let mut sum = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        sum += d * d;
    }
    sum.sqrt()
}

/// Centered clipping (Karimireddy, He and Jaggi, ICML 2021): starting from the coordinate-wise
/// median, each of `iterations` steps moves the centre `v` by the mean of the inputs' offsets
/// `x_i - v`, each offset clipped to length `tau`, so no input moves it more than `tau / n`
/// per step however far away it is.
///
/// The paper starts from the previous round's aggregate (server momentum); we start from the
/// median because a peer that resumes from a checkpoint does not hold the previous aggregate,
/// and every validator must recompute the same bits. `tau` is the median of the inputs'
/// distances to that start, so the rule needs no scale set in advance: at least half the
/// inputs are never clipped in the first step.
pub fn centered_clip(vectors: &[&[f32]], iterations: u32) -> Result<Vec<f32>, FlatError> {
    let mut centre = coordinate_median(vectors)?;
    let mut distances: Vec<f64> = vectors.iter().map(|v| distance(v, &centre)).collect();
    let tau = {
        let mut sorted = distances.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        // Non-finite only when at least half the inputs are: then the median start stands.
        Some(sorted[sorted.len() / 2])
            .filter(|t| t.is_finite())
            .unwrap_or(0.0)
    };
    let n = vectors.len() as f64;
    for step in 0..iterations {
        if step > 0 {
            for (d, v) in distances.iter_mut().zip(vectors) {
                *d = distance(v, &centre);
            }
        }
        let mut shift = vec![0.0f64; centre.len()];
        for (v, &d) in vectors.iter().zip(&distances) {
            // A non-finite distance (NaN or infinite input) gets no weight; a zero one adds
            // nothing anyway.
            if !d.is_finite() || d == 0.0 {
                continue;
            }
            let scale = if d > tau { tau / d } else { 1.0 };
            for ((s, &x), &c) in shift.iter_mut().zip(v.iter()).zip(&centre) {
                *s += scale * (f64::from(x) - f64::from(c));
            }
        }
        for (c, s) in centre.iter_mut().zip(&shift) {
            *c = (f64::from(*c) + s / n) as f32;
        }
    }
    Ok(centre)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refs(vs: &[Vec<f32>]) -> Vec<&[f32]> {
        vs.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let vs = vec![vec![1.0, 9.0], vec![3.0, -1.0], vec![2.0, 4.0]];
        assert_eq!(coordinate_median(&refs(&vs)).unwrap(), vec![2.0, 4.0]);
        let vs = vec![vec![1.0], vec![4.0], vec![2.0], vec![100.0]];
        assert_eq!(coordinate_median(&refs(&vs)).unwrap(), vec![3.0]);
    }

    #[test]
    fn trimmed_mean_drops_each_end() {
        let vs = vec![vec![-1e9], vec![1.0], vec![2.0], vec![3.0], vec![1e9]];
        assert_eq!(trimmed_mean(&refs(&vs), 1).unwrap(), vec![2.0]);
        assert_eq!(trimmed_mean(&refs(&vs), 0).unwrap(), vec![1.2]);
        assert!(matches!(
            trimmed_mean(&refs(&vs), 3),
            Err(FlatError::TrimTooLarge {
                trim: 3,
                vectors: 5
            })
        ));
    }

    #[test]
    fn trim_count_rounds_down_and_always_leaves_a_value() {
        assert_eq!(trim_count(10, 100), 1);
        assert_eq!(trim_count(19, 100), 1);
        assert_eq!(trim_count(20, 100), 2);
        assert_eq!(trim_count(4, 499), 1);
        assert_eq!(trim_count(1, 499), 0);
        assert_eq!(trim_count(3, 1000), 1);
    }

    #[test]
    fn refuses_empty_and_ragged_inputs() {
        assert_eq!(coordinate_median(&[]), Err(FlatError::Empty));
        let vs = vec![vec![1.0, 2.0], vec![1.0]];
        assert!(matches!(
            centered_clip(&refs(&vs), 1),
            Err(FlatError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn non_finite_inputs_are_outvoted() {
        let vs = vec![
            vec![1.0, 1.0],
            vec![f32::NAN, f32::INFINITY],
            vec![1.5, 2.0],
            vec![2.0, 3.0],
            vec![f32::NEG_INFINITY, -f32::NAN],
        ];
        for out in [
            coordinate_median(&refs(&vs)).unwrap(),
            trimmed_mean(&refs(&vs), 2).unwrap(),
            centered_clip(&refs(&vs), 3).unwrap(),
        ] {
            assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
        }
    }

    #[test]
    fn one_far_input_moves_centered_clip_by_at_most_tau_over_n_per_step() {
        let mut vs: Vec<Vec<f32>> = (0..9).map(|i| vec![i as f32 * 0.01; 4]).collect();
        vs.push(vec![1e6; 4]);
        let median = coordinate_median(&refs(&vs)).unwrap();
        let out = centered_clip(&refs(&vs), 1).unwrap();
        let tau = {
            let mut d: Vec<f64> = vs.iter().map(|v| distance(v, &median)).collect();
            d.sort_by(f64::total_cmp);
            d[d.len() / 2]
        };
        assert!(
            distance(&out, &median) <= 2.0 * tau,
            "moved {}",
            distance(&out, &median)
        );
        assert!(out.iter().all(|&x| x < 0.1), "{out:?}");
    }

    /// n honest vectors near `centre` and f < n hostile ones anywhere.
    fn honest_and_hostile() -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        (1usize..6, 1usize..12).prop_flat_map(|(dim, honest)| {
            let hostile = 0..honest; // a strict minority
            (
                prop::collection::vec(prop::collection::vec(-1.0f32..1.0, dim), honest),
                hostile.prop_flat_map(move |f| {
                    prop::collection::vec(
                        prop::collection::vec(
                            prop_oneof![-1e30f32..1e30, Just(f32::NAN), Just(f32::INFINITY)],
                            dim,
                        ),
                        f,
                    )
                }),
            )
        })
    }

    fn honest_range(honest: &[Vec<f32>], i: usize) -> (f32, f32) {
        honest
            .iter()
            .map(|v| v[i])
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            })
    }

    proptest! {
        #[test]
        fn the_output_does_not_depend_on_the_order_of_the_inputs(
            (honest, hostile) in honest_and_hostile(), seed in any::<u64>()
        ) {
            let mut all: Vec<Vec<f32>> = honest.into_iter().chain(hostile).collect();
            let a_med = coordinate_median(&refs(&all)).unwrap();
            let a_trim = trimmed_mean(&refs(&all), trim_count(all.len(), 200)).unwrap();
            let a_cc = centered_clip(&refs(&all), 2).unwrap();
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..all.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                all.swap(i, (s >> 33) as usize % (i + 1));
            }
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            prop_assert_eq!(bits(a_med), bits(coordinate_median(&refs(&all)).unwrap()));
            prop_assert_eq!(bits(a_trim), bits(trimmed_mean(&refs(&all), trim_count(all.len(), 200)).unwrap()));
            // Centered clipping sums in input order, so only the sorting rules are
            // order-free to the bit; its result must still agree closely.
            let b_cc = centered_clip(&refs(&all), 2).unwrap();
            for (x, y) in a_cc.iter().zip(&b_cc) {
                prop_assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{} vs {}", x, y);
            }
        }

        #[test]
        fn median_stays_within_the_honest_range_when_a_minority_is_hostile(
            (honest, hostile) in honest_and_hostile()
        ) {
            let all: Vec<Vec<f32>> = honest.iter().cloned().chain(hostile).collect();
            let out = coordinate_median(&refs(&all)).unwrap();
            for (i, &x) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&honest, i);
                prop_assert!(lo <= x && x <= hi, "coordinate {}: {} outside [{}, {}]", i, x, lo, hi);
            }
        }

        #[test]
        fn trimmed_mean_stays_within_the_honest_range_when_it_trims_every_hostile_input(
            (honest, hostile) in honest_and_hostile()
        ) {
            let trim = hostile.len();
            let all: Vec<Vec<f32>> = honest.iter().cloned().chain(hostile).collect();
            prop_assume!(2 * trim < all.len());
            let out = trimmed_mean(&refs(&all), trim).unwrap();
            for (i, &x) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&honest, i);
                // The kept values all lie in the honest range; their f64 mean rounds once.
                prop_assert!(lo <= x && x <= hi, "coordinate {}: {} outside [{}, {}]", i, x, lo, hi);
            }
        }

        #[test]
        fn centered_clip_stays_near_the_honest_inputs(
            (honest, hostile) in honest_and_hostile()
        ) {
            let all: Vec<Vec<f32>> = honest.iter().cloned().chain(hostile).collect();
            let out = centered_clip(&refs(&all), 3).unwrap();
            // The median start lies in the honest box; three steps of at most tau each, and
            // tau is at most the honest inputs' spread around it (at most 2 per coordinate).
            let dim = out.len() as f32;
            for (i, &x) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&honest, i);
                let slack = 3.0 * 2.0 * dim.sqrt();
                prop_assert!(x.is_finite() && lo - slack <= x && x <= hi + slack,
                    "coordinate {}: {} far outside [{}, {}]", i, x, lo, hi);
            }
        }
    }
}
