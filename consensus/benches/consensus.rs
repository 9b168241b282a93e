//! Consensus benchmark: in-process commit latency with real ed25519 for 4, 16 and 64
//! validators, and simulator scale for 100 validators.
//!
//! `cargo bench -p tabswarm-consensus --bench consensus -- --out FILE [--sim-heights N]`
//! prints JSON and writes it to FILE. Cargo runs benches from the package directory
//! (`consensus/`), so give FILE as an absolute path.

use std::time::Instant;

use serde_json::json;
use tabswarm_consensus::testkit::Cluster;
use tabswarm_sim::{Config, Sim};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Every validator runs on this one thread, so a height costs the sum of all validators'
/// work; the per-validator figure divides by N.
fn in_process(n: usize, heights: u64) -> serde_json::Value {
    let mut c = Cluster::new(&vec![1; n]).expect("cluster");
    let mut per_height_ms = Vec::new();
    let mut done = c.committed.iter().map(|x| x.len()).min().unwrap_or(0) as u64;
    let start_msgs = c.messages;
    let start_bytes = c.bytes;
    let start_all = Instant::now();
    while done < heights {
        let t = Instant::now();
        let ok = c
            .run_until_height(done + 1, 10_000_000)
            .expect("no node error");
        assert!(ok, "height {} committed", done + 1);
        per_height_ms.push(t.elapsed().as_secs_f64() * 1e3);
        done = c.committed.iter().map(|x| x.len()).min().unwrap_or(0) as u64;
    }
    let wall = start_all.elapsed().as_secs_f64();
    let commits = per_height_ms.len() as f64;
    per_height_ms.sort_by(f64::total_cmp);
    json!({
        "validators": n,
        "heights": per_height_ms.len(),
        "commit_latency_ms_p50": percentile(&per_height_ms, 0.5),
        "commit_latency_ms_p99": percentile(&per_height_ms, 0.99),
        "commit_latency_ms_p50_per_validator": percentile(&per_height_ms, 0.5) / n as f64,
        "messages_per_commit": (c.messages - start_msgs) as f64 / commits,
        "bytes_per_commit": (c.bytes - start_bytes) as f64 / commits,
        "wall_seconds": wall,
    })
}

fn sim_scale(n: usize, heights: u64) -> serde_json::Value {
    let mut config = Config::new(42, vec![1; n]);
    // 200 ms RTT as in the light-peer target.
    config.latency_ms = 90;
    config.link_spread_ms = 20;
    config.jitter_ms = 10;
    let mut sim = Sim::new(config).expect("sim");
    let start = Instant::now();
    let mut t = 0;
    let mut r = sim.report();
    while r.min_honest_height < heights && t < heights * 10_000 {
        t += 1_000;
        r = sim.run_until(t).expect("run");
    }
    let wall = start.elapsed().as_secs_f64();
    let mut gaps: Vec<f64> = r
        .commit_times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let h = r.min_honest_height.max(1) as f64;
    json!({
        "validators": n,
        "heights": r.min_honest_height,
        "rtt_ms": 200,
        "virtual_seconds": r.now_ms as f64 / 1e3,
        "virtual_commit_interval_ms_p50": percentile(&gaps, 0.5),
        "virtual_commit_interval_ms_p99": percentile(&gaps, 0.99),
        "wall_seconds": wall,
        "heights_per_wall_second": h / wall,
        "bytes_sent_per_validator_per_height": r.sent_bytes as f64 / n as f64 / h,
        "messages_sent_per_validator_per_height": r.sent as f64 / n as f64 / h,
        "agreement_violations": r.agreement_violations,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let out = flag("--out");
    let sim_heights: u64 = flag("--sim-heights")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let in_process_runs = vec![in_process(4, 50), in_process(16, 20), in_process(64, 5)];
    let sim = sim_scale(100, sim_heights);
    let report = json!({
        "bench": "consensus",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "note": "in-process: all validators on one thread with real ed25519, instant delivery; \
                 latency is height start to every validator committed. sim: virtual network, \
                 100 validators, 200 ms RTT.",
        "in_process": in_process_runs,
        "sim_scale": sim,
        "not_measured": ["10,000 light peers (not implemented)", "1,000 heights at 100 validators (use --sim-heights 1000)"],
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{text}");
    if let Some(path) = out {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}
