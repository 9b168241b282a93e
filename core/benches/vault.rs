//! The data vault's throughput against the machine's own AES-GCM (`tabswarm_core::perf::
//! vault_rates`, the code a tab runs for the same figures in Chromium): sealing and opening a
//! shard, and addressing its bytes, in MB/s, beside plain `aes-gcm` encryption and decryption
//! of the same bytes with the same crate (the target: the vault within 2x of it, so crypto
//! never bounds a round).
//!
//! `cargo bench -p tabswarm-core --bench vault -- --out FILE [--runs N]` writes one record
//! per run; `cargo xtask bench --only data` folds them into `bench/results/data.json`.

mod support;

use std::time::Instant;

use tabswarm_core::perf::vault_rates;

/// Samples per shard: an MNIST training shard of the demo's run is ~530 (417 KB); a large
/// one holds 10,000 (7.9 MB, near the 8 MiB limit).
const SHARDS: [usize; 2] = [531, 10_000];
/// Timings per figure (the median of them is the run's figure).
const REPS: usize = 9;

fn one_run() -> serde_json::Value {
    let start = Instant::now();
    let mut now_ms = || start.elapsed().as_secs_f64() * 1e3;
    let mut out = serde_json::Map::new();
    for n in SHARDS {
        let rates = vault_rates(n, REPS, &mut now_ms);
        out.insert(
            format!("shard_{n}_samples"),
            serde_json::to_value(rates).expect("json"),
        );
    }
    serde_json::Value::Object(out)
}

fn main() {
    support::main_with(one_run);
}
