//! `cargo xtask`: the commands the README promises, each installing what it needs.
//!
//! - `demo`: a relay and four nodes on this machine training MNIST, committed by stake votes.
//! - `test`: every check and test, cheapest first (what CI runs).
//! - `bench`: training step (native, Chromium), consensus, and network benchmarks, as JSON.
//! - `data`: only prepare `data/mnist.tsd`.
//! - `reliability`: the fault and Byzantine scenarios at full strength, as JSON and a table.
//! - `fuzz`: every fuzz target (nightly, libFuzzer) for a given time, from the committed corpora.
//!
//! Builds go to a persistent target directory outside the clone
//! (`$TABSWARM_CACHE`, default `~/.cache/tabswarm`), so repeated runs and fresh clones on
//! the same machine reuse them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_attacks;
mod bench_data;
mod bench_network;
mod demo;
mod fuzz;
mod install;
mod machine;
mod reliability;
mod runs;
mod sh;
mod test;
mod wasm;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "tabswarm's build, demo, test and benchmark commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local network (relay, 3 validators, 1 trainer) training MNIST; Ctrl-C stops it.
    Demo {
        /// Stop by itself after this many committed rounds.
        #[arg(long)]
        rounds: Option<u64>,
    },
    /// Run every check and test: fmt, clippy, wasm32 builds, unit, integration and browser tests.
    Test {
        /// Only the browser suite (and the builds it needs), for work on the page.
        #[arg(long)]
        browser_only: bool,
    },
    /// Run the benchmarks; results go to bench/results/{train_step,consensus,network,browser}.json.
    Bench {
        /// Timed steps per configuration (after warm-up).
        #[arg(long, default_value_t = 300)]
        steps: u32,
        /// Run only one group.
        #[arg(long, value_enum)]
        only: Option<bench::Only>,
        /// Network benchmark: rounds measured with 8 peers.
        #[arg(long, default_value_t = 30)]
        rounds: u64,
        /// Network benchmark: blocks a fresh node catches up.
        #[arg(long, default_value_t = 1000)]
        catch_up_blocks: u64,
    },
    /// Only pack the MNIST digits into data/mnist.tsd.
    Data,
    /// Every fault and Byzantine scenario at full strength (100 kills, a 60 s partition, ...):
    /// bench/results/reliability.json and docs/reliability.md.
    Reliability {
        /// Only this scenario (kill9, pause, partition, slow_lossy_links, relay_restart, disk_full,
        /// byzantine_validators, hostile_messages).
        #[arg(long)]
        only: Option<String>,
    },
    /// Fuzz every decoder and the peer's input handler (fuzz/), each target for --seconds.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (a file name of fuzz/fuzz_targets without .rs).
        #[arg(long)]
        target: Option<String>,
        /// Also write executions, speed and crashes per target as JSON here.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { rounds } => demo::run(rounds),
        Command::Test { browser_only } => test::run(browser_only),
        Command::Bench {
            steps,
            only,
            rounds,
            catch_up_blocks,
        } => bench::run(steps, only, rounds, catch_up_blocks),
        Command::Data => install::ensure_data(sh::Profile::Dev).map(|_| ()),
        Command::Reliability { only } => reliability::run(only),
        Command::Fuzz {
            seconds,
            target,
            out,
        } => fuzz::run(seconds, target, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
