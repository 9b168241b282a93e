//! The data vault's speed beside plain AES-256-GCM of the same bytes with the same crate:
//! sealing and opening a shard and addressing its bytes, in MB/s. The target is the vault
//! within 2x of the plain cipher, so crypto never bounds a round. Natively
//! (`core/benches/vault.rs`) and in a tab (`tabswarm_browser::vault_rates`) the same code runs
//! with the caller's clock.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use super::median;
use crate::data::Dataset;
use crate::vault::{DatasetKey, Layout, address_of, seal_shards};

/// One sample of a timing spans at least this long (ms), so a coarse clock (a browser's
/// `performance.now()` ticks in 5-100 us) does not dominate a small shard's figure.
const SAMPLE_MS: f64 = 10.0;

/// A shard's figures (MB/s of the shard's sealed bytes, or of its plaintext for the cipher).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VaultRates {
    /// Samples in the shard.
    pub samples: usize,
    /// Sealed bytes.
    pub shard_bytes: usize,
    /// Sealing (encode, encrypt, address).
    pub seal_mb_s: f64,
    /// Opening (check the address, decrypt, decode).
    pub open_mb_s: f64,
    /// The chunked-blob address alone.
    pub address_mb_s: f64,
    /// `aes-gcm` encryption of the same plaintext, no format around it.
    pub aes_gcm_encrypt_mb_s: f64,
    /// `aes-gcm` decryption of it.
    pub aes_gcm_decrypt_mb_s: f64,
    /// How many times slower sealing is than the plain cipher (target <= 2).
    pub seal_over_aes_gcm: f64,
    /// How many times slower opening is (target <= 2).
    pub open_over_aes_gcm: f64,
}

/// Labelled images with varied pixels (the cipher does not care; the encoder's hash does not
/// either, but a constant image would compress in a future format).
pub fn shard_samples(n: usize) -> Dataset {
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    let pixels = (0..n * 784).map(|i| (i * 31 % 251) as u8).collect();
    // 28x28, ten classes: always a valid dataset.
    Dataset::from_parts(28, 28, 10, labels, pixels).unwrap_or_else(|_| unreachable!())
}

/// MB/s of `f` over `bytes`: the median of `reps` samples, each of enough calls to span
/// [`SAMPLE_MS`] of `now_ms`.
fn rate(bytes: usize, reps: usize, now_ms: &mut dyn FnMut() -> f64, mut f: impl FnMut()) -> f64 {
    let t0 = now_ms();
    f();
    let once = (now_ms() - t0).max(1e-3);
    let calls = (SAMPLE_MS / once).ceil().clamp(1.0, 10_000.0) as usize;
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = now_ms();
            for _ in 0..calls {
                f();
            }
            (bytes * calls) as f64 / 1e6 / ((now_ms() - t).max(1e-3) / 1e3)
        })
        .collect();
    median(&mut rates)
}

/// The figures for a shard of `samples` images, each the median of `reps` timings.
pub fn vault_rates(samples: usize, reps: usize, now_ms: &mut dyn FnMut() -> f64) -> VaultRates {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = DatasetKey::generate([1; 32], 1, &mut rng);
    let layout = Layout {
        train: 1,
        ..Layout::default()
    };
    let parts = [shard_samples(samples)];
    let sealed = seal_shards(&parts, layout, &key, &mut rng).unwrap_or_else(|_| unreachable!());
    let bytes = sealed.shards[0].as_bytes().to_vec();
    let len = bytes.len();
    let seal = rate(len, reps, now_ms, || {
        std::hint::black_box(seal_shards(&parts, layout, &key, &mut rng).ok());
    });
    let open = rate(len, reps, now_ms, || {
        std::hint::black_box(sealed.manifest.open_shard(0, &bytes, &key).ok());
    });
    let address = rate(len, reps, now_ms, || {
        std::hint::black_box(address_of(&bytes));
    });
    // The same crate, the same key size, the same bytes, no format around it.
    let cipher = Aes256Gcm::new(key.secret_bytes().into());
    let nonce = Nonce::from([7u8; 12]);
    let plain = parts[0].encode();
    let payload = |msg| Payload { msg, aad: b"" };
    let ciphertext = cipher.encrypt(&nonce, payload(&plain)).unwrap_or_default();
    let encrypt = rate(plain.len(), reps, now_ms, || {
        std::hint::black_box(cipher.encrypt(&nonce, payload(&plain)).ok());
    });
    let decrypt = rate(plain.len(), reps, now_ms, || {
        std::hint::black_box(cipher.decrypt(&nonce, payload(&ciphertext)).ok());
    });
    VaultRates {
        samples,
        shard_bytes: len,
        seal_mb_s: seal,
        open_mb_s: open,
        address_mb_s: address,
        aes_gcm_encrypt_mb_s: encrypt,
        aes_gcm_decrypt_mb_s: decrypt,
        seal_over_aes_gcm: encrypt / seal,
        open_over_aes_gcm: decrypt / open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_are_finite_and_positive_on_a_fake_clock() {
        // A clock that advances 1 ms per read: every call "takes" at most a few ms.
        let mut t = 0.0;
        let mut clock = || {
            t += 1.0;
            t
        };
        let r = vault_rates(50, 3, &mut clock);
        assert_eq!(r.samples, 50);
        assert!(r.shard_bytes > 50 * 784);
        for v in [
            r.seal_mb_s,
            r.open_mb_s,
            r.address_mb_s,
            r.aes_gcm_encrypt_mb_s,
            r.aes_gcm_decrypt_mb_s,
            r.seal_over_aes_gcm,
            r.open_over_aes_gcm,
        ] {
            assert!(v.is_finite() && v > 0.0, "{r:?}");
        }
    }
}
