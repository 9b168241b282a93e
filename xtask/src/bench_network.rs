//! The network benchmark: real relay and node processes on loopback, results in
//! `bench/results/network.json`. Every scenario runs [`RUNS`] times on a fresh network; each
//! figure is the median of the runs with min and max (see [`crate::runs`]).
//!
//! - **Round split** with 8 peers (4 validators + 4 trainers, all training): per committed
//!   height and node, its own training time (compute), the wait for others' updates and
//!   payloads (network) and proposal-to-commit (consensus); bytes per peer per round, both
//!   what the application sent (gossip and fetch payloads) and what libp2p's transports
//!   carried (`libp2p_bandwidth_bytes_total`: noise, yamux and circuit framing included).
//! - **Commit latency across processes**, 4 and 16 validators (validating only) and one
//!   trainer: proposal-to-commit on every validator, p50 and p99. The in-process figure of
//!   the consensus benchmark is CPU per height; this one includes the sockets.
//! - **Catch-up**: a fresh node joins a chain of 1,000 blocks, verifies every block and
//!   adopts the newest checkpoint ([`RUNS`] fresh joiners against one chain).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tabswarm_testnet::{Binaries, Spec, Testnet, counter_sum};

use crate::runs::fold;
use crate::sh::{self, Profile};

/// Runs of every scenario.
const RUNS: usize = 5;
/// Heights skipped before measuring (connections forming, first rounds waiting on deadlines).
const WARM_UP: u64 = 5;
/// Heights measured per commit-latency run (16 validators take a few seconds each here).
const LATENCY_HEIGHTS: u64 = 20;
/// Local steps per round in the round-split scenario.
const LOCAL_STEPS: u64 = 200;
/// Labels (configuration, not measurements) in the run records.
const LABELS: [&str; 6] = [
    "peers",
    "validators",
    "trainers",
    "local_steps",
    "batch",
    "measured_heights",
];
/// libp2p's transport byte counter.
const WIRE_BYTES: &str = "libp2p_bandwidth_bytes_total";

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

    let mut split = Vec::new();
    for k in 0..RUNS {
        eprintln!(
            "    round split {}/{RUNS}: 8 peers (4 validators + 4 trainers), {rounds} rounds of {LOCAL_STEPS} local steps",
            k + 1
        );
        split.push(round_split(&bins, data, &scratch.join("rounds"), rounds)?);
    }
    let mut latency = Vec::new();
    for validators in [4, 16] {
        let mut runs = Vec::new();
        for k in 0..RUNS {
            eprintln!(
                "    commit latency {}/{RUNS}: {validators} validators + 1 trainer",
                k + 1
            );
            runs.push(commit_latency(
                &bins,
                data,
                &scratch.join("latency"),
                validators,
                LATENCY_HEIGHTS,
            )?);
        }
        latency.push(fold(&runs, &LABELS));
    }
    eprintln!(
        "    catch-up: 3 validators run {catch_up_blocks} short rounds, then {RUNS} fresh nodes join in turn"
    );
    let catch_up = catch_up(&bins, data, &scratch.join("catchup"), catch_up_blocks)?;

    let report = json!({
        "command": "cargo xtask bench --only network",
        "machine": crate::machine::record(),
        "runs": RUNS,
        "rounds": fold(&split, &LABELS),
        "rounds_notes": {
            "consensus_ms": "from the proposal reaching a node to that node committing, over real loopback sockets",
            "app_bytes": "gossip and fetch payloads as the node handed them to libp2p",
            "wire_bytes": "libp2p_bandwidth_bytes_total: every transport's bytes incl. noise, yamux and relay-circuit framing; bytes a relay forwards are counted by the two ends, not by the relay",
            "target_compute_share": 0.9,
        },
        "commit_latency": latency,
        "commit_latency_note": "validators validate only, one trainer supplies one update per height; consensus_ms from each validator's committed log line (proposal received -> commit). The in-process consensus benchmark reports CPU per height instead.",
        "catch_up": fold(&catch_up, &["blocks"]),
        "catch_up_note": "fresh node: dial relay, fetch and verify every block from genesis, fetch and check the newest parameters, take part",
    });
    std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// One round-split run: a fresh 8-peer network to `rounds + WARM_UP` heights.
fn round_split(bins: &Binaries, data: &Path, dir: &Path, rounds: u64) -> anyhow::Result<Value> {
    let spec = Spec {
        json_logs: true,
        ..Spec::new(4, 4).genesis(&[
            "--local-steps",
            &LOCAL_STEPS.to_string(),
            "--round-deadline-ms",
            "3000",
            "--propose-timeout-ms",
            "8000",
            "--checkpoint-every",
            "50",
        ])
    };
    let mut net = Testnet::create(dir, bins, data, spec)?;
    net.start_all()?;
    let all: Vec<usize> = (0..8).collect();
    let started = Instant::now();
    net.wait_height(&all, rounds + WARM_UP, Duration::from_secs(1200))?;
    let wall = started.elapsed();
    let statuses: Vec<Value> = all.iter().filter_map(|&i| net.status(i)).collect();
    let metrics: Vec<String> = all.iter().filter_map(|&i| net.metrics(i)).collect();
    net.stop_all()?;
    let rows = committed_rows(&net)?;
    let pick = |key: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["height"].as_u64().unwrap_or(0) > WARM_UP)
            .filter_map(|r| r[key].as_f64())
            .collect()
    };
    let (round, train) = (pick("round_ms"), pick("train_ms"));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let heights = statuses
        .iter()
        .filter_map(|s| s["height"].as_u64())
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let per_round = |values: Vec<f64>| -> Value {
        let per: Vec<f64> = values.into_iter().map(|b| b / heights).collect();
        json!({ "mean": mean(&per), "max": per.iter().copied().fold(0.0, f64::max), "peers": per.len() })
    };
    let status_bytes =
        |key: &str| -> Vec<f64> { statuses.iter().filter_map(|s| s[key].as_f64()).collect() };
    let wire = |direction: &str| -> Vec<f64> {
        let label = format!("direction=\"{direction}\"");
        metrics
            .iter()
            .map(|m| counter_sum(m, WIRE_BYTES, &label))
            .collect()
    };
    let wire_in = wire("Inbound");
    if wire_in.iter().all(|b| *b == 0.0) {
        anyhow::bail!("no node reported {WIRE_BYTES}: are the binaries built with libp2p metrics?");
    }
    Ok(json!({
        "peers": 8, "validators": 4, "trainers": 4,
        "local_steps": LOCAL_STEPS, "batch": 32,
        "measured_heights": rounds, "wall_seconds": wall.as_secs_f64(),
        "round_ms": percentiles(&round), "train_ms": percentiles(&train),
        "network_ms": percentiles(&pick("network_ms")),
        "consensus_ms": percentiles(&pick("consensus_ms")),
        "compute_share_of_round": mean(&train) / mean(&round).max(1e-9),
        "app_bytes_received_per_peer_per_round": per_round(status_bytes("bytes_received")),
        "app_bytes_sent_per_peer_per_round": per_round(status_bytes("bytes_sent")),
        "wire_bytes_received_per_peer_per_round": per_round(wire_in),
        "wire_bytes_sent_per_peer_per_round": per_round(wire("Outbound")),
        "best_test_accuracy": statuses.iter().filter_map(|s| s["test_accuracy"].as_f64()).fold(f64::NAN, f64::max),
    }))
}

/// One commit-latency run: `validators` validating-only nodes and one trainer.
fn commit_latency(
    bins: &Binaries,
    data: &Path,
    dir: &Path,
    validators: usize,
    heights: u64,
) -> anyhow::Result<Value> {
    let spec = Spec {
        json_logs: true,
        ..Spec::new(validators, 1).genesis(&[
            "--local-steps",
            "5",
            "--round-deadline-ms",
            "2000",
            "--propose-timeout-ms",
            "8000",
            "--checkpoint-every",
            "50",
        ])
    };
    let mut net = Testnet::create(dir, bins, data, spec)?;
    for i in 0..validators {
        net.start(i, &["--roles", "validator"])?;
    }
    net.start(validators, &["--roles", "trainer"])?;
    let voters: Vec<usize> = (0..validators).collect();
    net.wait_height(&voters, heights + WARM_UP, Duration::from_secs(1800))?;
    net.stop_all()?;
    let consensus: Vec<f64> = committed_rows(&net)?
        .iter()
        .filter(|r| r["height"].as_u64().unwrap_or(0) > WARM_UP)
        .filter(|r| r["applied"] == true)
        .filter_map(|r| r["consensus_ms"].as_f64())
        .collect();
    Ok(json!({
        "validators": validators, "trainers": 1, "measured_heights": heights,
        "consensus_ms": percentiles(&consensus),
    }))
}

/// One chain of `blocks` short rounds, then [`RUNS`] fresh nodes join one after another.
fn catch_up(bins: &Binaries, data: &Path, dir: &Path, blocks: u64) -> anyhow::Result<Vec<Value>> {
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
    let mut net = Testnet::create(dir, bins, data, spec)?;
    net.start_all()?;
    net.wait_height(&[0, 1, 2], blocks, Duration::from_secs(1800))?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
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
        // Each joiner is timed alone: the next one must not find two syncing peers.
        net.stop(late);
        let caught_up = caught_up.context("a fresh node did not catch up within 10 minutes")?;
        runs.push(json!({
            "blocks": tip,
            "seconds": caught_up.as_secs_f64(),
            "blocks_per_second": tip as f64 / caught_up.as_secs_f64().max(1e-9),
        }));
    }
    net.stop_all()?;
    Ok(runs)
}

/// The `committed` log lines of every node (they run with `--log-format json`).
fn committed_rows(net: &Testnet) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for n in &net.nodes {
        let text = std::fs::read_to_string(&n.log)
            .with_context(|| format!("reading {}", n.log.display()))?;
        rows.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "committed")
                .map(|v| v["fields"].clone()),
        );
    }
    Ok(rows)
}

/// Distribution of one run's samples.
fn percentiles(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({ "n": v.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "mean": v.iter().sum::<f64>() / v.len().max(1) as f64 })
}
