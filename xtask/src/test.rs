//! `cargo xtask test`: everything CI checks, cheapest first, so a mistake fails fast.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tabswarm_testnet::{Binaries, Spec, Testnet};

use crate::install::{self, CHROMIUM};
use crate::sh::{self, Profile, Steps};
use crate::wasm;

pub(crate) fn run(browser_only: bool) -> anyhow::Result<()> {
    if browser_only {
        return run_browser_only();
    }
    let mut s = Steps::new();
    s.step("format (cargo fmt --check)", || {
        sh::run(
            "cargo fmt --check",
            &mut sh::cargo(&["fmt", "--all", "--", "--check"]),
        )
    })?;
    s.step("install what is missing", install_missing)?;
    s.step("lint (cargo clippy -D warnings)", || {
        sh::run(
            "cargo clippy",
            &mut sh::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    let pkg = s.step(
        "browser build (wasm32, simd128 and relaxed SIMD, wasm-bindgen)",
        wasm::build_browser_pkg,
    )?;
    s.step(
        "wasm32 check of tabswarm-consensus, tabswarm-peer, tabswarm-net (peer) and tabswarm-browser",
        wasm::check_protocol_crates,
    )?;
    let data = s.step("data (data/mnist.tsd)", || {
        install::ensure_data(Profile::Dev)
    })?;
    s.step("unit and integration tests", || {
        // The network tests start the relay binary, which no test target builds by itself.
        install::build_bins(Profile::Dev)?;
        let mut cmd = if nextest_available() {
            sh::cargo(&["nextest", "run", "--workspace", "--no-fail-fast"])
        } else {
            sh::cargo(&["test", "--workspace", "--no-fail-fast"])
        };
        sh::run("tests", cmd.env("TABSWARM_DATA", &data))?;
        sh::run(
            "doc tests",
            &mut sh::cargo(&["test", "--workspace", "--doc"]),
        )?;
        // The fuzz crate is its own workspace; on stable without libFuzzer, in the same
        // target directory, so it reuses the dependencies built above.
        sh::run(
            "fuzz corpus replay",
            &mut sh::cargo(&[
                "test",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--no-default-features",
            ]),
        )
    })?;
    s.step("browser tests (headless chromium)", || {
        browser_tests(&pkg, &data)
    })?;
    s.summary();
    Ok(())
}

/// The browser suite: conformance and training in wasm, and a tab joining a network of
/// real nodes (started here, stopped after).
fn browser_tests(pkg: &Path, data: &Path) -> anyhow::Result<()> {
    // Built for the whole workspace so burn gets the same features as in the test build
    // above; `--package tabswarm-core` alone would rebuild burn without them (minutes).
    sh::run(
        "cargo build --examples",
        &mut sh::cargo(&["build", "--workspace", "--examples"]),
    )?;
    let conformance = sh::target_dir()
        .join(Profile::Dev.dir())
        .join("examples")
        .join("conformance");
    // The network the tab test joins: a relay and three validators, as real processes.
    let mut net = network_for_tabs(data)?;
    let network = net.dir.join("network.json");
    std::fs::write(&network, net.for_browsers()?.to_string())?;
    let result = sh::run(
        "node --test tests/e2e",
        Command::new("node")
            // TABSWARM_E2E=tests/e2e/<file> runs one file (while working on it).
            .args(["--test", "--test-concurrency=1"])
            .arg(std::env::var("TABSWARM_E2E").unwrap_or_else(|_| "tests/e2e/".into()))
            .current_dir(sh::root())
            .env("TABSWARM_PKG", pkg)
            .env("TABSWARM_DATA", data)
            .env("TABSWARM_NETWORK", &network)
            .env("TABSWARM_CONFORMANCE_BIN", conformance)
            .env("TABSWARM_CHROMIUM", CHROMIUM),
    );
    if result.is_err() {
        eprintln!("--- logs of the network the tab joined ---\n{}", net.logs());
    }
    net.stop_all()?;
    result
}

/// The tools the checks need, each installed once if missing.
pub(crate) fn install_missing() -> anyhow::Result<()> {
    install::ensure_wasm_target()?;
    install::ensure_npm()?;
    install::ensure_chromium()?;
    install::ensure_netfilter_tools()?;
    install::ensure_wasm_bindgen().map(|_| ())
}

/// The run the tabs join (its data on the network, open): the nodes' fast settings, but the default proposer deadline (2 s,
/// as in the demo). A tab trains slower than native validators; proposers wait for it only
/// if it can make the deadline, and with 500 ms a 2-worker tab on a busy 2-core machine
/// (440 ms a job) sometimes could not.
pub(crate) fn network_for_tabs(data: &Path) -> anyhow::Result<Testnet> {
    let bins = Binaries {
        node: sh::native_bin(Profile::Dev, "tabswarm-node"),
        relay: sh::native_bin(Profile::Dev, "tabswarm-relay"),
    };
    // The run keeps its data on the network, open to anyone (tabs read the shards they fetch).
    let spec = Spec::new(3, 0)
        .genesis(tabswarm_testnet::WITH_TABS)
        .open_network_data(0);
    let mut net = Testnet::temp("tab-peer", &bins, data, spec)?;
    net.start_all()?;
    net.wait_height(&[0, 1, 2], 1, Duration::from_secs(120))?;
    Ok(net)
}

fn nextest_available() -> bool {
    sh::cargo(&["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `--browser-only`: what the browser suite needs, then the suite (for work on the page).
fn run_browser_only() -> anyhow::Result<()> {
    let mut s = Steps::new();
    s.step("install what is missing", install_missing)?;
    let pkg = s.step(
        "browser build (wasm32, simd128 and relaxed SIMD, wasm-bindgen)",
        wasm::build_browser_pkg,
    )?;
    let data = s.step("data (data/mnist.tsd)", || {
        install::ensure_data(Profile::Dev)
    })?;
    s.step("build tabswarm-node and tabswarm-relay", || {
        install::build_bins(Profile::Dev)
    })?;
    s.step("browser tests (headless chromium)", || {
        browser_tests(&pkg, &data)
    })?;
    s.summary();
    Ok(())
}
