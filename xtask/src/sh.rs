//! Paths and process helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// The repository root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Persistent cache outside the clone: `$TABSWARM_CACHE` or `~/.cache/tabswarm`.
pub(crate) fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("TABSWARM_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("tabswarm")
}

/// The cargo target directory every xtask build uses.
pub(crate) fn target_dir() -> PathBuf {
    cache().join("target")
}

/// Where pinned tools (wasm-bindgen-cli) are installed.
pub(crate) fn tools_bin() -> PathBuf {
    cache().join("tools").join("bin")
}

/// Which cargo profile a native build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Tests: our code at opt-level 1, dependencies optimised (see Cargo.toml).
    Dev,
    /// Demo and benchmarks.
    Release,
}

impl Profile {
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// A built native binary of the workspace.
pub(crate) fn native_bin(profile: Profile, name: &str) -> PathBuf {
    target_dir().join(profile.dir()).join(name)
}

/// `cargo <args>` from the repository root, with the persistent target directory.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args)
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Runs `cmd`, failing with its description if it fails.
pub(crate) fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout.
pub(crate) fn output(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` can be started (`program --version` succeeds).
pub(crate) fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Prints numbered step banners and a timing summary.
#[derive(Debug)]
pub(crate) struct Steps {
    done: Vec<(String, f64)>,
    started: Instant,
}

impl Steps {
    pub(crate) fn new() -> Self {
        Self {
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Runs one named step, printing a banner and timing it.
    pub(crate) fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        let out = f().with_context(|| format!("step \"{name}\""))?;
        self.done.push((name.to_owned(), t.elapsed().as_secs_f64()));
        Ok(out)
    }

    pub(crate) fn summary(&self) {
        eprintln!(
            "\n==> done in {:.0} s",
            self.started.elapsed().as_secs_f64()
        );
        for (name, secs) in &self.done {
            eprintln!("    {secs:7.1} s  {name}");
        }
    }
}

/// Starts `www/serve.mjs` (the volunteer page, the wasm package `pkg`, the dataset and the
/// network description) on 127.0.0.1:`port`; the caller stops it.
pub(crate) fn spawn_page_server(
    pkg: &Path,
    data: &Path,
    network: &Path,
    port: u16,
) -> anyhow::Result<std::process::Child> {
    let mut child = Command::new("node")
        .arg("www/serve.mjs")
        .current_dir(root())
        .env("TABSWARM_PKG", pkg)
        .env("TABSWARM_DATA", data)
        .env("TABSWARM_NETWORK", network)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting node www/serve.mjs (is Node.js installed?)")?;
    // A taken port shows up as an early exit.
    std::thread::sleep(std::time::Duration::from_millis(500));
    if let Some(status) = child.try_wait()? {
        bail!(
            "the page server exited ({status}): is port {port} taken? Stop what uses it and run again"
        );
    }
    Ok(child)
}
