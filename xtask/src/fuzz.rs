//! `cargo xtask fuzz`: every fuzz target of `fuzz/` (or one) for a given time each, on
//! nightly with libFuzzer, starting from the committed corpora. Prints executions, speed and
//! crashes per target; a crash fails the command with the input that caused it and the
//! command that replays it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use crate::sh;

/// cargo-fuzz, pinned so every machine builds the targets the same way.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Flags for `cargo fuzz build` and `run`: optimised, with debug assertions and overflow
/// checks (an overflow on hostile input is a bug to find), AddressSanitizer (cargo fuzz's
/// default) so `-malloc_limit_mb` catches a single oversized allocation.
const BUILD_FLAGS: &[&str] = &["-O", "-a"];

/// What one target did.
#[derive(Debug)]
struct Report {
    target: String,
    executions: u64,
    execs_per_sec: u64,
    seconds: f64,
    crash: Option<PathBuf>,
}

pub(crate) fn run(seconds: u64, only: Option<String>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let fuzz_dir = sh::root().join("fuzz");
    let targets = targets(&fuzz_dir)?;
    let chosen: Vec<String> = match only {
        Some(name) if targets.contains(&name) => vec![name],
        Some(name) => bail!("no fuzz target {name}; there are: {}", targets.join(", ")),
        None => targets,
    };
    let cargo_fuzz = ensure_cargo_fuzz()?;
    eprintln!("==> building the fuzz targets (nightly, instrumented)");
    sh::run(
        "cargo fuzz build",
        fuzz_command(&cargo_fuzz, &fuzz_dir)
            .args(["fuzz", "build"])
            .args(BUILD_FLAGS)
            .arg("--target-dir")
            .arg(target_dir()),
    )?;
    let mut reports = Vec::new();
    for target in &chosen {
        eprintln!("==> fuzzing {target} for {seconds} s");
        let report = fuzz_one(&cargo_fuzz, &fuzz_dir, target, seconds)?;
        eprintln!(
            "    {target}: {} executions, {} exec/s{}",
            report.executions,
            report.execs_per_sec,
            report
                .crash
                .as_ref()
                .map(|p| format!(", CRASH: {}", p.display()))
                .unwrap_or_default()
        );
        reports.push(report);
    }
    print_table(&reports);
    if let Some(path) = out {
        write_summary(&path, seconds, &reports)?;
    }
    let crashes: Vec<&Report> = reports.iter().filter(|r| r.crash.is_some()).collect();
    if !crashes.is_empty() {
        let lines: Vec<String> = crashes
            .iter()
            .filter_map(|r| {
                let artifact = r.crash.as_ref()?;
                Some(format!(
                    "{}: {}\n  replay: (cd fuzz && cargo +nightly fuzz run {} {} {})\n  keep it: cp {} fuzz/corpus/{}/regression-<what> (replayed by cargo xtask test)",
                    r.target,
                    artifact.display(),
                    BUILD_FLAGS.join(" "),
                    r.target,
                    artifact.display(),
                    artifact.display(),
                    r.target
                ))
            })
            .collect();
        bail!("{} target(s) crashed:\n{}", crashes.len(), lines.join("\n"));
    }
    Ok(())
}

/// The targets, from `fuzz/fuzz_targets/*.rs`.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Nightly builds with instrumentation go apart from the workspace's stable builds.
fn target_dir() -> PathBuf {
    sh::cache().join("target-fuzz")
}

/// What libFuzzer learns beyond the committed seeds stays on this machine, not in git.
fn working_corpus(target: &str) -> PathBuf {
    sh::cache().join("fuzz-corpus").join(target)
}

fn fuzz_command(cargo_fuzz: &Path, fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(fuzz_dir).env("RUSTUP_TOOLCHAIN", "nightly");
    cmd
}

fn fuzz_one(
    cargo_fuzz: &Path,
    fuzz_dir: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<Report> {
    let work = working_corpus(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();
    // libFuzzer adds what it finds to the first corpus directory only: the committed seeds
    // are read, never written.
    let output = fuzz_command(cargo_fuzz, fuzz_dir)
        .args(["fuzz", "run"])
        .args(BUILD_FLAGS)
        .arg("--target-dir")
        .arg(target_dir())
        .arg(target)
        .arg(&work)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args([
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-malloc_limit_mb=512",
        ])
        .output()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let log_path = sh::cache().join("fuzz-logs").join(format!("{target}.log"));
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&log_path, log.as_bytes())?;
    let crash = artifact(&log, fuzz_dir);
    if !output.status.success() && crash.is_none() {
        bail!(
            "cargo fuzz run {target} failed ({}) without a crash input; see {}",
            output.status,
            log_path.display()
        );
    }
    Ok(Report {
        target: target.to_owned(),
        executions: stat(&log, "stat::number_of_executed_units:").unwrap_or(0),
        execs_per_sec: stat(&log, "stat::average_exec_per_sec:").unwrap_or(0),
        seconds: started.elapsed().as_secs_f64(),
        crash,
    })
}

/// A `stat::…: N` line of `-print_final_stats`.
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The input libFuzzer saved for a crash ("Test unit written to <path>").
fn artifact(log: &str, fuzz_dir: &Path) -> Option<PathBuf> {
    let path = log
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))?
        .trim();
    let path = PathBuf::from(path);
    Some(if path.is_absolute() {
        path
    } else {
        fuzz_dir.join(path)
    })
}

fn print_table(reports: &[Report]) {
    eprintln!(
        "\n    {:<16} {:>12} {:>9}  crash",
        "target", "executions", "exec/s"
    );
    for r in reports {
        eprintln!(
            "    {:<16} {:>12} {:>9}  {}",
            r.target,
            r.executions,
            r.execs_per_sec,
            r.crash
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn write_summary(path: &Path, seconds: u64, reports: &[Report]) -> anyhow::Result<()> {
    let targets: Vec<_> = reports
        .iter()
        .map(|r| {
            json!({
                "target": r.target,
                "executions": r.executions,
                "execs_per_sec": r.execs_per_sec,
                "seconds": r.seconds,
                "crashes": u8::from(r.crash.is_some()),
                "artifact": r.crash.as_ref().map(|p| p.display().to_string()),
            })
        })
        .collect();
    let summary = json!({
        "seconds_per_target": seconds,
        "cargo_fuzz": CARGO_FUZZ_VERSION,
        "flags": BUILD_FLAGS,
        "targets": targets,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("    summary: {}", path.display());
    Ok(())
}

/// The nightly toolchain and cargo-fuzz (into the cache's tools), each installed once.
fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let toolchains = sh::output(
        "rustup toolchain list",
        Command::new("rustup").args(["toolchain", "list"]),
    )
    .context("rustup is needed for the nightly toolchain cargo fuzz builds with")?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("    rust nightly: installed");
    } else {
        eprintln!("    installing rust nightly (cargo fuzz needs it)");
        sh::run(
            "rustup toolchain install nightly",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    let bin = sh::tools_bin().join("cargo-fuzz");
    if crate::install::tool_version(&bin).as_deref() == Some(CARGO_FUZZ_VERSION) {
        eprintln!("    cargo-fuzz {CARGO_FUZZ_VERSION}: installed");
        return Ok(bin);
    }
    eprintln!("    installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two, once)");
    sh::run(
        "cargo install cargo-fuzz",
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
                "--root",
            ])
            .arg(sh::cache().join("tools")),
    )?;
    Ok(bin)
}
