//! The browser build: core + browser for wasm32 with SIMD, then wasm-bindgen. Two builds of the
//! same code: simd128 (every current browser) and relaxed SIMD (fused multiply-add in gemm's
//! kernel, `patches/gemm-f32/PATCH.md`), which pages load where the browser has it
//! (`www/kernels.js`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::install::{self, WASM_TARGET};
use crate::sh;

/// Target features of the relaxed-SIMD build. RUSTFLAGS replaces `.cargo/config.toml`'s
/// wasm32 flags (simd128 only) for that build, and applies to the target, not build scripts.
const RELAXED_RUSTFLAGS: &str = "-C target-feature=+simd128,+relaxed-simd";

/// The relaxed build's file beside the simd128 build's `tabswarm_browser_bg.wasm`.
pub(crate) const RELAXED_WASM: &str = "tabswarm_browser_relaxed_bg.wasm";

/// Builds `tabswarm-browser`, and so `tabswarm-core`, for wasm32 (release) twice, simd128 and
/// relaxed SIMD, and generates the JS bindings into `<cache>/web/pkg`; returns that folder.
pub(crate) fn build_browser_pkg() -> anyhow::Result<PathBuf> {
    let bindgen = install::ensure_wasm_bindgen()?;
    let out = sh::cache().join("web").join("pkg");
    let wasm = build(
        "cargo build --target wasm32 tabswarm-browser",
        &sh::target_dir(),
        None,
    )?;
    bindgen_into(&bindgen, &wasm, &out)?;
    // Its own target folder: switching RUSTFLAGS in one folder would rebuild burn each time.
    let relaxed = build(
        "cargo build --target wasm32 tabswarm-browser (+relaxed-simd)",
        &sh::cache().join("target-relaxed"),
        Some(RELAXED_RUSTFLAGS),
    )?;
    let relaxed_out = sh::cache().join("web").join("pkg-relaxed");
    bindgen_into(&bindgen, &relaxed, &relaxed_out)?;
    // Pages load either .wasm with the one glue file, so the glue must not differ.
    let glue = |dir: &Path| std::fs::read(dir.join("tabswarm_browser.js"));
    if glue(&out)? != glue(&relaxed_out)? {
        bail!(
            "the simd128 and relaxed-SIMD builds generated different JS glue ({} vs {}); \
             pages cannot share it: rebuild both from a clean cache (TABSWARM_CACHE)",
            out.display(),
            relaxed_out.display()
        );
    }
    std::fs::copy(
        relaxed_out.join("tabswarm_browser_bg.wasm"),
        out.join(RELAXED_WASM),
    )
    .context("copying the relaxed-SIMD build into the package")?;
    for file in ["tabswarm_browser_bg.wasm", RELAXED_WASM] {
        let size = std::fs::metadata(out.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        eprintln!(
            "    {} ({:.1} MB)",
            out.join(file).display(),
            size as f64 / 1e6
        );
    }
    Ok(out)
}

/// `cargo build --release --target wasm32 -p tabswarm-browser` into `target`; returns the .wasm.
fn build(what: &str, target: &Path, rustflags: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut cmd = sh::cargo(&[
        "build",
        "--release",
        "--target",
        WASM_TARGET,
        "--package",
        "tabswarm-browser",
    ]);
    cmd.env("CARGO_TARGET_DIR", target);
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    sh::run(what, &mut cmd)?;
    Ok(target
        .join(WASM_TARGET)
        .join("release")
        .join("tabswarm_browser.wasm"))
}

/// wasm-bindgen `--target web` of `wasm` into `out`, refusing a build that imports from "env".
fn bindgen_into(bindgen: &Path, wasm: &Path, out: &Path) -> anyhow::Result<()> {
    sh::run(
        "wasm-bindgen",
        Command::new(bindgen)
            .arg("--target")
            .arg("web")
            .arg("--out-dir")
            .arg(out)
            .arg(wasm),
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
    Ok(())
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
