//! `tabswarm-node`: the server peer of a tabswarm run.
//!
//! `init`, `genesis` and `run` join a network of peers that train together and commit each
//! round by stake votes; `status` and `export` inspect a node; `train` and `data` work alone.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod data_cmd;
mod data_dir;
mod job_pool;
mod logging;
mod metrics;
mod net;
mod net_cli;
mod net_cmd;
mod observe;
mod runner;
mod shutdown;
mod store;
mod train_cmd;
mod vault_cmd;

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
        cli::Command::Init(args) => net_cmd::init(args),
        cli::Command::Genesis(args) => net_cmd::genesis(args),
        cli::Command::Run(args) => net_cmd::run(*args),
        cli::Command::Status(args) => net_cmd::status(args),
        cli::Command::Export(args) => net_cmd::export(args),
        cli::Command::Ledger(args) => net_cmd::ledger(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
