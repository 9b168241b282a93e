//! Arguments of the networked commands. `run` reads, in order of precedence: flags, their
//! `TABSWARM_*` environment variables, the `--config` TOML file, then defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use libp2p::Multiaddr;
use serde::Deserialize;

use tabswarm_consensus::genesis::{AggregationRule, Compression, MAX_CLIP_ITERATIONS};

use crate::cli::DEFAULT_DATA;

/// Where a node keeps its state unless told otherwise.
pub(crate) const DEFAULT_HOME: &str = "tabswarm-home";
/// Where metrics and status are served unless told otherwise.
pub(crate) const DEFAULT_RPC: &str = "127.0.0.1:9464";

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Directory of this node's state (identity, ledger, checkpoints).
    #[arg(long, env = "TABSWARM_HOME", default_value = DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// Print the identity as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GenesisArgs {
    /// A validator as `<public key hex>:<stake>` (repeat; `init` prints the key).
    #[arg(long = "validator", required = true, value_name = "KEY:STAKE")]
    pub(crate) validators: Vec<String>,
    /// Run name.
    #[arg(long, default_value = "mnist-mlp")]
    pub(crate) name: String,
    /// Output file.
    #[arg(long, default_value = "genesis.json")]
    pub(crate) out: PathBuf,
    /// Architecture: mlp or cnn.
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "cnn"])]
    pub(crate) model: String,
    /// Seed of the initial parameters.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Local optimizer: sgd or adam.
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adam"])]
    pub(crate) optimizer: String,
    /// Local learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) lr: f64,
    /// Examples per local step.
    #[arg(long, default_value_t = 32)]
    pub(crate) batch: u32,
    /// Local steps per round.
    #[arg(long, default_value_t = 50)]
    pub(crate) local_steps: u32,
    /// Shards of the training set.
    #[arg(long, default_value_t = 16)]
    pub(crate) shards: u32,
    /// Fewest updates in a proposal.
    #[arg(long, default_value_t = 1)]
    pub(crate) min_updates: u32,
    /// Longest a proposer waits for updates, in ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) round_deadline_ms: u64,
    /// Heights between stored checkpoints.
    #[arg(long, default_value_t = 10)]
    pub(crate) checkpoint_every: u64,
    /// Propose timeout of round 0, in ms (must exceed training plus the deadline).
    #[arg(long, default_value_t = 6000)]
    pub(crate) propose_timeout_ms: u64,
    /// How validators combine a height's updates: `median`, `trimmed-mean:<per mille dropped
    /// at each end>`, `centered-clip:<iterations>` (robust to a hostile minority of trainers),
    /// or `mean` (not robust: one trainer can steer it).
    #[arg(long, default_value = DEFAULT_AGGREGATION, value_parser = parse_aggregation)]
    pub(crate) aggregation: AggregationRule,
    /// Keep the run's data on the network, owned by this public key (hex; `init` prints it):
    /// the owner adds it with `tabswarm-node data add`, storage peers replicate it, trainers
    /// fetch it. Without it every peer reads the dataset from a local file (--data).
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub(crate) data_owner: Option<String>,
    /// Who may read the data: `closed` (members the owner grants) or `open` (anyone: the key
    /// is written into the genesis).
    #[arg(long, default_value = "closed", value_parser = ["closed", "open"], requires = "data_owner")]
    pub(crate) data_access: String,
    /// Storage peers holding each shard.
    #[arg(long, default_value_t = 3, requires = "data_owner")]
    pub(crate) data_replication: u32,
    /// How trainers send updates: `none` (f32), `int8` (about 4x fewer bytes) or
    /// `top-k:<per mille>` (only that share of the largest entries; the rest is kept and sent
    /// later).
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub(crate) compression: Compression,
}

/// `--compression`'s value as a genesis setting (genesis checks the per mille's range).
pub(crate) fn parse_compression(text: &str) -> Result<Compression, String> {
    match text.split_once(':') {
        None if text == "none" => Ok(Compression::None),
        None if text == "int8" => Ok(Compression::Int8),
        None if text == "top-k" => Err("top-k needs the per mille sent: e.g. top-k:10".into()),
        Some(("top-k", n)) => n
            .parse()
            .map(|per_mille| Compression::TopK { per_mille })
            .map_err(|_| format!("{text:?}: the per mille must be a whole number (1 to 1000)")),
        _ => Err(format!("{text:?}: use none, int8 or top-k:<per mille>")),
    }
}

/// The aggregation rule of new runs: robust, and fine with the few updates of a small run.
pub(crate) const DEFAULT_AGGREGATION: &str = "centered-clip:3";

/// `--aggregation`'s value as a genesis rule (genesis checks the numbers' ranges).
pub(crate) fn parse_aggregation(text: &str) -> Result<AggregationRule, String> {
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (text, None),
    };
    let number = |what: &str| {
        arg.ok_or_else(|| {
            format!(
                "{name} needs {what}: e.g. {name}:{}",
                if name == "trimmed-mean" { 200 } else { 3 }
            )
        })?
        .parse::<u16>()
        .map_err(|_| format!("{text:?}: {what} must be a whole number"))
    };
    let rule = match name {
        "mean" | "median" if arg.is_some() => {
            return Err(format!("{text:?}: {name} takes no parameter"));
        }
        "mean" => AggregationRule::Mean,
        "median" => AggregationRule::Median,
        "trimmed-mean" => AggregationRule::TrimmedMean {
            trim_per_mille: number("the per mille dropped at each end")?,
        },
        "centered-clip" => AggregationRule::CenteredClip {
            iterations: u8::try_from(number("a number of iterations")?)
                .map_err(|_| format!("{text:?}: at most {MAX_CLIP_ITERATIONS} iterations"))?,
        },
        _ => {
            return Err(format!(
                "{text:?}: use median, trimmed-mean:<per mille>, centered-clip:<iterations> or mean"
            ));
        }
    };
    Ok(rule)
}

/// Most job threads `--job-threads` takes: each holds a copy of the model while it works.
const MAX_JOB_THREADS: usize = 256;

#[derive(Debug, Args, Default)]
pub(crate) struct RunArgs {
    /// Directory of this node's state; create it with `init`.
    #[arg(long, env = "TABSWARM_HOME")]
    pub(crate) home: Option<PathBuf>,
    /// TOML file with any of these options (snake_case keys); flags and env win over it.
    #[arg(long, env = "TABSWARM_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The run's genesis file (needed on first start; remembered after).
    #[arg(long, env = "TABSWARM_GENESIS")]
    pub(crate) genesis: Option<PathBuf>,
    /// Packed dataset (`cargo xtask data` creates the default).
    #[arg(long, env = "TABSWARM_DATA")]
    pub(crate) data: Option<PathBuf>,
    /// Peer to join through, e.g. the relay's `/ip4/.../tcp/4001/p2p/...` (repeatable).
    #[arg(long, env = "TABSWARM_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Interface to listen on [default: 0.0.0.0].
    #[arg(long, env = "TABSWARM_IP")]
    pub(crate) ip: Option<IpAddr>,
    /// TCP port [default: 0, any free port].
    #[arg(long, env = "TABSWARM_TCP_PORT")]
    pub(crate) tcp_port: Option<u16>,
    /// UDP port for QUIC [default: 0].
    #[arg(long, env = "TABSWARM_QUIC_PORT")]
    pub(crate) quic_port: Option<u16>,
    /// TCP port for WebSocket, for browsers [default: 0].
    #[arg(long, env = "TABSWARM_WS_PORT")]
    pub(crate) ws_port: Option<u16>,
    /// UDP port for WebRTC-direct, for browsers [default: 0].
    #[arg(long, env = "TABSWARM_WEBRTC_PORT")]
    pub(crate) webrtc_port: Option<u16>,
    /// Roles, comma-separated: trainer, validator, storage (serves blocks, checkpoints and
    /// payloads, and holds shards of the run's data for others) [default: trainer, plus
    /// validator when the genesis stakes this key, plus storage when the genesis keeps the
    /// data on the network].
    #[arg(long, env = "TABSWARM_ROLES", value_delimiter = ',')]
    pub(crate) roles: Vec<String>,
    /// Reach other nodes only through relay circuits (no listening, no direct connections).
    #[arg(long, env = "TABSWARM_RELAY_ONLY")]
    pub(crate) relay_only: bool,
    /// Address for `/metrics` (Prometheus) and `/status` [default: 127.0.0.1:9464].
    #[arg(long, env = "TABSWARM_METRICS")]
    pub(crate) metrics: Option<SocketAddr>,
    /// Most connections [default: 256].
    #[arg(long, env = "TABSWARM_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<u32>,
    /// Refuse new connections above this share of system memory, in percent [default: 90].
    #[arg(long, env = "TABSWARM_MAX_MEMORY_PERCENT")]
    pub(crate) max_memory_percent: Option<f64>,
    /// Stop cleanly once this height is committed (for scripts and benchmarks).
    #[arg(long, env = "TABSWARM_STOP_AT_HEIGHT")]
    pub(crate) stop_at_height: Option<u64>,
    /// In a run whose data is on the network: most training shards to fetch and train on
    /// [default: 0, all of them].
    #[arg(long, env = "TABSWARM_TRAIN_SHARDS")]
    pub(crate) train_shards: Option<u32>,
    /// Threads for training, scoring and testing jobs (more queue; fewer leave cores to
    /// other work) [default: one per core].
    #[arg(long, env = "TABSWARM_JOB_THREADS")]
    pub(crate) job_threads: Option<usize>,
}

/// The `--config` file: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    home: Option<PathBuf>,
    genesis: Option<PathBuf>,
    data: Option<PathBuf>,
    bootstrap: Vec<Multiaddr>,
    ip: Option<IpAddr>,
    tcp_port: Option<u16>,
    quic_port: Option<u16>,
    ws_port: Option<u16>,
    webrtc_port: Option<u16>,
    roles: Vec<String>,
    relay_only: Option<bool>,
    metrics: Option<SocketAddr>,
    max_connections: Option<u32>,
    max_memory_percent: Option<f64>,
    stop_at_height: Option<u64>,
    train_shards: Option<u32>,
    job_threads: Option<usize>,
}

/// `run`'s options after flags, environment and config file are merged and checked.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    pub(crate) home: PathBuf,
    pub(crate) genesis: Option<PathBuf>,
    pub(crate) data: PathBuf,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) listen: tabswarm_net::Listen,
    pub(crate) roles: Option<Vec<Role>>,
    pub(crate) relay_only: bool,
    pub(crate) metrics: SocketAddr,
    pub(crate) max_connections: u32,
    pub(crate) max_memory_fraction: f64,
    pub(crate) stop_at_height: Option<u64>,
    pub(crate) train_shards: u32,
    pub(crate) job_threads: usize,
}

/// A role from `--roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Trainer,
    Validator,
    /// Keeps and serves blocks, checkpoints and payloads, and (in a run whose data is on the
    /// network) holds shards for others; trains nothing.
    Storage,
}

impl RunArgs {
    pub(crate) fn resolve(self) -> anyhow::Result<RunOptions> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let roles_raw = if self.roles.is_empty() {
            file.roles
        } else {
            self.roles
        };
        let roles = if roles_raw.is_empty() {
            None
        } else {
            Some(
                roles_raw
                    .iter()
                    .map(|r| match r.trim() {
                        "trainer" => Ok(Role::Trainer),
                        "validator" => Ok(Role::Validator),
                        "storage" => Ok(Role::Storage),
                        other => bail!("unknown role {other:?}: use trainer, validator, storage (comma-separated)"),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            )
        };
        let max_memory_percent = self
            .max_memory_percent
            .or(file.max_memory_percent)
            .unwrap_or(90.0);
        if !(1.0..=100.0).contains(&max_memory_percent) {
            bail!("--max-memory-percent {max_memory_percent} is out of range: use 1..=100");
        }
        let max_connections = self.max_connections.or(file.max_connections).unwrap_or(256);
        let job_threads = self
            .job_threads
            .or(file.job_threads)
            .unwrap_or_else(crate::job_pool::default_threads);
        if !(1..=MAX_JOB_THREADS).contains(&job_threads) {
            bail!("--job-threads {job_threads} is out of range: use 1..={MAX_JOB_THREADS}");
        }
        if max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        Ok(RunOptions {
            home: self
                .home
                .or(file.home)
                .unwrap_or_else(|| DEFAULT_HOME.into()),
            genesis: self.genesis.or(file.genesis),
            data: self
                .data
                .or(file.data)
                .unwrap_or_else(|| DEFAULT_DATA.into()),
            bootstrap: if self.bootstrap.is_empty() {
                file.bootstrap
            } else {
                self.bootstrap
            },
            listen: tabswarm_net::Listen {
                ip: self.ip.or(file.ip).unwrap_or(IpAddr::from([0, 0, 0, 0])),
                tcp_port: self.tcp_port.or(file.tcp_port).unwrap_or(0),
                quic_port: self.quic_port.or(file.quic_port).unwrap_or(0),
                ws_port: self.ws_port.or(file.ws_port).unwrap_or(0),
                webrtc_port: self.webrtc_port.or(file.webrtc_port).unwrap_or(0),
            },
            roles,
            relay_only: self.relay_only || file.relay_only.unwrap_or(false),
            metrics: self
                .metrics
                .or(file.metrics)
                .unwrap_or_else(|| DEFAULT_RPC.parse().expect("valid default")),
            max_connections,
            max_memory_fraction: max_memory_percent / 100.0,
            stop_at_height: self.stop_at_height.or(file.stop_at_height),
            train_shards: self.train_shards.or(file.train_shards).unwrap_or(0),
            job_threads,
        })
    }
}

fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading config {}", path.display()))?;
    if meta.len() > 1024 * 1024 {
        bail!(
            "config {} is larger than 1 MiB; is it the right file?",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "config {} is not valid (keys are run's flags in snake_case)",
            path.display()
        )
    })
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The node's metrics/status address [default: the one the node at --home wrote, else
    /// 127.0.0.1:9464].
    #[arg(long)]
    pub(crate) rpc: Option<SocketAddr>,
    /// The node's home (its `rpc.addr` file names the address).
    #[arg(long, env = "TABSWARM_HOME", default_value = DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LedgerArgs {
    /// Directory of the (stopped) node's state.
    #[arg(long, env = "TABSWARM_HOME", default_value = DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// Also report the block at this height.
    #[arg(long)]
    pub(crate) height: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Directory of the (stopped) node's state.
    #[arg(long, env = "TABSWARM_HOME", default_value = DEFAULT_HOME)]
    pub(crate) home: PathBuf,
    /// Output file.
    #[arg(long, default_value = "model.safetensors")]
    pub(crate) out: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_flags_read_as_rules_and_bad_ones_say_what_to_write() {
        for (text, rule) in [
            ("mean", AggregationRule::Mean),
            ("median", AggregationRule::Median),
            (
                "trimmed-mean:200",
                AggregationRule::TrimmedMean {
                    trim_per_mille: 200,
                },
            ),
            (
                "centered-clip:3",
                AggregationRule::CenteredClip { iterations: 3 },
            ),
        ] {
            assert_eq!(parse_aggregation(text), Ok(rule), "{text}");
        }
        assert_eq!(
            parse_aggregation(DEFAULT_AGGREGATION),
            Ok(AggregationRule::CenteredClip { iterations: 3 })
        );
        for (text, says) in [
            ("krum", "use median"),
            ("trimmed-mean", "e.g. trimmed-mean:200"),
            ("centered-clip:x", "whole number"),
            ("centered-clip:300", "at most 10"),
            ("median:3", "takes no parameter"),
        ] {
            let err = parse_aggregation(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn compression_flags_read_as_settings_and_bad_ones_say_what_to_write() {
        assert_eq!(parse_compression("none"), Ok(Compression::None));
        assert_eq!(parse_compression("int8"), Ok(Compression::Int8));
        assert_eq!(
            parse_compression("top-k:10"),
            Ok(Compression::TopK { per_mille: 10 })
        );
        for (text, says) in [
            ("zip", "use none, int8"),
            ("top-k", "e.g. top-k:10"),
            ("top-k:x", "whole number"),
        ] {
            let err = parse_compression(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn flags_beat_the_config_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("tabswarm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "tcp_port = 4100\nquic_port = 4101\nroles = [\"trainer\"]\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            tcp_port: Some(5000),
            ..RunArgs::default()
        };
        let o = args.resolve().unwrap();
        assert_eq!(o.listen.tcp_port, 5000);
        assert_eq!(o.listen.quic_port, 4101);
        assert_eq!(o.listen.ws_port, 0);
        assert_eq!(o.roles, Some(vec![Role::Trainer]));
        std::fs::write(&path, "tcp_prot = 1\n").unwrap();
        let err = RunArgs {
            config: Some(path),
            ..RunArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("tcp_prot"), "{err:#}");
        let err = RunArgs {
            roles: vec!["miner".into()],
            ..RunArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
    }

    #[test]
    fn job_threads_default_to_the_cores_and_zero_is_refused() {
        let o = RunArgs::default().resolve().unwrap();
        assert_eq!(o.job_threads, crate::job_pool::default_threads());
        let err = RunArgs {
            job_threads: Some(0),
            ..RunArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("--job-threads 0"), "{err}");
    }
}
