//! `tabswarm-node`: the server peer of a tabswarm run.
//!
//! Today it trains a model on one machine (`train`) and packs datasets (`data`); the
//! networked roles (trainer, validator, storage) build on these.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod data_cmd;
mod logging;
mod train_cmd;

// glibc returns large freed buffers to the OS and maps them again on the next step,
// which costs ~30% of an MLP step; mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        cli::Command::Train(args) => train_cmd::run(args),
        cli::Command::Data(args) => data_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
