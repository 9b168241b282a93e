//! Plain scalar maths on flat parameter vectors, bit-identical on every peer.
//!
//! Aggregating updates and applying them must give the same bytes natively and in wasm,
//! or peers would disagree on the model's hash. These functions therefore use only IEEE
//! basic operations (`+`, `*`, `/` on `f32`/`f64`, never fused, never reordered) in a fixed
//! index order, with no SIMD, no threads and no library kernels. Rust never contracts
//! `a * b + c` into an FMA on its own, so the same source gives the same bits on x86-64
//! and wasm32. `cargo xtask test` checks this against a run in headless Chromium.

use std::fmt;

use sha2::{Digest, Sha256};

/// Why a flat-vector operation refused its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FlatError {
    /// Two vectors that must have one length do not.
    #[error("vector length mismatch: expected {expected} values, found {found}")]
    LengthMismatch {
        /// The length of the first vector.
        expected: usize,
        /// The length of the offending vector.
        found: usize,
    },
    /// An aggregation was asked for with no vectors.
    #[error("nothing to aggregate: at least one vector is needed")]
    Empty,
    /// The number of weights differs from the number of vectors.
    #[error("{weights} weights given for {vectors} vectors")]
    WeightCount {
        /// How many weights were given.
        weights: usize,
        /// How many vectors were given.
        vectors: usize,
    },
    /// A weight is negative, NaN or infinite, or all weights are zero.
    #[error("weights must be finite, non-negative and not all zero")]
    BadWeights,
    /// A trimmed mean was asked to drop every value.
    #[error("cannot trim {trim} values at each end of {vectors}: at least one must be left")]
    TrimTooLarge {
        /// Values to drop at each end.
        trim: usize,
        /// How many vectors were given.
        vectors: usize,
    },
}

pub(crate) fn check_same_len(expected: usize, found: usize) -> Result<(), FlatError> {
    if expected == found {
        Ok(())
    } else {
        Err(FlatError::LengthMismatch { expected, found })
    }
}

/// `sum_k weights[k] * vectors[k]`, element by element.
///
/// Accumulates in `f64` in the order of `vectors`, then rounds once to `f32`.
pub fn weighted_sum(vectors: &[&[f32]], weights: &[f64]) -> Result<Vec<f32>, FlatError> {
    Ok(weighted_sum_f64(vectors, weights)?
        .into_iter()
        .map(|x| x as f32)
        .collect())
}

/// The weighted mean `sum_k w_k v_k / sum_k w_k` (e.g. weights = samples per update).
///
/// Weights must be finite, non-negative and not all zero.
pub fn weighted_mean(vectors: &[&[f32]], weights: &[f64]) -> Result<Vec<f32>, FlatError> {
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(FlatError::BadWeights);
    }
    let mut total = 0.0f64;
    for w in weights {
        total += w;
    }
    if total <= 0.0 {
        return Err(FlatError::BadWeights);
    }
    Ok(weighted_sum_f64(vectors, weights)?
        .into_iter()
        .map(|x| (x / total) as f32)
        .collect())
}

fn weighted_sum_f64(vectors: &[&[f32]], weights: &[f64]) -> Result<Vec<f64>, FlatError> {
    let first = vectors.first().ok_or(FlatError::Empty)?;
    if weights.len() != vectors.len() {
        return Err(FlatError::WeightCount {
            weights: weights.len(),
            vectors: vectors.len(),
        });
    }
    for v in vectors {
        check_same_len(first.len(), v.len())?;
    }
    let mut acc = vec![0.0f64; first.len()];
    for (v, &w) in vectors.iter().zip(weights) {
        for (a, &x) in acc.iter_mut().zip(v.iter()) {
            *a += w * f64::from(x);
        }
    }
    Ok(acc)
}

/// `params[i] += scale * delta[i]`, in `f32`, one rounding per operation.
pub fn apply_delta(params: &mut [f32], delta: &[f32], scale: f32) -> Result<(), FlatError> {
    check_same_len(params.len(), delta.len())?;
    for (p, &d) in params.iter_mut().zip(delta) {
        *p += scale * d;
    }
    Ok(())
}

/// `after[i] - before[i]`: the delta a trainer reports after its local steps.
pub fn difference(after: &[f32], before: &[f32]) -> Result<Vec<f32>, FlatError> {
    check_same_len(after.len(), before.len())?;
    Ok(after.iter().zip(before).map(|(a, b)| a - b).collect())
}

/// The SHA-256 identity of a flat parameter vector: the model version `h` of DESIGN.md.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ParamHash(pub [u8; 32]);

impl ParamHash {
    /// Domain string hashed first, so a parameter hash can never equal another kind of hash.
    pub const DOMAIN: &'static [u8] = b"tabswarm/params/v1";

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ParamHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ParamHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParamHash({})", &self.to_hex()[..16])
    }
}

/// Hashes `DOMAIN || len as u64 LE || each value's IEEE bits as u32 LE`.
///
/// Bits, not values: `-0.0` and `0.0`, or two NaN payloads, hash differently, because peers
/// must agree on exact bytes.
pub fn param_hash(params: &[f32]) -> ParamHash {
    let mut h = Sha256::new();
    h.update(ParamHash::DOMAIN);
    h.update((params.len() as u64).to_le_bytes());
    for p in params {
        h.update(p.to_bits().to_le_bytes());
    }
    ParamHash(h.finalize().into())
}

/// A fixed set of computations on seeded inputs, run natively and in wasm to prove
/// that both give identical bits. Returns `(name, hash)` pairs.
///
/// Inputs are drawn from [`crate::rng::SeededRng`] and include awkward values (tiny, huge,
/// negative zero, values whose sums round) so that any reordering or fusion would show.
pub fn conformance_vectors(seed: u64) -> Vec<(&'static str, ParamHash)> {
    const LEN: usize = 10_007;
    let mut rng = crate::rng::SeededRng::new(seed, "flat-conformance");
    let mut draw = |scale: f32| -> Vec<f32> {
        (0..LEN)
            .map(|i| match i % 97 {
                0 => -0.0,
                1 => 1e-30 * rng.uniform(1.0),
                2 => 3.0e7 + rng.uniform(1.0),
                _ => rng.uniform(scale),
            })
            .collect()
    };
    let a = draw(1.0);
    let b = draw(0.01);
    let c = draw(100.0);
    let weights = [64.0, 17.0, 1.0 / 3.0];
    let vectors = [a.as_slice(), b.as_slice(), c.as_slice()];

    let mut out = vec![("input_a", param_hash(&a))];
    // These cannot fail: the inputs above have equal lengths and good weights.
    if let Ok(sum) = weighted_sum(&vectors, &weights) {
        out.push(("weighted_sum", param_hash(&sum)));
    }
    if let Ok(mean) = weighted_mean(&vectors, &weights) {
        out.push(("weighted_mean", param_hash(&mean)));
        let mut applied = a.clone();
        if apply_delta(&mut applied, &mean, 0.1).is_ok() {
            out.push(("apply_delta", param_hash(&applied)));
        }
    }
    if let Ok(diff) = difference(&c, &b) {
        out.push(("difference", param_hash(&diff)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weighted_mean_of_known_values() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [3.0f32, 2.0, 1.0];
        let m = weighted_mean(&[&a, &b], &[1.0, 3.0]).unwrap();
        assert_eq!(m, vec![2.5, 2.0, 1.5]);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        assert_eq!(weighted_sum(&[], &[]), Err(FlatError::Empty));
        let a = [1.0f32; 3];
        let b = [1.0f32; 4];
        assert_eq!(
            weighted_sum(&[&a, &b], &[1.0, 1.0]),
            Err(FlatError::LengthMismatch {
                expected: 3,
                found: 4
            })
        );
        assert_eq!(weighted_mean(&[&a], &[0.0]), Err(FlatError::BadWeights));
        assert_eq!(
            weighted_mean(&[&a], &[f64::NAN]),
            Err(FlatError::BadWeights)
        );
        assert_eq!(
            weighted_sum(&[&a], &[1.0, 2.0]),
            Err(FlatError::WeightCount {
                weights: 2,
                vectors: 1
            })
        );
        let mut p = [0.0f32; 2];
        assert!(apply_delta(&mut p, &a, 1.0).is_err());
    }

    #[test]
    fn hash_sees_every_bit_and_the_length() {
        let base = vec![0.5f32; 100];
        let mut flipped = base.clone();
        flipped[57] = f32::from_bits(flipped[57].to_bits() ^ 1);
        assert_ne!(param_hash(&base), param_hash(&flipped));
        assert_ne!(param_hash(&[0.0]), param_hash(&[-0.0]));
        assert_ne!(param_hash(&base), param_hash(&base[..99]));
        assert_eq!(param_hash(&base).to_hex().len(), 64);
    }

    #[test]
    fn conformance_vectors_are_stable_per_seed() {
        let a = conformance_vectors(1);
        assert_eq!(a.len(), 5);
        assert_eq!(a, conformance_vectors(1));
        assert_ne!(a, conformance_vectors(2));
    }

    proptest! {
        #[test]
        fn delta_roundtrip_is_close(v in proptest::collection::vec(-1e3f32..1e3, 1..64),
                                    w in proptest::collection::vec(-1e3f32..1e3, 1..64)) {
            let n = v.len().min(w.len());
            let (before, after) = (&v[..n], &w[..n]);
            let delta = difference(after, before).unwrap();
            let mut p = before.to_vec();
            apply_delta(&mut p, &delta, 1.0).unwrap();
            for (x, y) in p.iter().zip(after) {
                prop_assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()));
            }
        }

        #[test]
        fn mean_lies_between_min_and_max(vals in proptest::collection::vec(-1e6f32..1e6, 1..8),
                                         ws in proptest::collection::vec(0.1f64..100.0, 8)) {
            let vecs: Vec<Vec<f32>> = vals.iter().map(|v| vec![*v]).collect();
            let refs: Vec<&[f32]> = vecs.iter().map(|v| v.as_slice()).collect();
            let m = weighted_mean(&refs, &ws[..vals.len()]).unwrap()[0];
            let lo = vals.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(m >= lo && m <= hi);
        }
    }
}
