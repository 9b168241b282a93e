//! `cargo xtask bench`: training-step benchmarks, native and in headless Chromium, merged
//! into `bench/results/train_step.json`, and the consensus benchmark into
//! `bench/results/consensus.json`, the network into `bench/results/network.json`, and the
//! volunteer's tab against real nodes into `bench/results/browser.json`, the data on the
//! network into `bench/results/data.json`, the compression settings into
//! `bench/results/compression.json`, the aggregation rules' costs and their accuracy under
//! attack (`crate::bench_attacks`) into `bench/results/robust.json`, each with the command and the machine. Every measured
//! figure is the median of several runs with their min and max (see [`crate::runs`]).

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

use crate::install::{self, CHROMIUM};
use crate::runs::fold;
use crate::sh::{self, Profile, Steps};
use crate::{machine, wasm};

/// Runs of every benchmark; each committed figure is their median, min and max.
const RUNS: u32 = 5;

/// Configuration values in the train-step records: kept as they are, not summarised.
const TRAIN_LABELS: [&str; 5] = ["shape", "config", "target_accuracy", "batch", "timed_steps"];

/// Configuration values in the consensus records.
const CONSENSUS_LABELS: [&str; 12] = [
    "sim_seed",
    "validators",
    "light_peers",
    "rtt_ms",
    "mesh_degree",
    "announce_to_validators",
    "churn_per_mille_per_height",
    "signatures",
    "from_peers",
    "to_peers",
    "log_n_ratio",
    "n_ratio",
];

/// Which benchmarks `cargo xtask bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Only {
    /// Training step, native and in Chromium.
    Train,
    /// Consensus in process and in the simulator.
    Consensus,
    /// Real processes on loopback.
    Network,
    /// The volunteer's tab in Chromium against a relay and three validators.
    Browser,
    /// The data on the network: vault crypto (native and Chromium), fetch, repair, storage.
    Data,
    /// Bytes per update and accuracy for each genesis compression (simulated peers, MNIST).
    Compression,
    /// What each aggregation rule costs, native and in Chromium.
    Robust,
    /// Test accuracy for each aggregation rule under each attack (lock-step rounds, MNIST).
    Attacks,
}

pub(crate) fn run(
    steps: u32,
    only: Option<Only>,
    rounds: u64,
    catch_up_blocks: u64,
) -> anyhow::Result<()> {
    if only == Some(Only::Network) {
        return network(rounds, catch_up_blocks);
    }
    if only == Some(Only::Browser) {
        return browser();
    }
    if only == Some(Only::Consensus) {
        let mut s = Steps::new();
        consensus(&mut s, "cargo xtask bench --only consensus")?;
        s.summary();
        return Ok(());
    }
    if only == Some(Only::Data) {
        let mut s = Steps::new();
        data(&mut s, "cargo xtask bench --only data")?;
        s.summary();
        return Ok(());
    }
    if only == Some(Only::Compression) {
        let mut s = Steps::new();
        compression(&mut s, "cargo xtask bench --only compression")?;
        s.summary();
        return Ok(());
    }
    if only == Some(Only::Robust) {
        let mut s = Steps::new();
        robust(&mut s, "cargo xtask bench --only robust")?;
        s.summary();
        return Ok(());
    }
    if only == Some(Only::Attacks) {
        let mut s = Steps::new();
        crate::bench_attacks::run(&mut s, "cargo xtask bench --only attacks")?;
        s.summary();
        return Ok(());
    }
    train_and_consensus(steps, only.is_none())?;
    if only.is_none() {
        let mut s = Steps::new();
        data(&mut s, "cargo xtask bench")?;
        compression(&mut s, "cargo xtask bench")?;
        robust(&mut s, "cargo xtask bench")?;
        crate::bench_attacks::run(&mut s, "cargo xtask bench")?;
        s.summary();
        network(rounds, catch_up_blocks)?;
        browser()?;
    }
    Ok(())
}

/// What the issue set for the volunteer's tab (`bench/results/browser.json` quotes them).
fn browser_targets() -> Value {
    json!({
        "page_open_to_first_accepted_update_s": "<= 5 (wasm cached, loopback)",
        "bundle.gzip_mb": "<= 3 (including libp2p)",
        "heap_mb": "<= 150 (JS heaps of page and workers; wasm memories in wasm_memory_mb)",
        "workers.speedup_2_over_1": ">= 1.6 (2-core machine)",
        "step_ms.relaxed_over_tfjs": "<= 0.15 (relaxed SIMD build vs TF.js wasm, same page)",
    })
}

/// `summary.step_ms` of `bench/results/train_step.json` with where it comes from, if the train
/// benchmark wrote one.
fn train_step_ms() -> Option<Value> {
    let text = std::fs::read_to_string(results_dir().join("train_step.json")).ok()?;
    let train: Value = serde_json::from_str(&text).ok()?;
    let mut step_ms = train["summary"]["step_ms"].clone();
    step_ms.as_object()?;
    step_ms["source"] = json!(format!(
        "bench/results/train_step.json ({}): MLP SGD step, flex, batch 64, one thread",
        train["command"]
            .as_str()
            .unwrap_or("cargo xtask bench --only train")
    ));
    Some(step_ms)
}

/// `bench/tab.mjs` against the network `cargo xtask test` gives tabs, folded into
/// `bench/results/browser.json`.
fn browser() -> anyhow::Result<()> {
    let mut s = Steps::new();
    s.step("install what is missing", crate::test::install_missing)?;
    let pkg = s.step("browser build", wasm::build_browser_pkg)?;
    let data = s.step("data", || install::ensure_data(Profile::Dev))?;
    s.step("build tabswarm-node and tabswarm-relay", || {
        install::build_bins(Profile::Dev)
    })?;
    let load_before = machine::load_average();
    let raw: Value = s.step(
        "browser benchmark (headless chromium, relay + 3 validators)",
        || {
            let mut net = crate::test::network_for_tabs(&data)?;
            let network = net.dir.join("network.json");
            std::fs::write(&network, net.for_browsers()?.to_string())?;
            let text = sh::output(
                "node bench/tab.mjs",
                Command::new("node")
                    .arg("bench/tab.mjs")
                    .current_dir(sh::root())
                    // Each run's figures as they come (stdout carries the JSON).
                    .stderr(std::process::Stdio::inherit())
                    .env("TABSWARM_PKG", &pkg)
                    .env("TABSWARM_DATA", &data)
                    .env("TABSWARM_NETWORK", &network)
                    .env("TABSWARM_CHROMIUM", CHROMIUM)
                    // TABSWARM_BENCH_RUNS=1 for one run while working on it (the file says how
                    // many runs its figures fold).
                    .env(
                        "TABSWARM_BENCH_RUNS",
                        std::env::var("TABSWARM_BENCH_RUNS").unwrap_or_else(|_| RUNS.to_string()),
                    ),
            );
            // The nodes' logs, kept for a look (TABSWARM_NODE_LOG=debug shows proposals).
            let logs = sh::root().join("out").join("bench").join("browser-network");
            std::fs::create_dir_all(&logs)?;
            for entry in std::fs::read_dir(&net.dir)?.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    std::fs::copy(&path, logs.join(entry.file_name()))?;
                }
            }
            if text.is_err() {
                eprintln!("--- logs of the network ---\n{}", net.logs());
            }
            net.stop_all()?;
            serde_json::from_str(text?.trim()).context("parsing the tab benchmark's output")
        },
    )?;
    let runs = raw["runs"].as_array().context("tab benchmark runs")?;
    let mut results = fold(runs, &[]);
    // The training step of each build is timed by the train benchmark (one page, both builds,
    // TF.js and native in the same run); quoted here under the names the issue gave them.
    if let Some(step_ms) = train_step_ms() {
        results["step_ms"] = step_ms;
    }
    let mut record = machine::record_since(load_before);
    record["browser"] = json!({ "user_agent": raw["user_agent"] });
    let report = json!({
        "command": "cargo xtask bench --only browser",
        "machine": record,
        "setup": "a relay and three validators (tabswarm-node, dev profile) on loopback on the \
                  same machine, as `cargo xtask test` runs them for tabs: 30 local steps of 32 \
                  examples, proposer deadline 2 s. Each run a fresh Chromium profile: a new \
                  volunteer (1 worker) opens the page and agrees at once; then comes back with \
                  2 workers (wasm cached, identity and chain in IndexedDB), whose page times 3 \
                  training jobs on one worker and 3 split across both before keeping the \
                  faster; then one page per transport (?transport=) for 10 pings. Training \
                  jobs are timed while the validators keep training on the same 2 cores.",
        "bundle": raw["bundle"],
        "runs": runs.len(),
        "results": results,
        "targets": browser_targets(),
    });
    let path = results_dir().join("browser.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    s.summary();
    eprintln!("\n{}", serde_json::to_string_pretty(&report["results"])?);
    eprintln!("\nwritten to {}", path.display());
    Ok(())
}

fn network(rounds: u64, catch_up_blocks: u64) -> anyhow::Result<()> {
    let mut s = Steps::new();
    let data = s.step("data", || install::ensure_data(Profile::Release))?;
    s.step("build tabswarm-node and tabswarm-relay (release)", || {
        install::build_bins(Profile::Release)
    })?;
    let out = results_dir().join("network.json");
    s.step("network benchmark (relay + nodes on loopback)", || {
        crate::bench_network::run(&data, &out, rounds, catch_up_blocks)
    })?;
    s.summary();
    eprintln!("\nwritten to {}", out.display());
    Ok(())
}

/// Runs `cargo bench -p <package> --bench <bench> -- --runs RUNS --out <scratch file>` (the
/// benchmarks' shared command line) and reads the JSON it wrote.
fn cargo_bench(s: &mut Steps, package: &str, bench: &str) -> anyhow::Result<Value> {
    cargo_bench_with(s, package, bench, &[])
}

/// [`cargo_bench`] with environment variables for the benchmark.
pub(crate) fn cargo_bench_with(
    s: &mut Steps,
    package: &str,
    bench: &str,
    env: &[(&str, &Path)],
) -> anyhow::Result<Value> {
    let scratch = sh::cache().join("bench");
    std::fs::create_dir_all(&scratch)?;
    let raw_path = scratch.join(format!("{bench}.json"));
    s.step(&format!("{bench} benchmark (release)"), || {
        let mut cmd = sh::cargo(&[
            "bench",
            "--package",
            package,
            "--bench",
            bench,
            "--",
            "--runs",
            &RUNS.to_string(),
            "--out",
        ]);
        cmd.arg(&raw_path).envs(env.iter().copied());
        sh::run(&format!("cargo bench {bench}"), &mut cmd)?;
        Ok(serde_json::from_slice(&std::fs::read(&raw_path)?)?)
    })
}

fn consensus(s: &mut Steps, command: &str) -> anyhow::Result<()> {
    let consensus_path = results_dir().join("consensus.json");
    let load_before = machine::load_average();
    let raw = cargo_bench(s, "tabswarm-consensus", "consensus")?;
    let report = consensus_report(command, &raw, load_before)?;
    std::fs::write(
        &consensus_path,
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    eprintln!("written to {}", consensus_path.display());
    Ok(())
}

/// The data vault's throughput natively (`core/benches/vault.rs`) and in headless Chromium
/// (`bench/vault.mjs`, the same code in wasm) into `bench/results/data.json`.
fn data(s: &mut Steps, command: &str) -> anyhow::Result<()> {
    let out = results_dir().join("data.json");
    s.step("install what is missing", crate::test::install_missing)?;
    let pkg = s.step("browser build", wasm::build_browser_pkg)?;
    let dataset = s.step("data", || install::ensure_data(Profile::Dev))?;
    let load_before = machine::load_average();
    let raw = cargo_bench(s, "tabswarm-core", "vault")?;
    let runs = raw["runs"]
        .as_array()
        .context("the vault benchmark wrote no runs")?;
    let chromium = chromium_bench(s, "vault", &pkg, &dataset)?;
    let browser_runs = chromium["runs"]
        .as_array()
        .context("bench/vault.mjs wrote no runs")?;
    s.step("build tabswarm-node and tabswarm-relay (release)", || {
        install::build_bins(Profile::Release)
    })?;
    let network = s.step(
        "data on the network (relay, 3 validators, 4 storage nodes, a fresh trainer)",
        || crate::bench_data::runs(&dataset, RUNS as usize),
    )?;
    let report = json!({
        "command": command,
        "machine": machine::record_since(load_before),
        "figures": "MB/s, each {median, min, max, runs} over whole runs (each run's figure is the median of 9 timings, each timing at least 10 ms of calls)",
        "target": "sealing and opening within 2x of plain AES-256-GCM of the same bytes with the same crate (seal_over_aes_gcm, open_over_aes_gcm <= 2)",
        "results": fold(runs, &["samples", "shard_bytes"]),
        "chromium": {
            "user_agent": chromium["user_agent"],
            "cross_origin_isolated": chromium["cross_origin_isolated"],
            "results": fold(browser_runs, &["samples", "shard_bytes"]),
        },
        "network": {
            "what": "real processes on loopback (xtask/src/bench_data.rs): replicated_s from the start until every shard is on `replication` storage holders; 30 s later copies_per_shard_* and bytes_per_holder_* (on disk); fetch_* a fresh trainer from its start to every shard held and opened; repair_* two of a shard's holders killed -9 until it is on three live holders",
            "results": fold(&network, &["shards", "storage_peers", "replication", "dataset_sealed_bytes"]),
        },
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("written to {}", out.display());
    Ok(())
}

/// Bytes per update and accuracy per genesis compression (`sim/benches/compression.rs`)
/// into `bench/results/compression.json`.
fn compression(s: &mut Steps, command: &str) -> anyhow::Result<()> {
    let out = results_dir().join("compression.json");
    let dataset = s.step("data", || install::ensure_data(Profile::Dev))?;
    let load_before = machine::load_average();
    let raw = cargo_bench_with(
        s,
        "tabswarm-sim",
        "compression",
        &[("TABSWARM_DATA", &dataset)],
    )?;
    let runs = raw["runs"]
        .as_array()
        .context("the compression benchmark wrote no runs")?;
    let report = json!({
        "command": command,
        "machine": machine::record_since(load_before),
        "setup": raw["setup"],
        "what": "four simulated validators that also train (real MNIST MLP jobs, virtual network), the same heights for every setting; bytes are an update's payload (what a trainer sends per round), accuracy is validator 0's test of the parameters committed at the last height",
        "figures": "each {median, min, max, runs} over runs with seeds 1..=runs; the seed changes only the simulated network delays, and with every update included at every height the deterministic jobs give the same figures in every run",
        "target": ">= 500x fewer bytes than dense f32 at <= 1 point accuracy loss (issue: robust aggregation and compression)",
        "results": fold(runs, &["dense_bytes_per_update", "tested_height"]),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("written to {}", out.display());
    Ok(())
}

/// What each aggregation rule costs for 8, 64 and 512 updates of the MLP's size, natively
/// (`core/benches/aggregate.rs`) and in headless Chromium (`bench/aggregate.mjs`, the same
/// code in wasm), into `bench/results/robust.json`.
fn robust(s: &mut Steps, command: &str) -> anyhow::Result<()> {
    let out = results_dir().join("robust.json");
    s.step("install what is missing", crate::test::install_missing)?;
    let pkg = s.step("browser build", wasm::build_browser_pkg)?;
    let dataset = s.step("data", || install::ensure_data(Profile::Dev))?;
    let load_before = machine::load_average();
    let raw = cargo_bench(s, "tabswarm-core", "aggregate")?;
    let runs = raw["runs"]
        .as_array()
        .context("the aggregation benchmark wrote no runs")?;
    let chromium = chromium_bench(s, "aggregate", &pkg, &dataset)?;
    let browser_runs = chromium["runs"]
        .as_array()
        .context("bench/aggregate.mjs wrote no runs")?;
    let mut report = json!({
        "command": command,
        "machine": machine::record_since(load_before),
        "what": "milliseconds per aggregate of n seeded updates of the MLP's 101,770 values, per genesis rule (tabswarm_core::perf::aggregation_costs): a validator computes one for every proposal it judges and a proposer for each set it tries, on its event loop; centered clipping runs the genesis default's 3 iterations, the trimmed mean drops 10% at each end",
        "figures": "each {median, min, max, runs} over whole runs, one timing per rule and size in each run",
        "aggregation_ms": {
            "native": fold(runs, &["updates", "values"]),
            "chromium": {
                "user_agent": chromium["user_agent"],
                "results": fold(browser_runs, &["updates", "values"]),
            },
        },
    });
    // The accuracy table shares the file and is measured separately: keep it.
    let section = crate::bench_attacks::SECTION;
    if let Some(earlier) = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|r| !r[section].is_null())
    {
        report[section] = earlier[section].clone();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("written to {}", out.display());
    Ok(())
}

/// Runs `bench/<script>.mjs` (the native benchmark's code in headless Chromium, RUNS whole
/// runs) and reads the JSON it prints: `{runs: [...], user_agent, ...}`.
fn chromium_bench(
    s: &mut Steps,
    script: &str,
    pkg: &Path,
    dataset: &Path,
) -> anyhow::Result<Value> {
    let file = format!("bench/{script}.mjs");
    s.step("the same in headless chromium (wasm, simd128)", || {
        let text = sh::output(
            &format!("node {file}"),
            Command::new("node")
                .arg(&file)
                .current_dir(sh::root())
                .stderr(std::process::Stdio::inherit())
                .env("TABSWARM_PKG", pkg)
                .env("TABSWARM_DATA", dataset)
                .env("TABSWARM_CHROMIUM", CHROMIUM)
                .env("TABSWARM_BENCH_RUNS", RUNS.to_string()),
        )?;
        serde_json::from_str(text.trim()).with_context(|| format!("parsing {file}'s output"))
    })
}

/// The consensus benchmark's per-run records folded into one, beside its notes and the
/// machine.
fn consensus_report(
    command: &str,
    raw: &Value,
    load_before: Option<Vec<f64>>,
) -> anyhow::Result<Value> {
    let runs = raw["runs"]
        .as_array()
        .context("the consensus benchmark wrote no runs")?;
    let mut report = serde_json::Map::new();
    report.insert("command".into(), command.into());
    report.insert("machine".into(), machine::record_since(load_before));
    report.insert("runs".into(), runs.len().into());
    report.insert(
        "figures".into(),
        "every measured number is {median, min, max, runs} over whole runs of the benchmark".into(),
    );
    for (k, v) in raw.as_object().context("consensus JSON")? {
        if k != "runs" {
            report.insert(k.clone(), v.clone());
        }
    }
    if let Value::Object(folded) = fold(runs, &CONSENSUS_LABELS) {
        report.extend(folded);
    }
    Ok(Value::Object(report))
}

fn train_and_consensus(steps: u32, with_consensus: bool) -> anyhow::Result<()> {
    let mut s = Steps::new();
    s.step("install what is missing", || {
        install::ensure_wasm_target()?;
        install::ensure_chromium()?;
        install::ensure_npm()
    })?;
    let data = s.step("data", || install::ensure_data(Profile::Release))?;
    let pkg = s.step("browser build", wasm::build_browser_pkg)?;
    let scratch = sh::cache().join("bench");
    std::fs::create_dir_all(&scratch)?;
    let native_out = scratch.join("native.json");
    let load_before = machine::load_average();
    let native: Value = s.step("native benchmark (release)", || {
        sh::run(
            "cargo bench train_step",
            sh::cargo(&[
                "bench",
                "--package",
                "tabswarm-node",
                "--bench",
                "train_step",
                "--",
                "--steps",
                &steps.to_string(),
                "--runs",
                &RUNS.to_string(),
                "--out",
            ])
            .arg(&native_out)
            .env("TABSWARM_DATA", &data),
        )?;
        Ok(serde_json::from_slice(&std::fs::read(&native_out)?)?)
    })?;
    let browser: Value = s.step("browser benchmark (headless chromium)", || {
        let text = sh::output(
            "node bench/browser.mjs",
            Command::new("node")
                .arg("bench/browser.mjs")
                .current_dir(sh::root())
                .env("TABSWARM_PKG", &pkg)
                .env("TABSWARM_DATA", &data)
                .env("TABSWARM_CHROMIUM", CHROMIUM)
                .env("TABSWARM_BENCH_STEPS", steps.to_string())
                .env("TABSWARM_BENCH_RUNS", RUNS.to_string()),
        )?;
        // Kept beside native.json: the per-run records behind the folded figures.
        std::fs::write(scratch.join("browser.json"), &text)?;
        serde_json::from_str(text.trim()).context("parsing the browser benchmark's output")
    })?;
    if with_consensus {
        consensus(&mut s, "cargo xtask bench")?;
    }
    let command = if with_consensus {
        "cargo xtask bench"
    } else {
        "cargo xtask bench --only train"
    };
    let report = merge(command, &native, &browser, load_before)?;
    let path = sh::root()
        .join("bench")
        .join("results")
        .join("train_step.json");
    std::fs::create_dir_all(path.parent().context("results path")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    s.summary();
    eprintln!(
        "\n{}",
        serde_json::to_string_pretty(&report["summary"]["rows"])?
    );
    eprintln!("\nwritten to {}", path.display());
    Ok(())
}

/// `bench/results/`, created if missing.
pub(crate) fn results_dir() -> std::path::PathBuf {
    let dir = sh::root().join("bench").join("results");
    // A missing folder shows up as a clear write error right after, so ignore this one.
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Floating-point operations of the matmuls in one MLP step at batch 64 (forward and
/// backward; `tabswarm_core::perf::mlp_step_flops`).
const FLOPS_PER_STEP: f64 = (2 * (2 * 64 * 784 * 128) + 3 * (2 * 64 * 128 * 10)) as f64;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn find<'a>(list: &'a Value, backend: Option<&str>, optimizer: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| {
            l.iter()
                .find(|r| r["optimizer"] == optimizer && backend.is_none_or(|b| r["backend"] == b))
        })
        .unwrap_or(&Value::Null)
}

/// The fastest peak kernel of one run: the most this core did per second there.
fn best_peak(run: &Value) -> f64 {
    run["peak"]
        .as_object()
        .map(|p| {
            p.values()
                .map(|k| num(&k["gflops"]))
                .filter(|g| g.is_finite())
                .fold(f64::NAN, f64::max)
        })
        .unwrap_or(f64::NAN)
}

/// One run's comparison rows and peaks. Native and browser runs are separate processes:
/// run `i` of one side is paired with run `i` of the other.
fn paired_run(native: &Value, browser: &Value) -> Value {
    let gflops = |ms: f64| FLOPS_PER_STEP / (ms / 1e3) / 1e9;
    let native_peak = best_peak(native);
    let wasm_peak = best_peak(browser);
    let mut rows = Vec::new();
    // (browser configuration, native backend it compares with): the relaxed-SIMD build runs
    // flex, like the first row; native has one build.
    for (backend, native_backend) in [
        ("flex", "flex"),
        ("ndarray", "ndarray"),
        ("flex-relaxed", "flex"),
    ] {
        for optimizer in ["sgd", "adam"] {
            let n = num(&find(&native["steps"], Some(native_backend), optimizer)["median_ms"]);
            let w = num(&find(&browser["steps"], Some(backend), optimizer)["median_ms"]);
            let tf = num(&find(&browser["tfjs"], None, optimizer)["median_ms"]);
            let share =
                |side: &Value, b: &str, t: f64| num(&side["matmul"][b]["step_matmuls_ms"]) / t;
            rows.push(json!({
                "backend": backend,
                "optimizer": optimizer,
                "native_ms": n,
                "wasm_ms": w,
                "tfjs_wasm_ms": tf,
                "wasm_over_native": w / n,
                "wasm_over_tfjs": w / tf,
                "native_gflops": gflops(n),
                "wasm_gflops": gflops(w),
                "tfjs_wasm_gflops": gflops(tf),
                "native_gflops_over_peak": gflops(n) / native_peak,
                "wasm_gflops_over_peak": gflops(w) / wasm_peak,
                "wasm_gflops_over_simd128_peak": gflops(w) / num(&browser["peak"]["simd128_mul_add"]["gflops"]),
                "native_matmul_share": share(native, native_backend, n),
                "wasm_matmul_share": share(browser, backend, w),
            }));
        }
    }
    let peak_of = |side: &Value, kernel: &str| side["peak"][kernel]["gflops"].clone();
    json!({
        "rows": rows,
        "peak_gflops": {
            "native": native_peak,
            "native_fma256": peak_of(native, "fma256"),
            "native_mul_add128": peak_of(native, "mul_add128"),
            "wasm": wasm_peak,
            "wasm_simd128_mul_add": peak_of(browser, "simd128_mul_add"),
            "wasm_relaxed_madd": peak_of(browser, "relaxed_madd"),
        },
    })
}

/// simd128 step time over relaxed-SIMD step time (flex, SGD) within each browser run, folded:
/// the two builds run in the same page, so their ratio is free of the VM's clock changes.
fn relaxed_speedup(paired: &[Value]) -> Value {
    let ratios: Vec<Value> = paired
        .iter()
        .map(|run| {
            let ms = |b: &str| num(&find(&run["rows"], Some(b), "sgd")["wasm_ms"]);
            json!({ "ratio": ms("flex") / ms("flex-relaxed") })
        })
        .collect();
    fold(&ratios, &[])["ratio"].clone()
}

fn merge(
    command: &str,
    native: &Value,
    browser: &Value,
    load_before: Option<Vec<f64>>,
) -> anyhow::Result<Value> {
    let native_runs = native["runs"].as_array().context("native runs")?;
    let browser_runs = browser["runs"].as_array().context("browser runs")?;
    let paired: Vec<Value> = native_runs
        .iter()
        .zip(browser_runs)
        .map(|(n, b)| paired_run(n, b))
        .collect();
    let summary = fold(&paired, &TRAIN_LABELS);
    let median_of = |r: &Value, k: &str| num(&r[k]["median"]);
    let best_wasm = |opt: &str| {
        summary["rows"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .filter(|r| r["optimizer"] == opt)
                    .min_by(|a, b| median_of(a, "wasm_ms").total_cmp(&median_of(b, "wasm_ms")))
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let side = |raw: &Value, runs: &[Value]| {
        let mut out = raw.as_object().cloned().unwrap_or_default();
        out.remove("runs");
        if let Value::Object(folded) = fold(runs, &TRAIN_LABELS) {
            out.extend(folded);
        }
        Value::Object(out)
    };
    let native_folded = side(native, native_runs);
    let flex = find(&summary["rows"], Some("flex"), "sgd");
    let relaxed = find(&summary["rows"], Some("flex-relaxed"), "sgd");
    // The names for the MLP SGD step (flex): {median, min, max, runs} in ms.
    let step_ms = json!({
        "simd128": flex["wasm_ms"],
        "relaxed": relaxed["wasm_ms"],
        "native": flex["native_ms"],
        "tfjs": flex["tfjs_wasm_ms"],
        "relaxed_over_tfjs": relaxed["wasm_over_tfjs"],
        "simd128_over_relaxed": relaxed_speedup(&paired),
    });
    let mut record = machine::record_since(load_before);
    record["browser"] = json!({
        "chromium": browser["chromium_version"],
        "user_agent": browser["user_agent"],
        "wasm_simd": browser["wasm_simd"],
        "wasm_relaxed_simd": browser["relaxed_simd"],
        "cross_origin_isolated": browser["cross_origin_isolated"],
    });
    record["tfjs"] = json!({
        "version": browser["tfjs_version"],
        "backend": browser["tfjs_backend"],
        "threads": browser["tfjs_threads"],
    });
    record["note"] = "single thread everywhere; wasm built twice, +simd128 and \
                      +simd128,+relaxed-simd (rows flex-relaxed); MLP 784-128-10, batch 64, \
                      real MNIST batches, loss read back every step"
        .into();
    Ok(json!({
        "command": command,
        "machine": record,
        "runs": paired.len(),
        "flops_per_step": FLOPS_PER_STEP,
        "warmup": browser["warmup"],
        "notes": {
            "figures": "every measured number is {median, min, max, runs} over whole runs of the \
                        benchmark; a run times every configuration once (each step figure is the \
                        median over that run's timed steps). Ratios between native and browser \
                        pair run i of one with run i of the other; ratios within a side use the \
                        same run.",
            "matmul_share": "time of the step's five matmuls, each timed alone at the step's \
                             shapes, divided by the time of the whole step: the part of the step \
                             the matmuls account for; the rest is elementwise work, allocation, \
                             the loss read-back and the optimizer. It is not an efficiency: a \
                             step can be all matmul and still run far below the machine's peak. \
                             (Earlier results called this *_matmul_efficiency.)",
            "gflops": "native_gflops / wasm_gflops / tfjs_wasm_gflops: flops_per_step (the step's \
                       matmuls, forward and backward, 2mkn each) divided by the step time; the \
                       other operations are not counted, so this is a lower bound on the work \
                       done per second.",
            "peak": "peak = the fastest of the multiply-add kernels measured in the same run and \
                     the same process (native: Rust f32 chains of mul_add in 12 independent \
                     registers, compiled for AVX2+FMA behind a runtime check, and 128-bit SSE \
                     multiply then add; Chromium: wasm loops of f32x4.mul + f32x4.add, and \
                     f32x4.relaxed_madd where the browser validates relaxed SIMD, in 12 \
                     independent registers). *_gflops_over_peak = step GFLOP/s / that peak. \
                     wasm_gflops_over_simd128_peak compares with the f32x4 mul + add kernel \
                     instead: our wasm build has no relaxed SIMD, and gemm's wasm kernel \
                     multiplies and adds separately, so that is the ceiling it could reach. \
                     native.peak_kernels gives the theoretical flops per cycle and each run's \
                     implied clock. burn's matmul kernels on this build use AVX2+FMA, so fma256 \
                     is the ceiling they could reach; AVX-512 (where the CPU flags list avx512f) \
                     doubles the theoretical per-cycle figure on cores with two 512-bit FMA \
                     units but is not measured here: the workspace forbids the unsafe code a \
                     direct kernel needs, and pulp's safe path needs its x86-v4 feature, which \
                     would change features of crates burn's build shares.",
            "warmup": "tabswarm's wasm steps and TF.js get the same warm-up: every configuration \
                       runs prewarm_steps once before any is timed (so that V8 has optimised the \
                       hot code), then each run builds a fresh trainer or fresh TF.js variables \
                       and runs warmup_steps untimed before timed_steps timed ones.",
        },
        "summary": {
            "rows": summary["rows"],
            "peak_gflops": summary["peak_gflops"],
            "best_wasm_sgd": best_wasm("sgd"),
            "best_wasm_adam": best_wasm("adam"),
            "step_ms": step_ms,
            "time_to_94_native_seconds": native_folded["time_to_94"]["train_seconds"],
            "targets": {
                "wasm_over_tfjs": "<= 0.15",
                "step_ms.relaxed_over_tfjs": "<= 0.15",
                "wasm_matmul_share": ">= 0.80",
                "native_matmul_share": ">= 0.70",
                "wasm_over_native": "<= 1.5",
            },
        },
        "native": native_folded,
        "browser": side(browser, browser_runs),
    }))
}
