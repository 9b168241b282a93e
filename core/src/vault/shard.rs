//! One encrypted, content-addressed shard.
//!
//! Wire form: `version (1) || nonce (12) || AES-256-GCM ciphertext of a .tsd file (tag last)`.
//! Its address is the blob address of exactly those bytes (SHA-256 of the list of its 64 KiB
//! chunks' SHA-256s, [`crate::chunks`]), so a storage node without the key can still check
//! what it holds or fetched against the manifest, chunk by chunk.
//!
//! Nonces are 96 random bits from the caller's CryptoRng. A nonce derived from the shard
//! index would repeat if the owner ever sealed different samples at the same index under the
//! same key (a re-split, a fixed typo), and a repeated GCM nonce leaks the XOR of plaintexts
//! and the authentication key. Random nonces repeat with probability about n^2 / 2^97 for n
//! shards under one key: negligible for the at most [`super::MAX_SHARDS`] of an epoch, and
//! every epoch has a fresh key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};

use super::{DatasetKey, RunId};
use crate::data::{self, Dataset};

/// Version byte of the shard wire form.
pub const SHARD_VERSION: u8 = 1;
/// Bytes of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a shard adds to its `.tsd` plaintext: version, nonce, tag.
pub const SHARD_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Largest shard: 8 MiB, so one shard fits one fetch response (10 MiB, DESIGN.md threat model).
pub const MAX_SHARD_BYTES: usize = 8 * 1024 * 1024;

const AAD_DOMAIN: &[u8] = b"tabswarm/shard/v1\0";

/// A shard's content address (see [`address_of`]).
pub type ShardAddress = [u8; 32];

/// Why a shard was not sealed or opened. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Shorter than a shard can be.
    #[error(
        "shard of {0} bytes is shorter than the {SHARD_OVERHEAD}-byte minimum: it was cut off; fetch it again"
    )]
    TooShort(usize),
    /// Longer than any shard may be, refused before hashing.
    #[error(
        "shard of {len} bytes exceeds the limit of {MAX_SHARD_BYTES}: it is not a tabswarm shard (to seal, use fewer samples per shard)"
    )]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The bytes do not hash to the address the manifest lists.
    #[error(
        "shard {index} does not match its address in the manifest: the holder served other or damaged bytes; fetch it from another holder"
    )]
    WrongAddress {
        /// Shard index.
        index: u32,
    },
    /// A wire version this build does not read.
    #[error(
        "shard version {0} is not supported (this build reads version {SHARD_VERSION}): upgrade tabswarm"
    )]
    UnknownVersion(u8),
    /// The key belongs to another run than the manifest.
    #[error(
        "this dataset key is for another run than the manifest: use the key a grant for this run gave you"
    )]
    WrongRun,
    /// The key belongs to another epoch than the manifest (e.g. after a key rotation).
    #[error(
        "this dataset key is for epoch {key_epoch} but the manifest is epoch {manifest_epoch}: ask the data owner for a grant for epoch {manifest_epoch}"
    )]
    WrongEpoch {
        /// The key's epoch.
        key_epoch: u64,
        /// The manifest's epoch.
        manifest_epoch: u64,
    },
    /// The manifest has no shard at this index.
    #[error("the manifest has {count} shards, so there is no shard {index}")]
    NoSuchShard {
        /// The index asked for.
        index: u32,
        /// How many shards the manifest lists.
        count: usize,
    },
    /// Authenticated decryption failed.
    #[error(
        "shard {index} does not decrypt under this key for this run, epoch and index: it was altered, moved from another place, or the key is not this epoch's; fetch the shard again or ask the owner for a current grant"
    )]
    Decrypt {
        /// Shard index.
        index: u32,
    },
    /// Decrypted, but the plaintext is not a valid dataset.
    #[error("shard {index} decrypted but its samples are invalid: {source}")]
    Plaintext {
        /// Shard index.
        index: u32,
        /// What is wrong with them.
        source: data::DecodeError,
    },
    /// Decrypted, but the samples disagree with the manifest.
    #[error(
        "shard {index} decrypted but does not match the manifest's {what}: the owner sealed it wrongly; tell the data owner"
    )]
    Mismatch {
        /// Shard index.
        index: u32,
        /// Which property differs.
        what: &'static str,
    },
    /// The samples are too many to seal into one shard.
    #[error(
        "{samples} samples make a shard of {len} bytes, over the limit of {MAX_SHARD_BYTES}: use fewer samples per shard"
    )]
    PlaintextTooLarge {
        /// Samples given.
        samples: usize,
        /// The shard length they would make.
        len: usize,
    },
}

/// An encrypted shard in its wire form.
#[derive(Clone, PartialEq, Eq)]
pub struct Shard {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("len", &self.bytes.len())
            .field("address", &super::codec::short_hex(&self.address()))
            .finish()
    }
}

/// What the AEAD authenticates besides the ciphertext: where the shard belongs.
fn aad(run_id: &RunId, epoch: u64, index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_DOMAIN.len() + 32 + 8 + 4 + 1);
    out.extend_from_slice(AAD_DOMAIN);
    out.extend_from_slice(run_id);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.push(SHARD_VERSION);
    out
}

fn cipher(key: &DatasetKey) -> Aes256Gcm {
    Aes256Gcm::new(key.secret_bytes().into())
}

/// The address of shard bytes, whether or not they are a valid shard: the address of the
/// bytes as a chunked blob ([`crate::chunks::Manifest::hash`]), so peers fetch a shard in
/// hashed 64 KiB chunks like any blob and a bad holder costs one chunk, never the shard.
pub fn address_of(bytes: &[u8]) -> ShardAddress {
    crate::chunks::Manifest::of(bytes).hash()
}

impl Shard {
    /// Encrypts `samples` as shard `index` of `key`'s run and epoch, with a fresh nonce.
    pub fn seal<R: rand_core::CryptoRng + ?Sized>(
        key: &DatasetKey,
        index: u32,
        samples: &Dataset,
        rng: &mut R,
    ) -> Result<Self, ShardError> {
        let plaintext = samples.encode();
        let len = plaintext.len() + SHARD_OVERHEAD;
        if len > MAX_SHARD_BYTES {
            return Err(ShardError::PlaintextTooLarge {
                samples: samples.len(),
                len,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = aad(key.run_id(), key.epoch(), index);
        let ciphertext = cipher(key)
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            // GCM fails only past 64 GiB of plaintext; the size check above rules that out.
            .map_err(|_| ShardError::PlaintextTooLarge {
                samples: samples.len(),
                len,
            })?;
        let mut bytes = Vec::with_capacity(len);
        bytes.push(SHARD_VERSION);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(Self { bytes })
    }

    /// Takes fetched bytes as a shard, checking only its length and version (no key needed).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ShardError> {
        if bytes.len() > MAX_SHARD_BYTES {
            return Err(ShardError::TooLarge { len: bytes.len() });
        }
        if bytes.len() < SHARD_OVERHEAD {
            return Err(ShardError::TooShort(bytes.len()));
        }
        if bytes[0] != SHARD_VERSION {
            return Err(ShardError::UnknownVersion(bytes[0]));
        }
        Ok(Self { bytes })
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Its content address (see [`address_of`]).
    pub fn address(&self) -> ShardAddress {
        address_of(&self.bytes)
    }

    /// Checks the address, then decrypts shard `index` under `key` and decodes its samples.
    ///
    /// The address is checked first so that a holder serving the wrong bytes is caught even
    /// by a peer without the key; the AEAD then catches bytes whose address was forged with
    /// them, and a shard moved to another index, epoch or run.
    pub fn open(
        &self,
        key: &DatasetKey,
        index: u32,
        address: &ShardAddress,
    ) -> Result<Dataset, ShardError> {
        if &self.address() != address {
            return Err(ShardError::WrongAddress { index });
        }
        decrypt(&self.bytes, key, index)
    }
}

/// Decrypts and decodes shard bytes whose length and version `Shard::from_bytes` accepted
/// (or would accept) and whose address the caller checked.
pub(super) fn decrypt(bytes: &[u8], key: &DatasetKey, index: u32) -> Result<Dataset, ShardError> {
    if bytes.len() < SHARD_OVERHEAD {
        return Err(ShardError::TooShort(bytes.len()));
    }
    if bytes[0] != SHARD_VERSION {
        return Err(ShardError::UnknownVersion(bytes[0]));
    }
    let (nonce, ciphertext) = bytes[1..].split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| ShardError::Decrypt { index })?;
    let aad = aad(key.run_id(), key.epoch(), index);
    let plaintext = cipher(key)
        .decrypt(
            (&nonce).into(),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| ShardError::Decrypt { index })?;
    Dataset::decode(&plaintext).map_err(|source| ShardError::Plaintext { index, source })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    pub(in crate::vault) fn samples(n: usize, seed: u8) -> Dataset {
        let labels = (0..n).map(|i| (i % 3) as u8).collect();
        let pixels = (0..n * 6)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        Dataset::from_parts(2, 3, 3, labels, pixels).unwrap()
    }

    fn setup() -> (DatasetKey, Dataset, Shard, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = DatasetKey::generate([9; 32], 1, &mut rng);
        let data = samples(5, 0);
        let shard = Shard::seal(&key, 3, &data, &mut rng).unwrap();
        (key, data, shard, rng)
    }

    #[test]
    fn seal_then_open_recovers_exactly_the_samples() {
        let (key, data, shard, _) = setup();
        assert_eq!(shard.as_bytes()[0], SHARD_VERSION);
        assert_eq!(shard.as_bytes().len(), data.encode().len() + SHARD_OVERHEAD);
        assert_eq!(shard.open(&key, 3, &shard.address()).unwrap(), data);
        let fetched = Shard::from_bytes(shard.as_bytes().to_vec()).unwrap();
        assert_eq!(fetched.open(&key, 3, &shard.address()).unwrap(), data);
    }

    #[test]
    fn the_same_samples_sealed_twice_get_different_nonces_and_addresses() {
        let (key, data, shard, mut rng) = setup();
        let again = Shard::seal(&key, 3, &data, &mut rng).unwrap();
        assert_ne!(shard.as_bytes()[1..13], again.as_bytes()[1..13]);
        assert_ne!(shard.address(), again.address());
    }

    #[test]
    fn bytes_whose_address_was_recomputed_still_fail_authentication() {
        let (key, _, shard, _) = setup();
        for pos in [1, 5, 13, 40, shard.as_bytes().len() - 1] {
            let mut bytes = shard.clone().into_bytes();
            bytes[pos] ^= 0x10;
            let forged = Shard::from_bytes(bytes).unwrap();
            // The attacker also publishes the matching address: only the AEAD is left.
            let err = forged.open(&key, 3, &forged.address()).unwrap_err();
            assert_eq!(err, ShardError::Decrypt { index: 3 }, "byte {pos}");
        }
    }

    #[test]
    fn a_shard_moved_to_another_index_epoch_or_run_fails() {
        let (key, _, shard, _) = setup();
        let address = shard.address();
        let moved = |k: &DatasetKey, i| shard.open(k, i, &address).unwrap_err();
        assert_eq!(moved(&key, 4), ShardError::Decrypt { index: 4 });
        let same_bytes = |run, epoch| DatasetKey::from_bytes(run, epoch, *key.secret_bytes());
        assert_eq!(
            moved(&same_bytes([9; 32], 2), 3),
            ShardError::Decrypt { index: 3 }
        );
        assert_eq!(
            moved(&same_bytes([8; 32], 1), 3),
            ShardError::Decrypt { index: 3 }
        );
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let other = DatasetKey::generate([9; 32], 1, &mut rng);
        assert_eq!(moved(&other, 3), ShardError::Decrypt { index: 3 });
    }

    #[test]
    fn wrong_version_short_and_oversized_bytes_are_named() {
        let (_, _, shard, _) = setup();
        let mut bytes = shard.into_bytes();
        bytes[0] = 2;
        assert_eq!(Shard::from_bytes(bytes), Err(ShardError::UnknownVersion(2)));
        assert_eq!(
            Shard::from_bytes(vec![1; 10]),
            Err(ShardError::TooShort(10))
        );
        assert!(matches!(
            Shard::from_bytes(vec![1; MAX_SHARD_BYTES + 1]),
            Err(ShardError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_too_large_plaintext_is_refused_when_sealing() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = DatasetKey::generate([9; 32], 1, &mut rng);
        let n = MAX_SHARD_BYTES / (1 + 64 * 64) + 1;
        let big = Dataset::from_parts(64, 64, 2, vec![0; n], vec![0; n * 64 * 64]).unwrap();
        let err = Shard::seal(&key, 0, &big, &mut rng).unwrap_err();
        assert!(matches!(err, ShardError::PlaintextTooLarge { .. }));
        assert!(err.to_string().contains("fewer samples per shard"));
    }

    proptest! {
        #[test]
        fn a_flipped_bit_anywhere_is_caught_by_the_address(pos in any::<usize>(), bit in 0u8..8) {
            let (key, _, shard, _) = setup();
            let address = shard.address();
            let mut bytes = shard.into_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            match Shard::from_bytes(bytes) {
                Ok(bad) => prop_assert_eq!(
                    bad.open(&key, 3, &address),
                    Err(ShardError::WrongAddress { index: 3 })
                ),
                // Only the version byte is judged before the address.
                Err(e) => prop_assert!(pos == 0 && matches!(e, ShardError::UnknownVersion(_))),
            }
        }

        #[test]
        fn random_and_truncated_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            cut in any::<usize>(),
        ) {
            let (key, _, shard, _) = setup();
            if let Ok(s) = Shard::from_bytes(bytes.clone()) {
                let _ = s.open(&key, 3, &s.address());
            }
            let good = shard.into_bytes();
            let cut = cut % good.len();
            if let Ok(s) = Shard::from_bytes(good[..cut].to_vec()) {
                prop_assert!(s.open(&key, 3, &s.address()).is_err());
            }
        }
    }
}
