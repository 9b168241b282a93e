//! The data vault's throughput against the machine's own AES-GCM: sealing and opening a
//! shard, and addressing its bytes, in MB/s, beside plain `aes-gcm` encryption and decryption
//! of the same bytes with the same crate (the target: the vault within 2x of it, so crypto
//! never bounds a round).
//!
//! `cargo bench -p tabswarm-core --bench vault -- --out FILE [--runs N]` writes one record
//! per run; `cargo xtask bench --only data` folds them into `bench/results/data.json`.

use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tabswarm_core::data::Dataset;
use tabswarm_core::vault::{DatasetKey, Layout, address_of, seal_shards};

/// Samples per shard: an MNIST training shard of the demo's run is ~530 (417 KB); a large
/// one holds 10,000 (7.9 MB, near the 8 MiB limit).
const SHARDS: [usize; 2] = [531, 10_000];
/// Repetitions per timing (the median of them is the run's figure).
const REPS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// MB/s of `f` over `bytes`, the median of [`REPS`] timings.
fn rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..REPS)
            .map(|_| {
                let t = Instant::now();
                f();
                bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn samples(n: usize) -> Dataset {
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    let pixels = (0..n * 784).map(|i| (i * 31 % 251) as u8).collect();
    Dataset::from_parts(28, 28, 10, labels, pixels).expect("valid")
}

fn one_run() -> serde_json::Value {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = DatasetKey::generate([1; 32], 1, &mut rng);
    let mut out = serde_json::Map::new();
    for n in SHARDS {
        let data = samples(n);
        let layout = Layout {
            train: 1,
            ..Layout::default()
        };
        let parts = [data];
        let sealed = seal_shards(&parts, layout, &key, &mut rng).expect("sealed");
        let bytes = sealed.shards[0].as_bytes().to_vec();
        let len = bytes.len();
        let seal = rate(len, || {
            std::hint::black_box(seal_shards(&parts, layout, &key, &mut rng).expect("sealed"));
        });
        let open = rate(len, || {
            std::hint::black_box(sealed.manifest.open_shard(0, &bytes, &key).expect("opens"));
        });
        let address = rate(len, || {
            std::hint::black_box(address_of(&bytes));
        });
        // The same crate, the same key size, the same bytes, no format around it.
        let cipher = Aes256Gcm::new(key.secret_bytes().into());
        let nonce = Nonce::from([7u8; 12]);
        let plain = parts[0].encode();
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: b"",
                },
            )
            .expect("encrypts");
        let raw_encrypt = rate(plain.len(), || {
            std::hint::black_box(
                cipher
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: &plain,
                            aad: b"",
                        },
                    )
                    .expect("encrypts"),
            );
        });
        let raw_decrypt = rate(plain.len(), || {
            std::hint::black_box(
                cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: &ciphertext,
                            aad: b"",
                        },
                    )
                    .expect("decrypts"),
            );
        });
        out.insert(
            format!("shard_{n}_samples"),
            serde_json::json!({
                "samples": n,
                "shard_bytes": len,
                "seal_mb_s": seal,
                "open_mb_s": open,
                "address_mb_s": address,
                "aes_gcm_encrypt_mb_s": raw_encrypt,
                "aes_gcm_decrypt_mb_s": raw_decrypt,
                "seal_over_aes_gcm": raw_encrypt / seal,
                "open_over_aes_gcm": raw_decrypt / open,
            }),
        );
    }
    serde_json::Value::Object(out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = value("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let runs: Vec<serde_json::Value> = (0..runs).map(|_| one_run()).collect();
    let report = serde_json::json!({ "runs": runs });
    let text = serde_json::to_string_pretty(&report).expect("json");
    match value("--out") {
        Some(path) => std::fs::write(&path, text + "\n").expect("writing the results"),
        None => println!("{text}"),
    }
}
