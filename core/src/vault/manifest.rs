//! The dataset manifest: what the shards of one epoch are, signed by the data owner.
//!
//! It names each shard by address, size and sample count, so any peer holding the owner's
//! key (from genesis) can check what it stores or fetches, and a member with the dataset key
//! can check that what it decrypted is what the owner sealed.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::codec::{self, DecodeError, EncodeError};
use super::shard::{MAX_SHARD_BYTES, SHARD_OVERHEAD, ShardAddress, ShardError};
use super::signature::{self, MANIFEST_DOMAIN, Signature, VerifyError};
use super::{DatasetKey, RunId};
use crate::data::{Dataset, format};

/// Most shards one manifest lists (at 8 MiB each, 512 GiB of ciphertext).
pub const MAX_SHARDS: usize = 65_536;
/// Largest encoded signed manifest: [`MAX_SHARDS`] entries of at most 39 bytes fit in 3 MiB.
pub const MAX_MANIFEST_BYTES: usize = 3 * 1024 * 1024;

const KIND: &str = "manifest";

/// What every sample of the dataset looks like.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Sample kind, as in the `.tsd` header ([`format::KIND_GRAY8`]).
    pub kind: u8,
    /// Image height in pixels.
    pub rows: u16,
    /// Image width in pixels.
    pub cols: u16,
    /// Number of classes; every label is below it.
    pub classes: u8,
}

impl Schema {
    /// The schema of `dataset`, or `None` if its dimensions do not fit the format.
    pub fn of(dataset: &Dataset) -> Option<Self> {
        Some(Self {
            kind: format::KIND_GRAY8,
            rows: u16::try_from(dataset.rows()).ok()?,
            cols: u16::try_from(dataset.cols()).ok()?,
            classes: u8::try_from(dataset.classes()).ok()?,
        })
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.kind != format::KIND_GRAY8 {
            return Err("sample kind is not 0 (8-bit grayscale), the only one this build reads");
        }
        if self.classes == 0 {
            return Err("class count is 0");
        }
        let pixels = usize::from(self.rows) * usize::from(self.cols);
        if pixels == 0 || pixels > format::MAX_IMAGE_PIXELS {
            return Err("image size must be between 1 and 64x64 pixels");
        }
        Ok(())
    }

    /// The wire length of a shard of `samples` samples of this schema.
    pub fn shard_len(&self, samples: usize) -> usize {
        let image = usize::from(self.rows) * usize::from(self.cols);
        SHARD_OVERHEAD + format::HEADER_LEN + samples * (1 + image) + format::CHECKSUM_LEN
    }

    fn matches(&self, d: &Dataset) -> bool {
        Some(*self) == Self::of(d)
    }
}

/// One shard as the manifest lists it.
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Content address of the shard's wire bytes ([`super::address_of`]).
    pub address: ShardAddress,
    /// Wire length in bytes.
    pub size: u32,
    /// How many samples it holds.
    pub samples: u32,
}

impl std::fmt::Debug for ShardEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardEntry")
            .field("address", &codec::short_hex(&self.address))
            .field("size", &self.size)
            .field("samples", &self.samples)
            .finish()
    }
}

/// What the shards are for, in index order: the first `train` shards are training data, the
/// next `validation` the held-out set validators score updates on, the last `test` the set
/// peers report accuracy on. (A run's data also needs a validation shard: checked where a run
/// uses it, not by this format.)
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Training shards.
    pub train: u32,
    /// Validation shards, after the training shards.
    pub validation: u32,
    /// Test shards, last.
    pub test: u32,
}

/// The part of a dataset a shard belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Training data.
    Train,
    /// Held-out data validators score on.
    Validation,
    /// Test data.
    Test,
}

impl Layout {
    /// Total shards.
    pub fn len(&self) -> u64 {
        u64::from(self.train) + u64::from(self.validation) + u64::from(self.test)
    }

    /// Whether the layout lists no shard.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part shard `index` belongs to, if it is inside the layout.
    pub fn part(&self, index: u32) -> Option<Part> {
        let i = u64::from(index);
        let (t, v) = (u64::from(self.train), u64::from(self.validation));
        if i < t {
            Some(Part::Train)
        } else if i < t + v {
            Some(Part::Validation)
        } else if i < self.len() {
            Some(Part::Test)
        } else {
            None
        }
    }
}

/// The shards of one dataset epoch. Shard `i` is `shards[i]`; its index is in its AAD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run (hash of its genesis).
    pub run_id: RunId,
    /// Rises with every key rotation; a key opens only its own epoch's shards.
    pub epoch: u64,
    /// What every sample looks like.
    pub schema: Schema,
    /// Which shards are training, validation and test data.
    pub layout: Layout,
    /// The shards, in index order.
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    fn check(&self) -> Result<(), &'static str> {
        self.schema.check()?;
        if self.shards.is_empty() {
            return Err("no shards");
        }
        if self.shards.len() > MAX_SHARDS {
            return Err("more than 65,536 shards");
        }
        if self.layout.len() != self.shards.len() as u64 {
            return Err("the layout's shard counts do not add up to the shards listed");
        }
        for entry in &self.shards {
            let samples = entry.samples as usize;
            if samples == 0 || samples > format::MAX_EXAMPLES {
                return Err("a shard's sample count is not between 1 and 1,000,000");
            }
            let len = self.schema.shard_len(samples);
            if len > MAX_SHARD_BYTES {
                return Err("a shard is larger than 8 MiB");
            }
            if entry.size as usize != len {
                return Err("a shard's size does not fit its sample count and schema");
            }
        }
        Ok(())
    }

    /// Total samples over all shards.
    pub fn samples(&self) -> u64 {
        self.shards.iter().map(|e| u64::from(e.samples)).sum()
    }

    /// Checks shard `index`'s bytes against this manifest and decrypts them with `key`.
    ///
    /// In order: the key is this run's and epoch's, the bytes hash to the listed address,
    /// they decrypt (AEAD with run, epoch and index), and the samples fit the manifest.
    pub fn open_shard(
        &self,
        index: u32,
        bytes: &[u8],
        key: &DatasetKey,
    ) -> Result<Dataset, ShardError> {
        if key.run_id() != &self.run_id {
            return Err(ShardError::WrongRun);
        }
        if key.epoch() != self.epoch {
            return Err(ShardError::WrongEpoch {
                key_epoch: key.epoch(),
                manifest_epoch: self.epoch,
            });
        }
        let entry = self
            .shards
            .get(index as usize)
            .ok_or(ShardError::NoSuchShard {
                index,
                count: self.shards.len(),
            })?;
        if bytes.len() > MAX_SHARD_BYTES {
            return Err(ShardError::TooLarge { len: bytes.len() });
        }
        // The address comes before any parsing: a holder's bad bytes are named as such.
        if super::shard::address_of(bytes) != entry.address {
            return Err(ShardError::WrongAddress { index });
        }
        let samples = super::shard::decrypt(bytes, key, index)?;
        if samples.len() != entry.samples as usize {
            return Err(ShardError::Mismatch {
                index,
                what: "sample count",
            });
        }
        if !self.schema.matches(&samples) {
            return Err(ShardError::Mismatch {
                index,
                what: "schema",
            });
        }
        Ok(samples)
    }
}

/// A manifest with the data owner's signature over `domain || run id || manifest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    manifest: Manifest,
    signature: Signature,
}

impl SignedManifest {
    /// Signs `manifest` as the data owner, refusing one that decoders would refuse.
    pub fn sign(manifest: Manifest, owner: &SigningKey) -> Result<Self, EncodeError> {
        manifest
            .check()
            .map_err(|reason| EncodeError::Invalid { kind: KIND, reason })?;
        let signature = signature::sign(MANIFEST_DOMAIN, &manifest.run_id, &manifest, owner);
        let signed = Self {
            manifest,
            signature,
        };
        let len = signed.encode().len();
        if len > MAX_MANIFEST_BYTES {
            return Err(EncodeError::TooLarge {
                kind: KIND,
                len,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        Ok(signed)
    }

    /// The manifest, once the owner's signature for run `run_id` verifies.
    pub fn verify(&self, owner: &VerifyingKey, run_id: &RunId) -> Result<&Manifest, VerifyError> {
        signature::verify(
            KIND,
            MANIFEST_DOMAIN,
            run_id,
            &self.manifest.run_id,
            &self.manifest,
            &self.signature,
            owner,
        )?;
        Ok(&self.manifest)
    }

    /// The owner's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The epoch it claims (unverified: for filing stored copies, never for trusting them).
    pub fn epoch(&self) -> u64 {
        self.manifest.epoch
    }

    /// Version byte, then the canonical postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Inverse of [`Self::encode`]: size limit, version, canonical form, field ranges.
    /// The signature is checked by [`Self::verify`], not here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let signed: Self = codec::decode(bytes, MAX_MANIFEST_BYTES, KIND)?;
        signed
            .manifest
            .check()
            .map_err(|reason| DecodeError::Invalid { kind: KIND, reason })?;
        Ok(signed)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(in crate::vault) fn owner() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    pub(in crate::vault) fn manifest(shards: &[u32]) -> Manifest {
        let schema = Schema {
            kind: 0,
            rows: 2,
            cols: 3,
            classes: 3,
        };
        Manifest {
            run_id: [5; 32],
            epoch: 1,
            schema,
            layout: Layout {
                train: shards.len() as u32,
                ..Layout::default()
            },
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, &n)| ShardEntry {
                    address: [i as u8; 32],
                    size: schema.shard_len(n as usize) as u32,
                    samples: n,
                })
                .collect(),
        }
    }

    #[test]
    fn encode_decode_round_trips_and_the_signature_verifies() {
        let signed = SignedManifest::sign(manifest(&[10, 10, 3]), &owner()).unwrap();
        let bytes = signed.encode();
        assert_eq!(bytes[0], codec::VERSION);
        let back = SignedManifest::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        let m = back.verify(&owner().verifying_key(), &[5; 32]).unwrap();
        assert_eq!(m.samples(), 23);
    }

    #[test]
    fn every_tampered_field_fails_the_signature() {
        let signed = SignedManifest::sign(manifest(&[10, 10, 3]), &owner()).unwrap();
        let key = owner().verifying_key();
        let tampers: Vec<fn(&mut Manifest)> = vec![
            |m| m.epoch += 1,
            |m| m.schema.classes = 4,
            |m| m.schema.rows = 3,
            |m| m.shards[1].address[0] ^= 1,
            |m| m.shards.swap(0, 2),
            |m| {
                m.shards.pop();
            },
            |m| m.shards[2].samples = 4,
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            let mut bad = signed.clone();
            tamper(&mut bad.manifest);
            assert_eq!(
                bad.verify(&key, &[5; 32]),
                Err(VerifyError::BadSignature { kind: "manifest" }),
                "tamper {i}"
            );
        }
    }

    #[test]
    fn a_manifest_for_another_run_or_by_another_key_is_refused() {
        let signed = SignedManifest::sign(manifest(&[4]), &owner()).unwrap();
        let err = signed
            .verify(&owner().verifying_key(), &[6; 32])
            .unwrap_err();
        assert!(matches!(err, VerifyError::WrongRun { .. }));
        assert!(err.to_string().contains("cannot be used in this run"));
        // A run id rewritten to the one checked for is caught by the signature.
        let mut moved = signed.clone();
        moved.manifest.run_id = [6; 32];
        assert!(matches!(
            moved.verify(&owner().verifying_key(), &[6; 32]),
            Err(VerifyError::BadSignature { .. })
        ));
        let stranger = SigningKey::from_bytes(&[1; 32]).verifying_key();
        assert!(matches!(
            signed.verify(&stranger, &[5; 32]),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn invalid_manifests_are_neither_signed_nor_decoded() {
        let mut bad = manifest(&[4]);
        bad.shards[0].size += 1;
        assert!(matches!(
            SignedManifest::sign(bad.clone(), &owner()),
            Err(EncodeError::Invalid { .. })
        ));
        // The same manifest smuggled past `sign` is still refused by `decode`.
        let mut signed = SignedManifest::sign(manifest(&[4]), &owner()).unwrap();
        signed.manifest = bad;
        assert!(matches!(
            SignedManifest::decode(&signed.encode()),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            SignedManifest::sign(manifest(&[]), &owner()),
            Err(EncodeError::Invalid { .. })
        ));
    }

    #[test]
    fn oversized_and_unknown_versions_are_refused_before_parsing() {
        let big = vec![codec::VERSION; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            SignedManifest::decode(&big),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut bytes = SignedManifest::sign(manifest(&[4]), &owner())
            .unwrap()
            .encode();
        bytes[0] = 2;
        let err = SignedManifest::decode(&bytes).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnknownVersion { version: 2, .. }
        ));
        assert!(err.to_string().contains("upgrade tabswarm"));
    }

    #[test]
    fn the_largest_manifest_fits_its_limit_and_one_more_shard_is_refused() {
        let mut m = manifest(&vec![1_000_000; MAX_SHARDS]);
        for e in &mut m.shards {
            e.address = [0xff; 32];
        }
        let signed = SignedManifest::sign(m.clone(), &owner()).unwrap();
        assert!(signed.encode().len() <= MAX_MANIFEST_BYTES);
        m.shards.push(m.shards[0]);
        assert!(matches!(
            SignedManifest::sign(m, &owner()),
            Err(EncodeError::Invalid { .. })
        ));
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            1u16..=64,
            1u16..=64,
            1u8..=255,
            proptest::collection::vec((any::<[u8; 32]>(), 1u32..=1000), 1..20),
        )
            .prop_map(|(run_id, epoch, rows, cols, classes, shards)| {
                let schema = Schema {
                    kind: 0,
                    rows,
                    cols,
                    classes,
                };
                let n = shards.len() as u32;
                Manifest {
                    run_id,
                    epoch,
                    schema,
                    layout: Layout {
                        train: n - n / 3 - n / 4,
                        validation: n / 3,
                        test: n / 4,
                    },
                    shards: shards
                        .into_iter()
                        .map(|(address, n)| ShardEntry {
                            address,
                            size: schema.shard_len(n as usize) as u32,
                            samples: n,
                        })
                        .collect(),
                }
            })
    }

    proptest! {
        #[test]
        fn any_valid_manifest_round_trips_and_verifies(m in arb_manifest()) {
            let signed = SignedManifest::sign(m.clone(), &owner()).unwrap();
            let back = SignedManifest::decode(&signed.encode()).unwrap();
            prop_assert_eq!(back.verify(&owner().verifying_key(), &m.run_id), Ok(&m));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SignedManifest::decode(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, codec::VERSION);
            let _ = SignedManifest::decode(&versioned);
        }

        #[test]
        fn truncated_and_flipped_encodings_never_panic(
            m in arb_manifest(), cut in any::<usize>(), pos in any::<usize>(), bit in 0u8..8,
        ) {
            let bytes = SignedManifest::sign(m.clone(), &owner()).unwrap().encode();
            let cut = cut % bytes.len();
            prop_assert!(SignedManifest::decode(&bytes[..cut]).is_err());
            let mut flipped = bytes.clone();
            flipped[pos % bytes.len()] ^= 1 << bit;
            if let Ok(s) = SignedManifest::decode(&flipped) {
                // Encodings are canonical, so a flip that still decodes changed the value.
                prop_assert!(s.verify(&owner().verifying_key(), &m.run_id).is_err());
            }
        }
    }
}
