//! Sealing a whole dataset: cut into shards of a fixed sample count, each encrypted.

use super::DatasetKey;
use super::manifest::{Layout, MAX_SHARDS, Manifest, Schema, ShardEntry};
use super::shard::{MAX_SHARD_BYTES, Shard, ShardError};
use crate::data::Dataset;

/// A sealed dataset: the (unsigned) manifest and the shards it lists, in index order.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Sign it with [`super::SignedManifest::sign`] before publishing.
    pub manifest: Manifest,
    /// Shard `i` is `shards[i]`.
    pub shards: Vec<Shard>,
}

/// Why a dataset was not sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Zero samples per shard.
    #[error("samples per shard must be at least 1")]
    ZeroSamplesPerShard,
    /// The dataset's dimensions do not fit a schema (they never do past the .tsd limits).
    #[error("the dataset's image size or class count does not fit the dataset format")]
    BadSchema,
    /// A shard would exceed the shard size limit.
    #[error(
        "{samples_per_shard} samples per shard make shards of {len} bytes, over the limit of {MAX_SHARD_BYTES}: use at most {max_samples} samples per shard"
    )]
    ShardTooLarge {
        /// Samples per shard asked for.
        samples_per_shard: u32,
        /// The shard length they make.
        len: usize,
        /// The most that fit.
        max_samples: usize,
    },
    /// More shards than a manifest may list.
    #[error(
        "{shards} shards exceed the limit of {MAX_SHARDS} per manifest: use more samples per shard"
    )]
    TooManyShards {
        /// Shards that would be made.
        shards: usize,
    },
    /// Nothing to seal, or an empty part.
    #[error("no samples to seal: every shard needs at least one sample")]
    Empty,
    /// The layout does not count the parts given.
    #[error("the layout lists {layout} shards but {parts} parts were given")]
    Layout {
        /// Shards the layout lists.
        layout: u64,
        /// Parts given.
        parts: usize,
    },
    /// A shard failed to seal.
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// Cuts `dataset` into shards of `samples_per_shard` samples (the last may hold fewer) and
/// encrypts each under `key` with a nonce drawn from `rng`.
pub fn seal_dataset<R: rand_core::CryptoRng + ?Sized>(
    dataset: &Dataset,
    samples_per_shard: u32,
    key: &DatasetKey,
    rng: &mut R,
) -> Result<Sealed, SealError> {
    if samples_per_shard == 0 {
        return Err(SealError::ZeroSamplesPerShard);
    }
    let schema = Schema::of(dataset).ok_or(SealError::BadSchema)?;
    let per = samples_per_shard as usize;
    let len = schema.shard_len(per.min(dataset.len()));
    if len > MAX_SHARD_BYTES {
        let image = dataset.image_len() + 1;
        return Err(SealError::ShardTooLarge {
            samples_per_shard,
            len,
            max_samples: (MAX_SHARD_BYTES - schema.shard_len(0)) / image,
        });
    }
    let count = dataset.len().div_ceil(per);
    if count > MAX_SHARDS {
        return Err(SealError::TooManyShards { shards: count });
    }
    let parts: Vec<Dataset> = (0..dataset.len())
        .step_by(per)
        .map(|start| {
            let indices: Vec<usize> = (start..(start + per).min(dataset.len())).collect();
            dataset.subset(&indices)
        })
        .collect();
    let layout = Layout {
        // count <= MAX_SHARDS, so it fits in u32.
        train: count as u32,
        ..Layout::default()
    };
    seal_shards(&parts, layout, key, rng)
}

/// Seals each of `parts` as one shard, in order, under `key`: a run's data as its plan cut it
/// (training shards, then validation, then test, as `layout` says).
pub fn seal_shards<R: rand_core::CryptoRng + ?Sized>(
    parts: &[Dataset],
    layout: Layout,
    key: &DatasetKey,
    rng: &mut R,
) -> Result<Sealed, SealError> {
    if parts.len() > MAX_SHARDS {
        return Err(SealError::TooManyShards {
            shards: parts.len(),
        });
    }
    if layout.len() != parts.len() as u64 {
        return Err(SealError::Layout {
            layout: layout.len(),
            parts: parts.len(),
        });
    }
    let first = parts.first().ok_or(SealError::Empty)?;
    let schema = Schema::of(first).ok_or(SealError::BadSchema)?;
    let mut shards = Vec::with_capacity(parts.len());
    let mut entries = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        if Schema::of(part) != Some(schema) {
            return Err(SealError::BadSchema);
        }
        if part.is_empty() {
            return Err(SealError::Empty);
        }
        // parts.len() <= MAX_SHARDS, so the index fits in u32.
        let shard = Shard::seal(key, index as u32, part, rng)?;
        entries.push(ShardEntry {
            address: shard.address(),
            // Bounded by MAX_SHARD_BYTES (Shard::seal checks).
            size: shard.as_bytes().len() as u32,
            samples: part.len() as u32,
        });
        shards.push(shard);
    }
    Ok(Sealed {
        manifest: Manifest {
            run_id: *key.run_id(),
            epoch: key.epoch(),
            schema,
            layout,
            shards: entries,
        },
        shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SignedManifest;
    use crate::vault::manifest::tests::owner;
    use crate::vault::shard::tests::samples;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn a_sealed_dataset_opens_back_to_the_same_samples_in_order() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let key = DatasetKey::generate([3; 32], 1, &mut rng);
        let data = samples(23, 1);
        let sealed = seal_dataset(&data, 10, &key, &mut rng).unwrap();
        let counts: Vec<u32> = sealed.manifest.shards.iter().map(|e| e.samples).collect();
        assert_eq!(counts, [10, 10, 3]);
        let signed = SignedManifest::sign(sealed.manifest.clone(), &owner()).unwrap();
        let manifest = signed.verify(&owner().verifying_key(), &[3; 32]).unwrap();
        let mut labels = Vec::new();
        let mut pixels = Vec::new();
        for (i, shard) in sealed.shards.iter().enumerate() {
            let part = manifest
                .open_shard(i as u32, shard.as_bytes(), &key)
                .unwrap();
            labels.extend_from_slice(part.labels());
            for j in 0..part.len() {
                pixels.extend_from_slice(part.image(j));
            }
        }
        assert_eq!(Dataset::from_parts(2, 3, 3, labels, pixels).unwrap(), data);
    }

    #[test]
    fn through_the_manifest_a_damaged_or_misplaced_shard_is_named() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let key = DatasetKey::generate([3; 32], 1, &mut rng);
        let sealed = seal_dataset(&samples(8, 2), 4, &key, &mut rng).unwrap();
        let manifest = &sealed.manifest;
        let good = sealed.shards[0].as_bytes();
        for pos in [0, 1, 20, good.len() - 1] {
            let mut bad = good.to_vec();
            bad[pos] ^= 0x01;
            assert_eq!(
                manifest.open_shard(0, &bad, &key),
                Err(ShardError::WrongAddress { index: 0 }),
                "byte {pos}"
            );
        }
        assert_eq!(
            manifest.open_shard(1, good, &key),
            Err(ShardError::WrongAddress { index: 1 })
        );
        assert!(matches!(
            manifest.open_shard(2, good, &key),
            Err(ShardError::NoSuchShard { index: 2, count: 2 })
        ));
        // Same size, other shape: caught after decryption, not silently reinterpreted.
        let mut transposed = manifest.clone();
        transposed.schema.rows = 3;
        transposed.schema.cols = 2;
        assert_eq!(
            transposed.open_shard(0, good, &key),
            Err(ShardError::Mismatch {
                index: 0,
                what: "schema"
            })
        );
    }

    #[test]
    fn shard_sizes_out_of_bounds_are_refused_with_what_fits() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let key = DatasetKey::generate([3; 32], 1, &mut rng);
        let data = samples(4, 1);
        assert_eq!(
            seal_dataset(&data, 0, &key, &mut rng).unwrap_err(),
            SealError::ZeroSamplesPerShard
        );
        let n = MAX_SHARD_BYTES / (1 + 64 * 64) + 1;
        let big = Dataset::from_parts(64, 64, 2, vec![0; n], vec![0; n * 64 * 64]).unwrap();
        let err = seal_dataset(&big, n as u32, &key, &mut rng).unwrap_err();
        let SealError::ShardTooLarge { max_samples, .. } = err else {
            panic!("{err:?}")
        };
        assert!(seal_dataset(&big, max_samples as u32, &key, &mut rng).is_ok());
        assert!(seal_dataset(&big, max_samples as u32 + 1, &key, &mut rng).is_err());
    }

    #[test]
    fn a_runs_parts_seal_one_shard_each_and_the_layout_names_their_part() {
        use crate::vault::{Layout, Part};
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let key = DatasetKey::generate([3; 32], 1, &mut rng);
        let parts = vec![samples(5, 1), samples(4, 2), samples(3, 3), samples(2, 4)];
        let layout = Layout {
            train: 2,
            validation: 1,
            test: 1,
        };
        let sealed = seal_shards(&parts, layout, &key, &mut rng).unwrap();
        let counts: Vec<u32> = sealed.manifest.shards.iter().map(|e| e.samples).collect();
        assert_eq!(counts, [5, 4, 3, 2]);
        let named: Vec<_> = (0..5).map(|i| sealed.manifest.layout.part(i)).collect();
        assert_eq!(
            named,
            [
                Some(Part::Train),
                Some(Part::Train),
                Some(Part::Validation),
                Some(Part::Test),
                None
            ]
        );
        let opened = sealed
            .manifest
            .open_shard(2, sealed.shards[2].as_bytes(), &key)
            .unwrap();
        assert_eq!(opened, parts[2]);
        let wrong = Layout { train: 3, ..layout };
        assert_eq!(
            seal_shards(&parts, wrong, &key, &mut rng).unwrap_err(),
            SealError::Layout {
                layout: 5,
                parts: 4
            }
        );
        assert_eq!(
            seal_shards(&[], Layout::default(), &key, &mut rng).unwrap_err(),
            SealError::Empty
        );
    }
}
