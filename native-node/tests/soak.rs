//! Soak: many peers (four validators, the rest trainers, every one a real process on
//! loopback) training for minutes. Every few seconds the test reads each node's resident
//! memory (`/proc`) and its buffers (`/status` "queues", also exported as
//! `tabswarm_queue_length`). It asserts that no process died or panicked, that no buffer ever
//! held more than its bound, that buffers without a hard bound did not keep growing, that
//! resident memory grew by at most 10% from the first minutes to the last (judged in runs of
//! 5 minutes or more; shorter ones are still warming up), and that the chain went on (every
//! node committed, test loss fell).
//!
//! With `TABSWARM_SOAK_TABS=N` (and `TABSWARM_PKG`, the browser package), N volunteers'
//! headless tabs join too (`tests/e2e/soak_tabs.mjs`): the run then keeps its data on the
//! network, open to anyone, with rounds long enough for tabs, and each tab's memory (JS heap
//! after a forced collection, plus its wasm memories) is held to the same 10%.
//!
//! `cargo xtask test` runs a short form (8 native peers, 90 s); the reliability suite the full
//! one (`TABSWARM_SOAK_PEERS=32`, `TABSWARM_SOAK_SECS=600`, `TABSWARM_SOAK_TABS=4`).

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{FAST, Net, assert_same_block, heights, reach, report, scale, serial};

/// Between two readings of every node.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Most resident memory may grow from the start to the end of the run.
const MAX_RSS_GROWTH: f64 = 0.10;
/// Shortest run whose memory growth is judged: in a shorter one, nodes are still warming up
/// (a validator went from 200 to 243 MiB in the first 90 s and stayed near that for 10
/// minutes), so growth there says nothing about leaks. It is reported either way.
const MIN_SECS_FOR_MEMORY: u64 = 300;
/// Longest the validators may go without committing a height.
const MAX_STALL_SECS: u64 = 120;
/// One reading of one node.
struct Reading {
    rss_kib: u64,
    queues: BTreeMap<String, (u64, Option<u64>)>,
    height: u64,
    /// What the node saw of the network, for a stall: height, round, peers, and how it
    /// reached the other validators.
    view: String,
}

/// How `status` reaches each of `validators` (peer ids): `d` directly, `r` by relay, `-` not.
fn reach_of(status: &Value, validators: &[String]) -> String {
    let has = |k: &str, id: &str| {
        status[k]
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p.as_str() == Some(id)))
    };
    validators
        .iter()
        .map(|id| {
            if status["peer_id"].as_str() == Some(id) {
                '*'
            } else if has("direct_peers", id) {
                'd'
            } else if has("relayed_peers", id) {
                'r'
            } else {
                '-'
            }
        })
        .collect()
}

fn read(net: &Net, i: usize, validators: &[String]) -> Option<Reading> {
    let status: Value = serde_json::from_str(&net.get(i, "/status")?).ok()?;
    let view = format!(
        "height {} round {} peers {} validators [{}]",
        status["height"],
        status["round"],
        status["peers"],
        reach_of(&status, validators)
    );
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
        height: status["height"].as_u64().unwrap_or(0),
        view,
    })
}

/// The longest stretch of readings in which the validators' lowest height did not move, if
/// it lasted a minute or more: how long, and what each validator saw at its start and end
/// (enough to tell a slow network from a cut one).
fn longest_stall(samples: &[Vec<Reading>], at_s: &[u64], voters: &[usize]) -> Option<Value> {
    let low = |s: &[Reading]| voters.iter().map(|&i| s[i].height).min().unwrap_or(0);
    let (mut best, mut from) = ((0, 0), 0);
    for (k, s) in samples.iter().enumerate() {
        if low(s) != low(&samples[from]) {
            from = k;
        }
        if at_s[k] - at_s[from] > at_s[best.1] - at_s[best.0] {
            best = (from, k);
        }
    }
    let secs = at_s[best.1] - at_s[best.0];
    (secs >= 60).then(|| {
        let views = |k: usize| -> Vec<&str> {
            voters
                .iter()
                .map(|&i| samples[k][i].view.as_str())
                .collect()
        };
        json!({
            "seconds": secs,
            "from_s": at_s[best.0],
            "at_start": views(best.0),
            "at_end": views(best.1),
        })
    })
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Growth from the median of the second fifth of `series` to the median of its last fifth
/// (the first fifth is start-up).
fn growth(series: &[f64]) -> f64 {
    let fifth = (series.len() / 5).max(1);
    let at = |from: usize| median(series[from..(from + fifth).min(series.len())].to_vec());
    at(series.len() - fifth) / at(fifth) - 1.0
}

/// The tabs' process, killed if the test fails before judging it.
struct Tabs(Option<Child>);

impl Drop for Tabs {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `tabs` headless volunteers on `net` until `secs` from now (a wall-clock end: on a
/// loaded machine opening the tabs takes minutes); their report lands in `out`.
fn start_tabs(net: &Net, tabs: usize, secs: u64, out: &Path) -> Tabs {
    let until_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + u128::from(secs) * 1000;
    let network = net.dir.join("network.json");
    std::fs::write(&network, net.for_browsers().unwrap().to_string()).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("node")
        .arg("tests/e2e/soak_tabs.mjs")
        .current_dir(root)
        .env("TABSWARM_NETWORK", &network)
        .env("TABSWARM_DATA", support::data_file())
        .env("TABSWARM_SOAK_TABS", tabs.to_string())
        .env("TABSWARM_SOAK_SECS", secs.to_string())
        .env("TABSWARM_SOAK_UNTIL_MS", until_ms.to_string())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(net.dir.join("tabs.log")).unwrap())
        .spawn()
        .map(|c| Tabs(Some(c)))
        .expect(
            "starting node tests/e2e/soak_tabs.mjs (is node installed? cargo xtask installs it)",
        )
}

/// Waits (bounded) for the tabs' report and judges it: its figures, and what went wrong.
/// `chain_height` is the validators' height at the end.
fn judge_tabs(
    mut tabs: Tabs,
    out: &Path,
    net: &Net,
    chain_height: u64,
    judge_memory: bool,
) -> (Value, Vec<String>) {
    let mut child = tabs.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // Judged with the rest (the native peers' figures are still saved).
            let _ = child.kill();
            let _ = child.wait();
            return (
                Value::Null,
                vec!["the tabs' script did not report within 5 minutes of the run's end".into()],
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(net.dir.join("tabs.log")).unwrap_or_default();
    let report: Option<Value> = std::fs::read(out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(report) = report.filter(|_| status.success()) else {
        // Judged with the rest: the native peers' figures are still saved.
        return (
            Value::Null,
            vec![format!("the tabs' script failed ({status}): {log}")],
        );
    };
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    for (i, tab) in report["tabs"].as_array().unwrap().iter().enumerate() {
        let samples = tab["samples"].as_array().unwrap();
        if tab["crashed"] != false || tab["errors"] != json!([]) || samples.len() < 5 {
            problems.push(format!(
                "tab {i}: crashed {}, page errors {}, {} samples",
                tab["crashed"],
                tab["errors"],
                samples.len()
            ));
            continue;
        }
        let field = |k: &str| -> Vec<f64> {
            samples
                .iter()
                .map(|s| s[k].as_f64().unwrap_or(0.0))
                .collect()
        };
        let total: Vec<f64> = field("heap_mb")
            .iter()
            .zip(field("wasm_mb"))
            .map(|(h, w)| h + w)
            .collect();
        let g = growth(&total);
        let last = samples.last().unwrap();
        let height = last["height"].as_u64().unwrap_or(0);
        figures.push(json!({
            "memory_growth": g,
            "memory_end_mb": total.last(),
            "wasm_end_mb": last["wasm_mb"],
            "height_end": height,
            "params_height_end": last["params_height"],
            "credit_end": last["credit"],
        }));
        if judge_memory && g > MAX_RSS_GROWTH {
            problems.push(format!("tab {i}: memory grew by {:.1}%", g * 100.0));
        }
        // A tab that stops following the chain is broken for its volunteer.
        if height + 5 < chain_height {
            problems.push(format!(
                "tab {i} was at height {height} (parameters {}) when the chain was at {chain_height}; its console's last lines:\n{}",
                last["params_height"],
                tab["console_tail"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default()
            ));
        }
    }
    (Value::Array(figures), problems)
}

#[test]
fn many_peers_for_minutes_no_panic_no_leak_no_growing_queue() {
    let _serial = serial();
    let peers = scale("TABSWARM_SOAK_PEERS", 8) as usize;
    let secs = scale("TABSWARM_SOAK_SECS", 90);
    let tabs = scale("TABSWARM_SOAK_TABS", 0) as usize;
    let validators = 4;
    let mut net = if tabs > 0 {
        support::net_spec(
            "soak",
            peers,
            validators,
            tabswarm_testnet::WITH_TABS,
            |s| s.open_network_data(0),
        )
    } else {
        support::net("soak", peers, validators, FAST)
    };
    net.start_all().unwrap();
    let all: Vec<usize> = (0..peers).collect();
    let voters: Vec<usize> = (0..validators).collect();
    reach(&net, &all, 2, "every peer at height 2", 300);
    let loss_before = net.status(0).and_then(|s| s["test_loss"].as_f64()).unwrap();
    let start_height = heights(&net, &voters).into_iter().min().unwrap();
    let tabs_out = net.dir.join("tabs.json");
    let tab_run = (tabs > 0).then(|| start_tabs(&net, tabs, secs, &tabs_out));
    let validator_ids: Vec<String> = voters
        .iter()
        .map(|&i| net.nodes[i].peer_id.clone())
        .collect();
    let started = Instant::now();
    let mut samples: Vec<Vec<Reading>> = Vec::new();
    let mut at_s: Vec<u64> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(SAMPLE_EVERY);
        let dead = net.newly_dead();
        assert!(dead.is_empty(), "nodes {dead:?} exited during the soak");
        let round: Vec<Reading> = all
            .iter()
            .map(|&i| {
                read(&net, i, &validator_ids)
                    .unwrap_or_else(|| panic!("node {i} did not answer /status"))
            })
            .collect();
        for (i, r) in round.iter().enumerate() {
            for (name, (len, bound)) in &r.queues {
                if let Some(bound) = bound {
                    assert!(len <= bound, "node {i}: queue {name} holds {len} > {bound}");
                }
            }
        }
        samples.push(round);
        at_s.push(started.elapsed().as_secs());
    }
    assert!(samples.len() >= 5, "too few samples: {}", samples.len());
    let metrics = net.metrics(0).unwrap();
    assert!(
        metrics.contains("tabswarm_queue_length{queue=\"held_proposals\"}"),
        "queue lengths are not exported"
    );

    // Memory: the median of the second fifth of the run (past the start-up) against the
    // median of the last fifth, per node.
    let growth: Vec<f64> = all
        .iter()
        .map(|&i| {
            growth(
                &samples
                    .iter()
                    .map(|s| s[i].rss_kib as f64)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    for &i in &voters {
        let series: Vec<u64> = samples.iter().map(|s| s[i].rss_kib / 1024).collect();
        println!("soak: node {i} (validator) resident MiB every 5 s: {series:?}");
    }
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
    let mut problems = Vec::new();
    for (name, (_, bound)) in &samples[0][0].queues {
        let (first, second) = (peak(&samples[..half], name), peak(&samples[half..], name));
        queue_peaks.insert(name.clone(), json!([first, second]));
        if bound.is_none() && second > (2 * first).max(first + 32) {
            problems.push(format!(
                "queue {name} kept growing: peak {first} in the first half, {second} in the second"
            ));
        }
    }

    let logs: String = all
        .iter()
        .map(|&i| std::fs::read_to_string(&net.nodes[i].log).unwrap_or_default())
        .collect();
    assert!(!logs.contains("panicked"), "a node panicked");
    let end_height = heights(&net, &voters).into_iter().min().unwrap();
    let loss_after = net.status(0).and_then(|s| s["test_loss"].as_f64()).unwrap();
    let max_growth = growth.iter().cloned().fold(f64::MIN, f64::max);
    let judge_memory = secs >= MIN_SECS_FOR_MEMORY;
    if judge_memory && max_growth > MAX_RSS_GROWTH {
        problems.push(format!(
            "resident memory grew by {:.1}% on some node (bound {:.0}%): {growth:?}",
            max_growth * 100.0,
            MAX_RSS_GROWTH * 100.0
        ));
    }
    let stall = longest_stall(&samples, &at_s, &voters);
    if let Some(s) = &stall {
        println!("soak: longest stall of the validators {s:#}");
        // Twenty rounds' worth of timeouts at any setting the soak uses.
        if s["seconds"].as_u64().unwrap_or(0) >= MAX_STALL_SECS {
            problems.push(format!("no height committed for {} s: {s}", s["seconds"]));
        }
    }
    let tab_figures = tab_run.map(|child| {
        let (figures, tab_problems) = judge_tabs(child, &tabs_out, &net, end_height, judge_memory);
        problems.extend(tab_problems);
        figures
    });
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
            "memory_judged": judge_memory,
            "rss_growth_mean": growth.iter().sum::<f64>() / growth.len() as f64,
            "rss_end_mib_max": rss_end_mib.iter().max(),
            "rss_end_mib_median": median(rss_end_mib.clone()),
            "queue_peaks_first_second_half": queue_peaks,
            "longest_stall": stall,
            "tabs": tab_figures,
            "problems": problems,
        }),
    );
    assert!(problems.is_empty(), "{problems:#?}");
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
