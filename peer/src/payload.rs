//! An update's payload bytes: a version byte, the trainer's address, then the delta in the
//! run's compression (genesis `compression`): version 1 carries little-endian f32s (no
//! compression), version 2 a `tabswarm_core::compress` encoding (int8, or top-k as a sparse
//! vector). The announcement names the payload by the hash of these bytes. Every peer decodes
//! a payload to the same f32 vector, so validators recompute the aggregate bit for bit.
//!
//! The trainer's address inside the bytes gives every trainer's payload an address of its own:
//! a peer that copies someone else's announcement under its own key names a payload that
//! does not exist, and to claim the same delta it must first fetch it and re-wrap it, so the
//! original reaches the pool first and the copy is refused as a duplicate
//! ([`crate::pool::Pool::add_payload`]).

use std::sync::Arc;

use tabswarm_consensus::genesis::{Compression, Genesis, RunId};
use tabswarm_consensus::identity::{Address, Keypair};
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_core::chunks::{bytes_to_f32s, f32s_to_bytes};
use tabswarm_core::compress::{self, CompressError, ErrorFeedback, Sparse};
use tabswarm_core::train::LocalUpdate;

use crate::fetch::Blob;
use crate::jobs::update_weight;

/// Version of a payload of f32s.
pub const VERSION: u8 = 1;
/// Version of a compressed payload.
pub const VERSION_COMPRESSED: u8 = 2;
/// Bytes before the delta.
pub const HEADER_LEN: usize = 1 + 32;

/// Why payload bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Shorter than its header, or a delta that is not whole f32 values.
    #[error("an update payload of {0} bytes is not a header and whole f32 values")]
    Length(usize),
    /// Another format version than the run's compression uses.
    #[error("update payload version {got} is not this run's (expected {expected})")]
    Version {
        /// Found.
        got: u8,
        /// What the run's compression writes.
        expected: u8,
    },
    /// Wrapped for another trainer than the announcement names.
    #[error("the update payload names another trainer than its announcement")]
    Trainer,
    /// A compressed delta that does not decode, or not in the run's encoding.
    #[error("the update payload's compressed delta: {0}")]
    Compressed(#[from] CompressError),
    /// A delta of another length than the run's parameter vector.
    #[error("the update payload's delta has {got} values where the model has {expected}")]
    WrongLength {
        /// Values in the payload.
        got: usize,
        /// Parameters of the run's model.
        expected: usize,
    },
    /// More entries than the run's top-k allows.
    #[error("the update payload sends {sent} entries where the run's top-k allows {allowed}")]
    TooDense {
        /// Entries sent.
        sent: usize,
        /// The run's k for that length.
        allowed: usize,
    },
}

fn version_of(compression: Compression) -> u8 {
    if compression.is_none() {
        VERSION
    } else {
        VERSION_COMPRESSED
    }
}

/// What a trainer keeps between its updates: top-k's unsent remainder.
#[derive(Debug, Default)]
pub struct Encoder {
    feedback: ErrorFeedback,
}

impl Encoder {
    /// The payload bytes of `delta` by `trainer` in the run's `compression`, and the delta
    /// peers will decode from them (what this update really adds; with top-k, what was left
    /// out is kept for the next update).
    pub fn encode(
        &mut self,
        trainer: &Address,
        delta: &[f32],
        compression: Compression,
    ) -> (Vec<u8>, Vec<f32>) {
        let mut bytes = Vec::with_capacity(HEADER_LEN + delta.len() * 4);
        bytes.push(version_of(compression));
        bytes.extend_from_slice(&trainer.0);
        let sent = match compression {
            Compression::None => {
                bytes.extend_from_slice(&f32s_to_bytes(delta));
                delta.to_vec()
            }
            Compression::Int8 => {
                let body = compress::encode_int8(delta);
                let sent = compress::decode_int8(&body).unwrap_or_default();
                bytes.extend(body);
                sent
            }
            Compression::TopK { per_mille } => {
                let k = Compression::top_k(per_mille, delta.len());
                let sparse = self.feedback.top_k(delta, k);
                bytes.extend(sparse.encode());
                sparse.to_dense()
            }
        };
        (bytes, sent)
    }
}

impl Encoder {
    /// `key`'s signed announcement of `update` for `height` in `genesis`'s run (`run` is its
    /// id), the blob of its payload in the run's compression, and the delta peers decode from
    /// it: what a trainer sends, built in one place for every driver and the simulators.
    pub fn sign(
        &mut self,
        key: &Keypair,
        run: &RunId,
        genesis: &Genesis,
        height: u64,
        update: &LocalUpdate,
    ) -> (SignedUpdate, Arc<Blob>, Vec<f32>) {
        let (bytes, sent) = self.encode(&key.address(), &update.delta, genesis.compression);
        let (blob, address) = Blob::new(bytes);
        let header = UpdateHeader {
            height,
            base_param_hash: update.base.0,
            trainer: key.address(),
            samples: update_weight(&genesis.training),
            loss_before: update.loss_before,
            loss_after: update.loss_after,
            payload_hash: address,
            payload_len: blob.bytes.len() as u32,
        };
        (SignedUpdate::sign(header, key, run), blob, sent)
    }
}

/// The delta in `bytes`, which must be wrapped for `trainer` in the run's `compression` and
/// carry `expected_len` values (the model's parameters). The length is checked before a
/// sparse delta is expanded: a few bytes claiming millions of values allocate nothing.
pub fn decode(
    bytes: &[u8],
    trainer: &Address,
    compression: Compression,
    expected_len: usize,
) -> Result<Vec<f32>, PayloadError> {
    if bytes.len() < HEADER_LEN {
        return Err(PayloadError::Length(bytes.len()));
    }
    let expected = version_of(compression);
    if bytes[0] != expected {
        return Err(PayloadError::Version {
            got: bytes[0],
            expected,
        });
    }
    if bytes[1..HEADER_LEN] != trainer.0 {
        return Err(PayloadError::Trainer);
    }
    let body = &bytes[HEADER_LEN..];
    let check = |got: usize| {
        if got == expected_len {
            Ok(())
        } else {
            Err(PayloadError::WrongLength {
                got,
                expected: expected_len,
            })
        }
    };
    let delta = match compression {
        Compression::None => bytes_to_f32s(body).ok_or(PayloadError::Length(bytes.len()))?,
        Compression::Int8 => compress::decode_int8(body)?,
        Compression::TopK { per_mille } => {
            let sparse = Sparse::decode(body)?;
            check(sparse.len as usize)?;
            let allowed = Compression::top_k(per_mille, sparse.len as usize);
            if sparse.indices.len() > allowed {
                return Err(PayloadError::TooDense {
                    sent: sparse.indices.len(),
                    allowed,
                });
            }
            sparse.to_dense()
        }
    };
    check(delta.len())?;
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [
        Compression::None,
        Compression::Int8,
        Compression::TopK { per_mille: 250 },
    ];

    fn delta() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect()
    }

    #[test]
    fn a_payload_decodes_only_for_its_trainer_and_its_runs_compression() {
        let (me, other) = (Address([1; 32]), Address([2; 32]));
        let delta = delta();
        for c in ALL {
            let (bytes, sent) = Encoder::default().encode(&me, &delta, c);
            // What peers decode is exactly what the trainer says it sent.
            let n = delta.len();
            assert_eq!(decode(&bytes, &me, c, n), Ok(sent.clone()), "{c:?}");
            assert_eq!(decode(&bytes, &other, c, n), Err(PayloadError::Trainer));
            assert!(matches!(
                decode(&bytes, &me, c, n + 1),
                Err(PayloadError::WrongLength { .. })
            ));
            for wrong in ALL.into_iter().filter(|w| *w != c) {
                assert!(
                    decode(&bytes, &me, wrong, n).is_err(),
                    "{c:?} read as {wrong:?}"
                );
            }
            for cut in [0, 5, HEADER_LEN + 1, bytes.len() - 1] {
                assert!(
                    decode(&bytes[..cut], &me, c, n).is_err(),
                    "{c:?} cut at {cut}"
                );
            }
        }
        let (plain, _) = Encoder::default().encode(&me, &delta, Compression::None);
        assert_eq!(plain.len(), HEADER_LEN + 4 * delta.len());
        assert_ne!(
            plain,
            Encoder::default()
                .encode(&other, &delta, Compression::None)
                .0,
            "two trainers, one address"
        );
    }

    #[test]
    fn int8_and_top_k_cut_the_bytes_and_top_k_sends_what_it_left_out_later() {
        let me = Address([1; 32]);
        let delta = delta();
        let size = |c| Encoder::default().encode(&me, &delta, c).0.len() as f64;
        let dense = size(Compression::None);
        assert!(dense / size(Compression::Int8) > 3.5);
        assert!(dense / size(Compression::TopK { per_mille: 10 }) > 40.0);

        // Error feedback: over updates, everything a trainer computed is sent.
        let c = Compression::TopK { per_mille: 100 };
        let mut encoder = Encoder::default();
        let mut total_sent = vec![0f32; delta.len()];
        for _ in 0..10 {
            let (_, sent) = encoder.encode(&me, &delta, c);
            assert!(sent.iter().filter(|v| **v != 0.0).count() <= 100);
            for (t, s) in total_sent.iter_mut().zip(&sent) {
                *t += s;
            }
        }
        for (i, (t, d)) in total_sent.iter().zip(&delta).enumerate() {
            let owed = encoder.feedback.residual()[i];
            assert!((t + owed - 10.0 * d).abs() < 1e-3, "entry {i}");
        }
    }

    #[test]
    fn a_denser_top_k_than_the_run_allows_is_refused() {
        let me = Address([1; 32]);
        let (bytes, _) =
            Encoder::default().encode(&me, &delta(), Compression::TopK { per_mille: 500 });
        assert!(matches!(
            decode(&bytes, &me, Compression::TopK { per_mille: 10 }, 1000),
            Err(PayloadError::TooDense { .. })
        ));
    }

    #[test]
    fn a_sparse_delta_claiming_a_huge_model_is_refused_before_it_is_expanded() {
        let me = Address([1; 32]);
        let sparse = Sparse {
            len: compress::MAX_VALUES as u32,
            indices: vec![7],
            values: vec![1.0],
        };
        let mut bytes = vec![VERSION_COMPRESSED];
        bytes.extend_from_slice(&me.0);
        bytes.extend(sparse.encode());
        assert!(bytes.len() < 64, "a few bytes on the wire");
        assert_eq!(
            decode(&bytes, &me, Compression::TopK { per_mille: 10 }, 1000),
            Err(PayloadError::WrongLength {
                got: compress::MAX_VALUES,
                expected: 1000
            })
        );
    }
}
