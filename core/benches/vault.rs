//! The data vault's throughput against the machine's own AES-GCM (`tabswarm_core::perf::
//! vault_rates`, the code a tab runs for the same figures in Chromium): sealing and opening a
//! shard, and addressing its bytes, in MB/s, beside plain `aes-gcm` encryption and decryption
//! of the same bytes with the same crate (the target: the vault within 2x of it, so crypto
//! never bounds a round).
//!
//! `cargo bench -p tabswarm-core --bench vault -- --out FILE [--runs N]` writes one record
//! per run; `cargo xtask bench --only data` folds them into `bench/results/data.json`.

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
