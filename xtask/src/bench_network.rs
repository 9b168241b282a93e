//! The network benchmark: real relay and node processes on loopback, results in
//! `bench/results/network.json`.
//!
//! - Round split with 8 peers (4 validators + 4 trainers, all training): per committed height
//!   and node, its own training time (compute), the wait for others' updates and payloads
//!   (network) and proposal-to-commit (consensus); bytes in and out per peer per round.
//! - Time for a fresh node to catch up 1,000 blocks (and the newest checkpoint).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tabswarm_testnet::{Binaries, Spec, Testnet};

use crate::sh::{self, Profile};

/// Heights skipped before measuring (connections forming, first rounds waiting on deadlines).
const WARM_UP: u64 = 5;

pub(crate) fn run(
    data: &Path,
    out: &Path,
    rounds: u64,
    catch_up_blocks: u64,
) -> anyhow::Result<()> {
    let bins = Binaries {
        node: sh::native_bin(Profile::Release, "tabswarm-node"),
        relay: sh::native_bin(Profile::Release, "tabswarm-relay"),
    };
    let scratch = sh::cache().join("bench").join("network");

    eprintln!("    8 peers (4 validators + 4 trainers), {rounds} rounds of 200 local steps each");
    let local_steps = 200;
    let spec = Spec {
        json_logs: true,
        ..Spec::new(4, 4).genesis(&[
            "--local-steps",
            &local_steps.to_string(),
            "--round-deadline-ms",
            "3000",
            "--propose-timeout-ms",
            "8000",
            "--checkpoint-every",
            "50",
        ])
    };
    let mut net = Testnet::create(&scratch.join("rounds"), &bins, data, spec)?;
    net.start_all()?;
    let all: Vec<usize> = (0..8).collect();
    let started = Instant::now();
    net.wait_height(&all, rounds + WARM_UP, Duration::from_secs(1200))?;
    let wall = started.elapsed();
    let statuses: Vec<Value> = all.iter().filter_map(|&i| net.status(i)).collect();
    net.stop_all()?;
    let mut rows = Vec::new();
    for n in &net.nodes {
        rows.extend(committed_lines(&n.log)?);
    }
    let pick = |key: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["height"].as_u64().unwrap_or(0) > WARM_UP)
            .filter_map(|r| r[key].as_f64())
            .collect()
    };
    let (round, train, network, consensus) = (
        pick("round_ms"),
        pick("train_ms"),
        pick("network_ms"),
        pick("consensus_ms"),
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let compute_share = mean(&train) / mean(&round).max(1e-9);
    let heights = statuses
        .iter()
        .filter_map(|s| s["height"].as_u64())
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let bytes_in: Vec<f64> = statuses
        .iter()
        .filter_map(|s| s["bytes_received"].as_f64())
        .map(|b| b / heights)
        .collect();
    let bytes_out: Vec<f64> = statuses
        .iter()
        .filter_map(|s| s["bytes_sent"].as_f64())
        .map(|b| b / heights)
        .collect();
    let accuracy = statuses
        .iter()
        .filter_map(|s| s["test_accuracy"].as_f64())
        .fold(f64::NAN, f64::max);

    eprintln!(
        "    catch-up: 3 validators run {catch_up_blocks} short rounds, then a fresh node joins"
    );
    let spec = Spec {
        json_logs: true,
        ..Spec::new(3, 0).genesis(&[
            "--local-steps",
            "1",
            "--round-deadline-ms",
            "50",
            "--checkpoint-every",
            "100",
        ])
    };
    let mut net = Testnet::create(&scratch.join("catchup"), &bins, data, spec)?;
    net.start_all()?;
    net.wait_height(&[0, 1, 2], catch_up_blocks, Duration::from_secs(1800))?;
    let tip = net.height(0);
    let joined = Instant::now();
    let late = net.add_node()?;
    net.start(late, &["--roles", "trainer"])?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut caught_up = None;
    while Instant::now() < deadline {
        if let Some(s) = net.status(late)
            && s["syncing"] == false
            && s["height"].as_u64().unwrap_or(0) >= tip
        {
            caught_up = Some(joined.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    net.stop_all()?;
    let caught_up = caught_up.context("the late node did not catch up within 10 minutes")?;

    let report = json!({
        "command": "cargo xtask bench --only network",
        "machine": { "cpu": crate::bench::cpu_model(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "rounds": {
            "peers": 8, "validators": 4, "trainers_also": 4,
            "local_steps": local_steps, "batch": 32,
            "measured_heights": rounds, "wall_seconds": wall.as_secs_f64(),
            "round_ms": stats(&round), "train_ms": stats(&train),
            "network_ms": stats(&network), "consensus_ms": stats(&consensus),
            "compute_share_of_round": compute_share,
            "target_compute_share": 0.9,
            "bytes_received_per_peer_per_round": stats(&bytes_in),
            "bytes_sent_per_peer_per_round": stats(&bytes_out),
            "best_test_accuracy": accuracy,
            "commit_latency_note": "consensus_ms: from the proposal reaching a node to that node committing, over real loopback sockets",
        },
        "catch_up": {
            "blocks": tip,
            "seconds": caught_up.as_secs_f64(),
            "blocks_per_second": tip as f64 / caught_up.as_secs_f64().max(1e-9),
            "what": "fresh node: dial relay, fetch and verify every block from genesis, fetch and check the newest parameters, take part",
        },
    });
    std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The `committed` log lines of a node running with `--log-format json`.
fn committed_lines(log: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "committed")
        .map(|v| v["fields"].clone())
        .collect())
}

fn stats(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({ "n": v.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "mean": v.iter().sum::<f64>() / v.len().max(1) as f64 })
}
