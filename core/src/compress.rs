//! Update compression (DESIGN.md, "A round"): int8 quantization with a scale per chunk, and
//! top-k sparsification with error feedback. Plain scalar code on flat vectors, so a tab
//! and a server encode and decode the same bytes.
//!
//! - **int8**: each chunk of [`INT8_CHUNK`] values is scaled by its largest magnitude / 127
//!   and rounded; a value comes back within half a step (`scale / 2`) of what was sent.
//!   About 4x fewer bytes than f32.
//! - **top-k with error feedback** (Stich et al. 2018; the residual of SparseLoCo / DeMo): the
//!   trainer adds its delta to what it has not sent yet, sends the `k` entries of largest
//!   magnitude and keeps the rest for next time, so nothing is lost, only delayed.
//!
//! Wire forms start with a version byte and a kind byte; decoders check both, the length
//! limit, and every field's range before allocating. A run picks one in its genesis
//! (`compression`); `tabswarm_peer::payload` wraps it in an update's payload.

use serde::{Deserialize, Serialize};

/// Values per int8 scale.
pub const INT8_CHUNK: usize = 256;
/// The most values an encoded update may carry (a 64 MiB f32 model).
pub const MAX_VALUES: usize = 16 * 1024 * 1024;
const VERSION: u8 = 1;
const KIND_INT8: u8 = 1;
const KIND_SPARSE: u8 = 2;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// Not a version this build reads.
    #[error("unknown compressed-update version {0} (this build reads 1)")]
    Version(u8),
    /// Another kind of encoding than asked for.
    #[error("expected encoding kind {expected}, got {got}")]
    Kind {
        /// Asked for.
        expected: u8,
        /// Found.
        got: u8,
    },
    /// More values than [`MAX_VALUES`].
    #[error("{0} values exceed the limit of {MAX_VALUES}")]
    TooLarge(u64),
    /// Truncated, padded or inconsistent bytes.
    #[error("malformed compressed update: {0}")]
    Malformed(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Int8Wire {
    len: u32,
    scales: Vec<f32>,
    /// The int8 values as their two's-complement bytes (postcard writes a u8 as one byte).
    values: Vec<u8>,
}

fn header(kind: u8) -> Vec<u8> {
    vec![VERSION, kind]
}

fn body(bytes: &[u8], kind: u8) -> Result<&[u8], CompressError> {
    match bytes {
        [v, ..] if *v != VERSION => Err(CompressError::Version(*v)),
        [_, k, rest @ ..] if *k == kind => Ok(rest),
        [_, k, ..] => Err(CompressError::Kind {
            expected: kind,
            got: *k,
        }),
        _ => Err(CompressError::Malformed("shorter than its header")),
    }
}

/// The largest int8 scale: 128 steps of it (an int8 reaches -128) are still a finite f32.
/// A larger scale decoded finite bytes to infinity, and an infinite delta to every peer.
const MAX_INT8_SCALE: f32 = f32::MAX / 128.0;

/// `delta` quantized to int8 with one scale per [`INT8_CHUNK`] values.
pub fn encode_int8(delta: &[f32]) -> Vec<u8> {
    let mut scales = Vec::with_capacity(delta.len().div_ceil(INT8_CHUNK));
    let mut values = Vec::with_capacity(delta.len());
    for chunk in delta.chunks(INT8_CHUNK) {
        let max = chunk
            .iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 {
            (max / 127.0).min(MAX_INT8_SCALE)
        } else {
            0.0
        };
        scales.push(scale);
        values.extend(chunk.iter().map(|x| {
            if scale == 0.0 || !x.is_finite() {
                0
            } else {
                (x / scale).round().clamp(-127.0, 127.0) as i8 as u8
            }
        }));
    }
    let wire = Int8Wire {
        len: delta.len() as u32,
        scales,
        values,
    };
    let mut out = header(KIND_INT8);
    out.extend(postcard::to_allocvec(&wire).unwrap_or_default());
    out
}

/// Inverse of [`encode_int8`], up to half a quantization step per value.
pub fn decode_int8(bytes: &[u8]) -> Result<Vec<f32>, CompressError> {
    let rest = body(bytes, KIND_INT8)?;
    if rest.len() > MAX_VALUES * 2 + 64 {
        return Err(CompressError::TooLarge(rest.len() as u64));
    }
    let (wire, tail): (Int8Wire, _) =
        postcard::take_from_bytes(rest).map_err(|_| CompressError::Malformed("not int8 form"))?;
    if !tail.is_empty() {
        return Err(CompressError::Malformed("bytes after the end"));
    }
    let len = wire.len as usize;
    if len > MAX_VALUES {
        return Err(CompressError::TooLarge(len as u64));
    }
    if wire.values.len() != len || wire.scales.len() != len.div_ceil(INT8_CHUNK) {
        return Err(CompressError::Malformed("counts do not fit the length"));
    }
    if wire
        .scales
        .iter()
        .any(|s| !s.is_finite() || *s < 0.0 || *s > MAX_INT8_SCALE)
    {
        return Err(CompressError::Malformed(
            "a scale is negative, not finite or so large its steps overflow",
        ));
    }
    Ok(wire
        .values
        .iter()
        .enumerate()
        .map(|(i, q)| f32::from(*q as i8) * wire.scales[i / INT8_CHUNK])
        .collect())
}

/// A sparse update: `values[j]` at `indices[j]` of a vector of `len`, zero elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sparse {
    /// Length of the dense vector.
    pub len: u32,
    /// Positions, strictly increasing.
    pub indices: Vec<u32>,
    /// Values at those positions.
    pub values: Vec<f32>,
}

impl Sparse {
    /// The dense vector.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len as usize];
        for (i, v) in self.indices.iter().zip(&self.values) {
            out[*i as usize] = *v;
        }
        out
    }

    /// Version, kind, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = header(KIND_SPARSE);
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Inverse of [`Self::encode`]: limits, increasing in-range indices, finite values.
    pub fn decode(bytes: &[u8]) -> Result<Self, CompressError> {
        let rest = body(bytes, KIND_SPARSE)?;
        if rest.len() > MAX_VALUES * 9 + 64 {
            return Err(CompressError::TooLarge(rest.len() as u64));
        }
        let (s, tail): (Sparse, _) = postcard::take_from_bytes(rest)
            .map_err(|_| CompressError::Malformed("not sparse form"))?;
        if !tail.is_empty() {
            return Err(CompressError::Malformed("bytes after the end"));
        }
        if s.len as usize > MAX_VALUES {
            return Err(CompressError::TooLarge(u64::from(s.len)));
        }
        if s.indices.len() != s.values.len() || s.indices.len() > s.len as usize {
            return Err(CompressError::Malformed("index and value counts differ"));
        }
        if s.indices.windows(2).any(|w| w[0] >= w[1])
            || s.indices.last().is_some_and(|i| *i >= s.len)
        {
            return Err(CompressError::Malformed(
                "indices not increasing or out of range",
            ));
        }
        if s.values.iter().any(|v| !v.is_finite()) {
            return Err(CompressError::Malformed("a value is not finite"));
        }
        Ok(s)
    }
}

/// What a trainer has not sent yet: top-k's error feedback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// What is still owed, by position.
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// Adds `delta` to what is owed and takes the `k` entries of largest magnitude (ties to
    /// the lower index) out as the update to send; the rest stays owed. Non-finite entries of
    /// `delta` count as zero.
    pub fn top_k(&mut self, delta: &[f32], k: usize) -> Sparse {
        if self.residual.len() != delta.len() {
            self.residual = vec![0.0; delta.len()];
        }
        for (r, d) in self.residual.iter_mut().zip(delta) {
            if d.is_finite() {
                *r += d;
            }
        }
        let mut order: Vec<u32> = (0..delta.len() as u32).collect();
        let k = k.min(order.len());
        if k < order.len() {
            let r = &self.residual;
            order.select_nth_unstable_by(k, |a, b| {
                r[*b as usize]
                    .abs()
                    .total_cmp(&r[*a as usize].abs())
                    .then(a.cmp(b))
            });
            order.truncate(k);
        }
        order.sort_unstable();
        let values = order
            .iter()
            .map(|&i| std::mem::take(&mut self.residual[i as usize]))
            .collect();
        Sparse {
            len: delta.len() as u32,
            indices: order,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn int8_comes_back_within_half_a_step_of_each_chunks_scale(
            delta in proptest::collection::vec(-10f32..10.0, 0..1000),
        ) {
            let bytes = encode_int8(&delta);
            let back = decode_int8(&bytes).unwrap();
            prop_assert_eq!(back.len(), delta.len());
            for (c, (chunk, got)) in delta.chunks(INT8_CHUNK).zip(back.chunks(INT8_CHUNK)).enumerate() {
                let step = chunk.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                for (x, y) in chunk.iter().zip(got) {
                    prop_assert!((x - y).abs() <= step / 2.0 + step * 1e-5, "chunk {}: {} -> {}", c, x, y);
                }
            }
            prop_assert!(bytes.len() <= delta.len() + delta.len().div_ceil(INT8_CHUNK) * 4 + 16);
        }

        #[test]
        fn error_feedback_keeps_exactly_what_top_k_did_not_send(
            rounds in proptest::collection::vec(proptest::collection::vec(-1f32..1.0, 50), 1..6),
            k in 0usize..60,
        ) {
            let mut fb = ErrorFeedback::default();
            let mut owed = vec![0f32; 50];
            for delta in &rounds {
                let before: Vec<f32> = owed.iter().zip(delta).map(|(a, b)| a + b).collect();
                let sent = fb.top_k(delta, k);
                prop_assert_eq!(sent.indices.len(), k.min(50));
                let dense = sent.to_dense();
                // Sent plus still owed is everything owed: nothing dropped, nothing invented.
                for i in 0..50 {
                    prop_assert_eq!(dense[i] + fb.residual()[i], before[i]);
                }
                // What was sent is the largest part of it.
                let smallest_sent = sent.values.iter().fold(f32::INFINITY, |m, v| m.min(v.abs()));
                let largest_kept = fb.residual().iter().fold(0f32, |m, v| m.max(v.abs()));
                prop_assert!(sent.values.is_empty() || smallest_sent >= largest_kept);
                let decoded = Sparse::decode(&sent.encode()).unwrap();
                prop_assert_eq!(&decoded, &sent);
                owed = fb.residual().to_vec();
            }
        }

        #[test]
        fn random_and_truncated_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_int8(&bytes);
            let _ = Sparse::decode(&bytes);
            let mut framed = vec![VERSION, KIND_SPARSE];
            framed.extend(&bytes);
            let _ = Sparse::decode(&framed);
            framed[1] = KIND_INT8;
            let _ = decode_int8(&framed);
        }
    }

    #[test]
    fn int8_never_decodes_to_infinity_and_the_largest_deltas_still_encode() {
        // Found by fuzzing: a finite scale near f32::MAX times -128 was -inf.
        let wire = Int8Wire {
            len: 2,
            scales: vec![f32::MAX / 100.0],
            values: vec![0x80, 127],
        };
        let mut bytes = header(KIND_INT8);
        bytes.extend(postcard::to_allocvec(&wire).unwrap());
        assert!(matches!(
            decode_int8(&bytes),
            Err(CompressError::Malformed(_))
        ));
        let huge = decode_int8(&encode_int8(&[f32::MAX, -f32::MAX, 1.0])).unwrap();
        assert!(huge.iter().all(|v| v.is_finite()), "{huge:?}");
        assert!(huge[0] > f32::MAX / 2.0 && huge[1] < -f32::MAX / 2.0);
    }

    #[test]
    fn versions_kinds_and_bad_fields_are_named() {
        let int8 = encode_int8(&[1.0, -2.0]);
        let mut other = int8.clone();
        other[0] = 9;
        assert_eq!(decode_int8(&other), Err(CompressError::Version(9)));
        assert!(matches!(
            Sparse::decode(&int8),
            Err(CompressError::Kind { .. })
        ));
        let unsorted = Sparse {
            len: 4,
            indices: vec![2, 1],
            values: vec![1.0, 1.0],
        };
        assert!(Sparse::decode(&unsorted.encode()).is_err());
        let outside = Sparse {
            len: 2,
            indices: vec![5],
            values: vec![1.0],
        };
        assert!(Sparse::decode(&outside.encode()).is_err());
        let nan = Sparse {
            len: 2,
            indices: vec![0],
            values: vec![f32::NAN],
        };
        assert!(Sparse::decode(&nan.encode()).is_err());
    }
}
