//! `cargo xtask bench`: training-step benchmarks, native and in headless Chromium, merged
//! into `bench/results/train_step.json` with the command, machine and targets.

use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

use crate::install::{self, CHROMIUM};
use crate::sh::{self, Profile, Steps};
use crate::wasm;

/// Which benchmarks `cargo xtask bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Only {
    /// Training step, native and in Chromium.
    Train,
    /// Consensus in process and in the simulator.
    Consensus,
    /// Real processes on loopback.
    Network,
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
    if only == Some(Only::Consensus) {
        let mut s = Steps::new();
        consensus(&mut s)?;
        s.summary();
        return Ok(());
    }
    train_and_consensus(steps, only.is_none())?;
    if only.is_none() {
        network(rounds, catch_up_blocks)?;
    }
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

fn consensus(s: &mut Steps) -> anyhow::Result<()> {
    let consensus_path = results_dir().join("consensus.json");
    s.step("consensus benchmark (release)", || {
        sh::run(
            "cargo bench consensus",
            sh::cargo(&[
                "bench",
                "--package",
                "tabswarm-consensus",
                "--bench",
                "consensus",
                "--",
                "--out",
            ])
            .arg(&consensus_path),
        )
    })?;
    eprintln!("written to {}", consensus_path.display());
    Ok(())
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
                .env("TABSWARM_BENCH_STEPS", steps.to_string()),
        )?;
        serde_json::from_str(text.trim()).context("parsing the browser benchmark's output")
    })?;
    if with_consensus {
        consensus(&mut s)?;
    }
    let report = merge(&native, &browser)?;
    let path = sh::root()
        .join("bench")
        .join("results")
        .join("train_step.json");
    std::fs::create_dir_all(path.parent().context("results path")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    s.summary();
    eprintln!("\n{}", serde_json::to_string_pretty(&report["summary"])?);
    eprintln!("\nwritten to {}", path.display());
    Ok(())
}

/// The CPU's model name, as the kernel reports it.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

/// `bench/results/`, created if missing.
fn results_dir() -> std::path::PathBuf {
    let dir = sh::root().join("bench").join("results");
    // A missing folder shows up as a clear write error right after, so ignore this one.
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn find<'a>(list: &'a Value, backend: &str, optimizer: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|r| r["backend"] == backend && r["optimizer"] == optimizer)
}

fn ms(v: Option<&Value>) -> f64 {
    v.and_then(|r| r["median_ms"].as_f64()).unwrap_or(f64::NAN)
}

fn merge(native: &Value, browser: &Value) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for backend in ["flex", "ndarray"] {
        for optimizer in ["sgd", "adam"] {
            let n = ms(find(&native["steps"], backend, optimizer));
            let w = ms(find(&browser["steps"], backend, optimizer));
            let tf = browser["tfjs"]
                .as_array()
                .and_then(|l| l.iter().find(|r| r["optimizer"] == optimizer))
                .and_then(|r| r["median_ms"].as_f64())
                .unwrap_or(f64::NAN);
            let eff = |side: &Value, t: f64| {
                side["matmul"][backend]["step_matmuls_ms"]
                    .as_f64()
                    .map(|m| m / t)
                    .unwrap_or(f64::NAN)
            };
            rows.push(json!({
                "backend": backend,
                "optimizer": optimizer,
                "native_ms": n,
                "wasm_ms": w,
                "wasm_over_native": w / n,
                "tfjs_wasm_ms": tf,
                "wasm_over_tfjs": w / tf,
                "native_matmul_efficiency": eff(native, n),
                "wasm_matmul_efficiency": eff(browser, w),
            }));
        }
    }
    let best_wasm = |opt: &str| {
        rows.iter()
            .filter(|r| r["optimizer"] == opt)
            .min_by(|a, b| {
                a["wasm_ms"]
                    .as_f64()
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b["wasm_ms"].as_f64().unwrap_or(f64::MAX))
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let rustc =
        sh::output("rustc --version", Command::new("rustc").arg("--version")).unwrap_or_default();
    let cpu = cpu_model();
    Ok(json!({
        "command": "cargo xtask bench",
        "machine": {
            "cpu": cpu,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "rustc": rustc.trim(),
            "browser": browser["user_agent"],
            "tfjs": {"version": browser["tfjs_version"], "backend": browser["tfjs_backend"], "threads": browser["tfjs_threads"]},
            "note": "single thread everywhere; wasm built with +simd128; MLP 784-128-10, batch 64, real MNIST batches, loss read back every step",
        },
        "flops_per_step": 2 * (2 * 64 * 784 * 128) + 3 * (2 * 64 * 128 * 10),
        "summary": {
            "rows": rows,
            "best_wasm_sgd": best_wasm("sgd"),
            "best_wasm_adam": best_wasm("adam"),
            "time_to_94_native_seconds": native["time_to_94"]["train_seconds"],
            "targets": {
                "wasm_over_tfjs": "<= 0.15",
                "wasm_matmul_efficiency": ">= 0.80",
                "native_matmul_efficiency": ">= 0.70",
                "wasm_over_native": "<= 1.5",
            },
        },
        "native": native,
        "browser": browser,
    }))
}
