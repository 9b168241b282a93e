//! The browser build: core + browser for wasm32 with SIMD, then wasm-bindgen.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::install::{self, WASM_TARGET};
use crate::sh;

/// Builds `tabswarm-browser`, and so `tabswarm-core`, for wasm32 (release) and generates its JS bindings into
/// `<cache>/web/pkg`; returns that folder.
pub(crate) fn build_browser_pkg() -> anyhow::Result<PathBuf> {
    let bindgen = install::ensure_wasm_bindgen()?;
    sh::run(
        "cargo build --target wasm32 tabswarm-browser",
        &mut sh::cargo(&[
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--package",
            "tabswarm-browser",
        ]),
    )?;
    let wasm = sh::target_dir()
        .join(WASM_TARGET)
        .join("release")
        .join("tabswarm_browser.wasm");
    let out = sh::cache().join("web").join("pkg");
    sh::run(
        "wasm-bindgen",
        Command::new(&bindgen)
            .arg("--target")
            .arg("web")
            .arg("--out-dir")
            .arg(&out)
            .arg(&wasm),
    )?;
    // A native-only dependency that slipped into the browser build shows up as an import
    // from "env", which no browser can satisfy (the same check iroh's CI makes).
    let glue = std::fs::read_to_string(out.join("tabswarm_browser.js"))
        .context("reading the generated JS")?;
    if glue.contains("from 'env'") || glue.contains("from \"env\"") {
        bail!(
            "the browser wasm imports from \"env\": a native-only dependency reached the wasm32 build"
        );
    }
    let size = std::fs::metadata(out.join("tabswarm_browser_bg.wasm"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!("    {} ({:.1} MB)", out.display(), size as f64 / 1e6);
    Ok(out)
}

/// The shared protocol crates must run in a tab: consensus, the peer state machine, the
/// libp2p protocols every peer speaks (`tabswarm-net` with feature `peer`), and the tab's
/// own driver (wasm32-only code the native build never sees). A `cargo check` for wasm32
/// keeps them free of I/O, threads and native-only dependencies.
pub(crate) fn check_protocol_crates() -> anyhow::Result<()> {
    sh::run(
        "cargo check --target wasm32 tabswarm-consensus tabswarm-peer tabswarm-net/peer tabswarm-browser",
        &mut sh::cargo(&[
            "check",
            "--target",
            WASM_TARGET,
            "--package",
            "tabswarm-consensus",
            "--package",
            "tabswarm-peer",
            "--package",
            "tabswarm-net",
            "--package",
            "tabswarm-browser",
            "--features",
            "tabswarm-net/peer",
        ]),
    )
}
