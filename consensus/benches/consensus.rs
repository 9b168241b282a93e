//! Consensus benchmark: in-process CPU per height with real ed25519 for 4, 16 and 64
//! validators, simulator scale for 100 validators (1,000 heights by default), and 100
//! validators next to 1,000, 3,000 and 10,000 light peers with churn.
//!
//! `cargo bench -p tabswarm-consensus --bench consensus -- --out FILE [--runs N]
//! [--sim-heights N] [--light-heights N] [--light-peers 1000,3000,10000]`
//! prints JSON with one record per run and writes it to FILE; `cargo xtask bench` folds the
//! runs into median, min and max in `bench/results/consensus.json`. Cargo runs benches from
//! the package directory (`consensus/`), so give FILE as an absolute path.

use std::time::Instant;

use serde_json::json;
use tabswarm_consensus::testkit::Cluster;
use tabswarm_sim::{Config, LightPeers, Report, Sim};

/// The simulator seed of the first run; run `i` uses `SEED + i`.
const SEED: u64 = 42;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Every validator runs on this one thread and messages arrive instantly, so the time from
/// a height's start to its last commit is the CPU all N validators spend on that height,
/// not a commit latency; the per-validator figure divides by N.
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
        "cpu_per_height_ms": percentile(&per_height_ms, 0.5),
        "cpu_per_height_ms_p99": percentile(&per_height_ms, 0.99),
        "cpu_per_height_ms_per_validator": percentile(&per_height_ms, 0.5) / n as f64,
        "messages_per_commit": (c.messages - start_msgs) as f64 / commits,
        "bytes_per_commit": (c.bytes - start_bytes) as f64 / commits,
        "wall_seconds": wall,
    })
}

/// A simulator run until every honest validator committed `heights` (or virtual time ran
/// out); returns the report and the wall-clock seconds it took.
fn sim_run(config: Config, heights: u64) -> (Report, f64) {
    let mut sim = Sim::new(config).expect("sim");
    let start = Instant::now();
    let mut t = 0;
    let mut r = sim.report();
    while r.min_honest_height < heights && t < heights * 10_000 {
        t += 1_000;
        r = sim.run_until(t).expect("run");
    }
    (r, start.elapsed().as_secs_f64())
}

/// 200 ms RTT as in the light-peer target.
fn wan_config(seed: u64, validators: usize) -> Config {
    let mut config = Config::new(seed, vec![1; validators]);
    config.latency_ms = 90;
    config.link_spread_ms = 20;
    config.jitter_ms = 10;
    config
}

fn commit_intervals(r: &Report) -> Vec<f64> {
    let mut gaps: Vec<f64> = r
        .commit_times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps
}

fn sim_scale(seed: u64, n: usize, heights: u64) -> serde_json::Value {
    let (r, wall) = sim_run(wan_config(seed, n), heights);
    let gaps = commit_intervals(&r);
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
        "signature_checks": r.signature_checks,
        "signature_cache_hits": r.signature_cache_hits,
        "agreement_violations": r.agreement_violations,
    })
}

/// `validators` validators and `peers` light peers (churn 1% per height, mesh degree 8).
fn light_scale(seed: u64, validators: usize, peers: usize, heights: u64) -> serde_json::Value {
    let mut config = wan_config(seed, validators);
    let light = LightPeers::new(peers);
    config.light = Some(light.clone());
    let (r, wall) = sim_run(config, heights);
    let gaps = commit_intervals(&r);
    let l = r.light.clone().expect("light report");
    let h = r.min_honest_height.max(1) as f64;
    json!({
        "light_peers": peers,
        "validators": validators,
        "heights": r.min_honest_height,
        "rtt_ms": 200,
        "mesh_degree": light.mesh_degree,
        "announce_to_validators": light.attach,
        "churn_per_mille_per_height": light.churn_per_mille,
        "joins": l.joins,
        "leaves": l.leaves,
        "light_bytes_per_peer_per_height_mean": l.light_bytes_per_peer_height_mean,
        "light_bytes_per_peer_per_height_max": l.light_bytes_per_peer_height_max,
        "validator_bytes_per_height_mean": l.validator_bytes_per_height_mean,
        "validator_bytes_per_height_max": l.validator_bytes_per_height_max,
        "validator_light_layer_bytes_per_height_mean": l.validator_light_bytes_per_height_mean,
        "validator_light_layer_bytes_per_height_max": l.validator_light_bytes_per_height_max,
        "announce_bytes_per_validator_per_height_max": l.announce_bytes_per_validator_height_max,
        "announce_bytes_per_validator_per_height_mean": l.announce_bytes_per_validator_height_mean,
        "notice_delay_ms_p50": l.notice_delay_ms_p50,
        "notice_delay_ms_p99": l.notice_delay_ms_p99,
        "notice_delay_ms_max": l.notice_delay_ms_max,
        "duplicate_notices": l.duplicates,
        "idontwant_saved": l.dont_want_saved,
        "virtual_commit_interval_ms_p50": percentile(&gaps, 0.5),
        "virtual_commit_interval_ms_p99": percentile(&gaps, 0.99),
        "wall_seconds": wall,
        "heights_per_wall_second": h / wall,
        "signature_checks": r.signature_checks,
        "signature_cache_hits": r.signature_cache_hits,
        "agreement_violations": r.agreement_violations,
    })
}

/// Growth of each per-peer figure from the first run to each later one, next to what
/// O(log N) and O(N) growth would give.
fn growth(runs: &[serde_json::Value]) -> serde_json::Value {
    let get = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let Some(base) = runs.first() else {
        return json!([]);
    };
    let n0 = get(base, "light_peers");
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .skip(1)
        .map(|r| {
            let n = get(r, "light_peers");
            let ratio = |k: &str| get(r, k) / get(base, k);
            json!({
                "from_peers": n0,
                "to_peers": n,
                "log_n_ratio": n.ln() / n0.ln(),
                "n_ratio": n / n0,
                "light_bytes_per_peer_mean": ratio("light_bytes_per_peer_per_height_mean"),
                "light_bytes_per_peer_max": ratio("light_bytes_per_peer_per_height_max"),
                "validator_bytes_mean": ratio("validator_bytes_per_height_mean"),
                "validator_bytes_max": ratio("validator_bytes_per_height_max"),
                "announce_bytes_max_proposer": ratio("announce_bytes_per_validator_per_height_max"),
                "notice_delay_p50": ratio("notice_delay_ms_p50"),
            })
        })
        .collect();
    json!(rows)
}

/// One signature check, timed both ways in the same run: as this crate did it before (key
/// decompressed from the address, `verify_strict` then a redundant plain `verify`) and as it
/// does now (key from the validator set, `verify_strict` only).
fn verification_cost() -> serde_json::Value {
    use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
    const N: usize = 2_000;
    let key = SigningKey::from_bytes(&[7; 32]);
    let msgs: Vec<(Vec<u8>, ed25519_dalek::Signature)> = (0..N as u32)
        .map(|i| {
            let m = [
                b"tabswarm/consensus/vote/v1\0".as_slice(),
                &[0; 32],
                &i.to_le_bytes(),
            ]
            .concat();
            let sig = key.sign(&m);
            (m, sig)
        })
        .collect();
    let address = key.verifying_key().to_bytes();
    let t = Instant::now();
    let mut ok = 0;
    for (m, sig) in &msgs {
        let vk = VerifyingKey::from_bytes(&address).expect("valid key");
        ok += usize::from(vk.verify_strict(m, sig).is_ok() && vk.verify(m, sig).is_ok());
    }
    let before = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    let vk = key.verifying_key();
    let t = Instant::now();
    for (m, sig) in &msgs {
        ok += usize::from(vk.verify_strict(m, sig).is_ok());
    }
    let after = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    assert_eq!(ok, 2 * N);
    json!({
        "signatures": N,
        "us_per_check_before": before,
        "us_per_check_now": after,
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
        .unwrap_or(1000);
    let light_heights: u64 = flag("--light-heights")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let light_peers: Vec<usize> = flag("--light-peers")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 3_000, 10_000]);
    let runs: u64 = flag("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    // Whole runs one after another, so that other work on the machine spreads over every
    // figure. The simulated network draws its delays from the seed: one seed per run turns
    // the virtual-time figures into a spread too, instead of five copies of one outcome.
    let records: Vec<serde_json::Value> = (0..runs)
        .map(|run| {
            let seed = SEED + run;
            eprintln!("consensus run {}/{runs} (sim seed {seed})", run + 1);
            let verification = verification_cost();
            let in_process_runs = vec![in_process(4, 50), in_process(16, 20), in_process(64, 5)];
            for r in &in_process_runs {
                eprintln!(
                    "  in process, {} validators: {:.2} ms CPU per height",
                    r["validators"], r["cpu_per_height_ms"]
                );
            }
            let sim = sim_scale(seed, 100, sim_heights);
            eprintln!("  sim: {:.1} s wall", sim["wall_seconds"]);
            let light_runs: Vec<serde_json::Value> = light_peers
                .iter()
                .map(|&p| light_scale(seed, 100, p, light_heights))
                .collect();
            let light_growth = growth(&light_runs);
            json!({
                "sim_seed": seed,
                "verification": verification,
                "in_process": in_process_runs,
                "sim_scale": sim,
                "light_peers": light_runs,
                "light_peer_growth": light_growth,
            })
        })
        .collect();
    let report = json!({
        "bench": "consensus",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "runs": records,
        "note": "in-process: all validators on one thread with real ed25519 and instant \
                 delivery, so the time from a height's start until every validator committed it \
                 is the CPU that all N validators together spend on one height (cpu_per_height_ms; \
                 per validator: divided by N), not a commit latency. Commit latency between \
                 processes over real sockets is measured by the network benchmark \
                 (bench/results/network.json). sim: virtual network, 100 validators, 200 ms RTT, \
                 one seed per run.",
        "light_note": "light peers: non-voting, one signed announcement per height sent to the \
                       proposers of rounds 0 and 1; commit notices (block + certificate) over a \
                       gossipsub-like mesh (D = 8, duplicate suppression, IDONTWANT); 1% churn per \
                       height. Bytes are sent + received per peer per height. Validators' \
                       consensus traffic stays all-to-all among the 100 validators.",
        "not_measured": [
            "announced updates are not carried in proposals (the sim's application proposes 4 synthetic updates), so validators' proposal bytes do not grow with light peers here",
            "validator-to-validator consensus gossip (all-to-all among validators)",
        ],
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
