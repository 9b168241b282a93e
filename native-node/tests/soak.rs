//! Soak: many peers (four validators, the rest trainers, every one a real process on
//! loopback) training for minutes. Every few seconds the test reads each node's resident
//! memory (`/proc`) and its buffers (`/status` "queues", also exported as
//! `tabswarm_queue_length`). It asserts that no process died or panicked, that no buffer ever
//! held more than its bound, that buffers without a hard bound did not keep growing, that
//! resident memory grew by at most 10% from the first minutes to the last, and that the
//! chain went on (every node committed, test loss fell).
//!
//! `cargo xtask test` runs a short form (8 peers, 90 s); the reliability suite the full one
//! (`TABSWARM_SOAK_PEERS=32`, `TABSWARM_SOAK_SECS=600`).

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{FAST, Net, assert_same_block, heights, reach, report, scale, serial};

/// Between two readings of every node.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Most resident memory may grow from the start to the end of the run.
const MAX_RSS_GROWTH: f64 = 0.10;

/// One reading of one node.
struct Reading {
    rss_kib: u64,
    queues: BTreeMap<String, (u64, Option<u64>)>,
}

fn read(net: &Net, i: usize) -> Option<Reading> {
    let status: Value = serde_json::from_str(&net.get(i, "/status")?).ok()?;
    let queues = status["queues"]
        .as_object()?
        .iter()
        .map(|(name, q)| {
            (
                name.clone(),
                (q["len"].as_u64().unwrap_or(0), q["bound"].as_u64()),
            )
        })
        .collect();
    Some(Reading {
        rss_kib: net.rss_kib(i)?,
        queues,
    })
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn many_peers_for_minutes_no_panic_no_leak_no_growing_queue() {
    let _serial = serial();
    let peers = scale("TABSWARM_SOAK_PEERS", 8) as usize;
    let secs = scale("TABSWARM_SOAK_SECS", 90);
    let validators = 4;
    let mut net = support::net("soak", peers, validators, FAST);
    net.start_all().unwrap();
    let all: Vec<usize> = (0..peers).collect();
    let voters: Vec<usize> = (0..validators).collect();
    reach(&net, &all, 2, "every peer at height 2", 300);
    let loss_before = net.status(0).and_then(|s| s["test_loss"].as_f64()).unwrap();
    let start_height = heights(&net, &voters).into_iter().min().unwrap();
    let started = Instant::now();
    let mut samples: Vec<Vec<Reading>> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(SAMPLE_EVERY);
        let dead = net.newly_dead();
        assert!(dead.is_empty(), "nodes {dead:?} exited during the soak");
        let round: Vec<Reading> = all
            .iter()
            .map(|&i| read(&net, i).unwrap_or_else(|| panic!("node {i} did not answer /status")))
            .collect();
        for (i, r) in round.iter().enumerate() {
            for (name, (len, bound)) in &r.queues {
                if let Some(bound) = bound {
                    assert!(len <= bound, "node {i}: queue {name} holds {len} > {bound}");
                }
            }
        }
        samples.push(round);
    }
    assert!(samples.len() >= 5, "too few samples: {}", samples.len());
    let metrics = net.metrics(0).unwrap();
    assert!(
        metrics.contains("tabswarm_queue_length{queue=\"held_proposals\"}"),
        "queue lengths are not exported"
    );

    // Memory: the median of the second fifth of the run (past the start-up) against the
    // median of the last fifth, per node.
    let fifth = (samples.len() / 5).max(1);
    let window = |from: usize, i: usize| -> u64 {
        median(
            samples[from..(from + fifth).min(samples.len())]
                .iter()
                .map(|s| s[i].rss_kib)
                .collect(),
        )
    };
    let growth: Vec<f64> = all
        .iter()
        .map(|&i| window(samples.len() - fifth, i) as f64 / window(fifth, i) as f64 - 1.0)
        .collect();
    let rss_end_mib: Vec<u64> = all
        .iter()
        .map(|&i| samples.last().unwrap()[i].rss_kib / 1024)
        .collect();

    // Buffers without a hard bound: the largest value in the second half of the run may not
    // run away from the largest in the first half.
    let half = samples.len() / 2;
    let peak = |range: &[Vec<Reading>], name: &str| -> u64 {
        range
            .iter()
            .flat_map(|s| s.iter().map(|r| r.queues.get(name).map_or(0, |q| q.0)))
            .max()
            .unwrap_or(0)
    };
    let mut queue_peaks = serde_json::Map::new();
    for (name, (_, bound)) in &samples[0][0].queues {
        let (first, second) = (peak(&samples[..half], name), peak(&samples[half..], name));
        queue_peaks.insert(name.clone(), json!([first, second]));
        assert!(
            bound.is_some() || second <= (2 * first).max(first + 32),
            "queue {name} kept growing: peak {first} in the first half, {second} in the second"
        );
    }

    let logs: String = all
        .iter()
        .map(|&i| std::fs::read_to_string(&net.nodes[i].log).unwrap_or_default())
        .collect();
    assert!(!logs.contains("panicked"), "a node panicked");
    let end_height = heights(&net, &voters).into_iter().min().unwrap();
    let loss_after = net.status(0).and_then(|s| s["test_loss"].as_f64()).unwrap();
    let max_growth = growth.iter().cloned().fold(f64::MIN, f64::max);
    report(
        "soak",
        json!({
            "peers": peers,
            "validators": validators,
            "seconds": secs,
            "samples": samples.len(),
            "heights_committed": end_height - start_height,
            "test_loss": [loss_before, loss_after],
            "rss_growth_max": max_growth,
            "rss_growth_mean": growth.iter().sum::<f64>() / growth.len() as f64,
            "rss_end_mib_max": rss_end_mib.iter().max(),
            "rss_end_mib_median": median(rss_end_mib.clone()),
            "queue_peaks_first_second_half": queue_peaks,
        }),
    );
    assert!(
        max_growth <= MAX_RSS_GROWTH,
        "resident memory grew by {:.1}% on some node (bound {:.0}%): {growth:?}",
        max_growth * 100.0,
        MAX_RSS_GROWTH * 100.0
    );
    assert!(
        end_height > start_height,
        "no height committed during the soak"
    );
    assert!(
        loss_after < loss_before,
        "test loss did not fall: {loss_before} -> {loss_after}"
    );
    let top = end_height;
    reach(&net, &all, top, "every peer at the validators' height", 120);
    net.stop_all().unwrap();
    assert_same_block(&net, &all, top);
}
