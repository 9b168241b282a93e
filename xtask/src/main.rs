//! `cargo xtask`: the commands the README promises, each installing what it needs.
//!
//! - `demo`: prepare the MNIST data and train a model on this machine, with progress.
//! - `test`: every check and test, cheapest first (what CI runs).
//! - `bench`: training-step benchmarks, native and in headless Chromium, saved as JSON.
//! - `data`: only prepare `data/mnist.tsd`.
//!
//! Builds go to a persistent target directory outside the clone
//! (`$TABSWARM_CACHE`, default `~/.cache/tabswarm`), so repeated runs and fresh clones on
//! the same machine reuse them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod install;
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
    /// Prepare the data and train a model on this machine, with live progress.
    Demo {
        /// Passes over the training digits.
        #[arg(long, default_value_t = 5)]
        epochs: u32,
    },
    /// Run every check and test: fmt, clippy, wasm32 builds, unit, integration and browser tests.
    Test,
    /// Run the benchmarks and write bench/results/train_step.json.
    Bench {
        /// Timed steps per configuration (after warm-up).
        #[arg(long, default_value_t = 300)]
        steps: u32,
    },
    /// Only pack the MNIST digits into data/mnist.tsd.
    Data,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { epochs } => demo::run(epochs),
        Command::Test => test::run(),
        Command::Bench { steps } => bench::run(steps),
        Command::Data => install::ensure_data(sh::Profile::Dev).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
