//! `cargo xtask test`: everything CI checks, cheapest first, so a mistake fails fast.

use std::process::Command;

use crate::install::{self, CHROMIUM};
use crate::sh::{self, Profile, Steps};
use crate::wasm;

pub(crate) fn run() -> anyhow::Result<()> {
    let mut s = Steps::new();
    s.step("format (cargo fmt --check)", || {
        sh::run(
            "cargo fmt --check",
            &mut sh::cargo(&["fmt", "--all", "--", "--check"]),
        )
    })?;
    s.step("install what is missing", || {
        install::ensure_wasm_target()?;
        install::ensure_npm()?;
        install::ensure_chromium()?;
        install::ensure_wasm_bindgen().map(|_| ())
    })?;
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
        "browser build (wasm32 + simd128, wasm-bindgen)",
        wasm::build_browser_pkg,
    )?;
    s.step(
        "wasm32 check of tabswarm-consensus, tabswarm-peer and tabswarm-net (peer)",
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
        )
    })?;
    s.step("browser tests (headless chromium)", || {
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
        sh::run(
            "node --test tests/e2e",
            Command::new("node")
                .args(["--test", "--test-concurrency=1", "tests/e2e/"])
                .current_dir(sh::root())
                .env("TABSWARM_PKG", &pkg)
                .env("TABSWARM_DATA", &data)
                .env("TABSWARM_CONFORMANCE_BIN", conformance)
                .env("TABSWARM_CHROMIUM", CHROMIUM),
        )
    })?;
    s.summary();
    Ok(())
}

fn nextest_available() -> bool {
    sh::cargo(&["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
