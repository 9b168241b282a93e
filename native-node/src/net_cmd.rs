//! `init`, `genesis`, `run`, `status` and `export`.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use prometheus_client::registry::Registry;
use tabswarm_consensus::genesis::{
    AccessFile, DataFile, Genesis, GenesisFile, LocalOptimizer, ModelArch, TimeoutsMs,
    TrainingRules, ValidatorEntry, hex,
};
use tabswarm_consensus::identity::Keypair;
use tabswarm_core::chunks::bytes_to_f32s;
use tabswarm_core::flat;
use tracing::info;

use crate::metrics::{Metrics, Status};
use crate::net::behaviour::{Limits, build_swarm};
use crate::net_cli::{
    DEFAULT_RPC, ExportArgs, GenesisArgs, InitArgs, LedgerArgs, Role, RunArgs, StatusArgs,
};
use crate::runner::{Runner, Setup};
use crate::store::Store;
use tabswarm_peer::Roles;
use tabswarm_peer::jobs::{DataPlan, initial_params, train_config};

const STORE_FILE: &str = "node.redb";
/// Where a running node writes its metrics/status address (the port may be chosen at start).
const RPC_FILE: &str = "rpc.addr";

pub(crate) fn open_store(home: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    Store::open(&home.join(STORE_FILE))
}

pub(crate) fn identity(store: &Store, home: &Path) -> anyhow::Result<[u8; 32]> {
    store.identity()?.with_context(|| {
        format!(
            "{} has no identity yet: run `tabswarm-node init --home {}` first",
            home.display(),
            home.display()
        )
    })
}

fn libp2p_key(seed: [u8; 32]) -> anyhow::Result<libp2p::identity::Keypair> {
    libp2p::identity::Keypair::ed25519_from_bytes(seed).context("deriving the libp2p key")
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let store = open_store(&args.home)?;
    let (seed, created) = match store.identity()? {
        Some(seed) => (seed, false),
        None => {
            let mut seed = [0u8; 32];
            rand::fill(&mut seed);
            store.set_identity(&seed)?;
            (seed, true)
        }
    };
    let key = Keypair::from_seed(seed);
    let peer_id = libp2p_key(seed)?.public().to_peer_id();
    let public_key = hex(&key.address().0);
    let member_key = hex(&tabswarm_core::vault::MemberSecret::derive(&seed).public().0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "public_key": public_key, "member_key": member_key, "peer_id": peer_id.to_string(), "created": created })
        );
    } else {
        if !created {
            eprintln!(
                "{} already has an identity; showing it",
                args.home.display()
            );
        }
        println!("public key: {public_key}");
        println!("peer id:    {peer_id}");
        println!("member key: {member_key} (the data owner grants {public_key}:{member_key})");
        println!("stake it with: tabswarm-node genesis --validator {public_key}:100 ...");
    }
    Ok(())
}

pub(crate) fn genesis(args: GenesisArgs) -> anyhow::Result<()> {
    let mut validators = Vec::new();
    for v in &args.validators {
        let (key, stake) = v
            .split_once(':')
            .with_context(|| format!("--validator {v:?}: expected <public key hex>:<stake>"))?;
        let stake: u64 = stake
            .parse()
            .with_context(|| format!("--validator {v:?}: stake must be a whole number"))?;
        validators.push(ValidatorEntry {
            public_key: key.to_owned(),
            stake,
        });
    }
    let training = TrainingRules {
        model: if args.model == "cnn" {
            ModelArch::Cnn
        } else {
            ModelArch::Mlp
        },
        seed: args.seed,
        optimizer: if args.optimizer == "adam" {
            LocalOptimizer::Adam
        } else {
            LocalOptimizer::Sgd
        },
        learning_rate: args.lr,
        batch_size: args.batch,
        local_steps: args.local_steps,
        shards: args.shards,
        min_updates: args.min_updates,
        round_deadline_ms: args.round_deadline_ms,
        checkpoint_every: args.checkpoint_every,
    };
    let params = initial_params(&training)?;
    let data = args.data_owner.as_ref().map(|owner| DataFile {
        owner: owner.clone(),
        access: if args.data_access == "open" {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            AccessFile::Open { key: hex(&key) }
        } else {
            AccessFile::Closed
        },
        replication: args.data_replication,
    });
    let file = GenesisFile {
        data,
        version: 1,
        name: args.name,
        initial_param_hash: flat::param_hash(&params).to_hex(),
        aggregation_rule: args.aggregation,
        timeouts_ms: TimeoutsMs {
            propose: args.propose_timeout_ms,
            max: TimeoutsMs::default().max.max(args.propose_timeout_ms),
            ..TimeoutsMs::default()
        },
        training,
        validators,
        compression: args.compression,
    };
    // Validate before writing, so a bad file is never produced.
    let genesis = Genesis::from_file(file).context("the genesis would be invalid")?;
    std::fs::write(&args.out, genesis.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", args.out.display());
    eprintln!(
        "run id {} ({} validators, total stake {})",
        hex(&genesis.run_id().0),
        genesis.validators.len(),
        genesis.total_stake()
    );
    Ok(())
}

fn load_genesis(store: &Store, path: Option<&Path>) -> anyhow::Result<(Genesis, String)> {
    let stored = store.genesis()?;
    let text = match (path, &stored) {
        (Some(p), _) => std::fs::read_to_string(p)
            .with_context(|| format!("reading genesis {}", p.display()))?,
        (None, Some(s)) => s.clone(),
        (None, None) => bail!("no genesis: pass --genesis <file> on the first start"),
    };
    if text.len() > 4 * 1024 * 1024 {
        bail!("genesis is larger than 4 MiB");
    }
    let genesis = Genesis::from_json(&text).context("genesis")?;
    if let Some(s) = &stored {
        let before = Genesis::from_json(s).context("stored genesis")?;
        if before.run_id() != genesis.run_id() {
            bail!(
                "this home belongs to run {}; the given genesis is run {}: use a fresh --home for another run",
                hex(&before.run_id().0[..8]),
                hex(&genesis.run_id().0[..8])
            );
        }
    } else {
        store.set_genesis(&text)?;
    }
    let params = initial_params(&genesis.training)?;
    if flat::param_hash(&params).0 != genesis.initial_param_hash {
        bail!(
            "the genesis initial_param_hash does not match its model and seed (was it made by a different tabswarm version?)"
        );
    }
    Ok((genesis, text))
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let options = args.resolve()?;
    let store = open_store(&options.home)?;
    let seed = identity(&store, &options.home)?;
    let (genesis, _) = load_genesis(&store, options.genesis.as_deref())?;
    let key = Keypair::from_seed(seed);
    let staked = genesis.validators.iter().any(|(a, _)| *a == key.address());
    // A server in a run whose data lives on the network stores shards unless told otherwise.
    let data_run = genesis.data.is_some();
    let (roles, storage) = match &options.roles {
        None => (
            Roles {
                train: true,
                validate: staked,
                store: data_run,
                max_train_shards: options.train_shards,
            },
            data_run,
        ),
        Some(list) => {
            let validate = list.contains(&Role::Validator);
            if validate && !staked {
                bail!(
                    "role validator needs stake: this node's key {} is not in the genesis",
                    hex(&key.address().0)
                );
            }
            (
                Roles {
                    train: list.contains(&Role::Trainer),
                    validate,
                    store: list.contains(&Role::Storage),
                    max_train_shards: options.train_shards,
                },
                list.contains(&Role::Storage),
            )
        }
    };
    // A run with its data on the network gets its plan from the peer once the shards are
    // here; otherwise every peer cuts the same plan from its local copy.
    let plan = if data_run {
        None
    } else {
        let dataset = crate::data_cmd::load(&options.data)?;
        Some(Arc::new(DataPlan::new(&dataset, &genesis.training)?))
    };
    tabswarm_net::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let certificate =
            tabswarm_net::load_or_create_certificate(&options.home.join("webrtc.pem"))?;
        let mut registry = Registry::default();
        let mut swarm = build_swarm(
            libp2p_key(seed)?,
            certificate,
            Limits {
                max_connections: options.max_connections,
                max_memory_fraction: options.max_memory_fraction,
            },
            &genesis,
            &mut registry,
        )
        .await?;
        if !options.relay_only {
            for addr in options.listen.multiaddrs() {
                swarm
                    .listen_on(addr.clone())
                    .with_context(|| format!("listening on {addr}"))?;
            }
        }
        let metrics = Metrics::new(&mut registry);
        let status = Arc::new(Mutex::new(Status {
            peer_id: swarm.local_peer_id().to_string(),
            address: hex(&key.address().0),
            run_id: hex(&genesis.run_id().0),
            roles: [
                (roles.train, "trainer"),
                (roles.validate, "validator"),
                (storage, "storage"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, r)| (*r).to_owned())
            .collect(),
            ..Status::default()
        }));
        let peer_id = *swarm.local_peer_id();
        let run = hex(&genesis.run_id().0[..8]);
        let mut runner = Runner::new(Setup {
            swarm,
            store,
            home: options.home.clone(),
            genesis,
            key,
            plan,
            roles,
            bootstrap: options.bootstrap,
            relay_only: options.relay_only,
            metrics,
            status: status.clone(),
            stop_at_height: options.stop_at_height,
            job_threads: options.job_threads,
        })?;
        // The status page opens only once it tells the stored height: a monitor (or a test)
        // reading it while the store loads saw height 0 after every restart.
        runner.refresh_status();
        let bound = crate::metrics::serve(options.metrics, registry, status.clone()).await?;
        std::fs::write(options.home.join(RPC_FILE), bound.to_string())
            .context("writing rpc.addr in the home")?;
        info!(
            %peer_id,
            %run,
            metrics = %format!("http://{bound}/metrics"),
            status = %format!("http://{bound}/status"),
            trainer = roles.train,
            validator = roles.validate,
            "node starting"
        );
        runner.run(crate::shutdown::signal()).await
    })
}

/// A one-shot HTTP/1.0 GET to our own status server (loopback, no TLS, tiny answers).
fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
        .with_context(|| {
            format!("no node answers on {addr} (is it running? is --rpc its --metrics address?)")
        })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.take(4 * 1024 * 1024).read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("node answered: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<()> {
    let rpc = match args.rpc {
        Some(addr) => addr,
        None => match std::fs::read_to_string(args.home.join(RPC_FILE)) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} is damaged", args.home.join(RPC_FILE).display()))?,
            Err(_) => DEFAULT_RPC.parse().expect("valid default"),
        },
    };
    let body = http_get(rpc, "/status")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let s: Status =
        serde_json::from_str(&body).context("status answer is not the expected JSON")?;
    println!("peer id     {}", s.peer_id);
    println!("roles       {}", s.roles.join(", "));
    println!(
        "height      {}{}",
        s.height,
        if s.syncing { " (catching up)" } else { "" }
    );
    println!("round       {}", s.round);
    println!("head        {}", &s.head_hash[..16.min(s.head_hash.len())]);
    println!(
        "params      {}",
        &s.param_hash[..16.min(s.param_hash.len())]
    );
    println!("peers       {}", s.peers);
    match (s.test_loss, s.test_accuracy) {
        (Some(l), Some(a)) => println!("test        loss {l:.4}, accuracy {:.2}%", a * 100.0),
        _ => println!("test        -"),
    }
    println!("credit      {} included updates", s.credit);
    Ok(())
}

/// The store and run of a node that is not running (redb allows one process at a time).
fn open_stopped(home: &Path) -> anyhow::Result<(Store, Genesis)> {
    let path = home.join(STORE_FILE);
    if !path.exists() {
        bail!("{} has no node state", home.display());
    }
    let store =
        Store::open(&path).context("stop the node first (the store is held while it runs)")?;
    let (genesis, _) = load_genesis(&store, None)?;
    Ok((store, genesis))
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<()> {
    let (store, genesis) = open_stopped(&args.home)?;
    // The newest committed parameters (written at every commit), else the newest checkpoint.
    let newest = [store.params()?, store.latest_checkpoint()?]
        .into_iter()
        .flatten()
        .max_by_key(|(h, _)| *h);
    let (height, bytes) = newest.context(
        "no committed parameters yet: run the node until it commits a height, then export",
    )?;
    let params = bytes_to_f32s(&bytes).context("stored parameters are damaged")?;
    let trainer =
        tabswarm_core::train::Trainer::with_params(&train_config(&genesis.training), &params)?;
    std::fs::write(&args.out, trainer.model().to_safetensors()?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", args.out.display());
    eprintln!(
        "model at height {height}, parameter hash {}",
        flat::param_hash(&params).to_hex()
    );
    Ok(())
}

pub(crate) fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    let (store, genesis) = open_stopped(&args.home)?;
    let persisted = store.load()?;
    let ledger =
        tabswarm_consensus::ledger::Ledger::verify_chain(genesis.clone(), &persisted.blocks)
            .context("the stored chain does not verify")?;
    let total = genesis.total_stake() as f64;
    let stake_of = |a: &tabswarm_consensus::identity::Address| {
        genesis
            .validators
            .iter()
            .find(|(v, _)| v == a)
            .map_or(0, |(_, s)| *s)
    };
    let min_signed = persisted
        .blocks
        .iter()
        .map(|b| {
            b.certificate
                .signatures
                .iter()
                .map(|(a, _)| stake_of(a))
                .sum::<u64>() as f64
                / total
        })
        .fold(f64::INFINITY, f64::min);
    let evidence: usize = persisted
        .blocks
        .iter()
        .map(|b| b.value.evidence.len())
        .sum();
    let at = args
        .height
        .and_then(|h| persisted.blocks.get((h as usize).wrapping_sub(1)));
    let signer = &persisted.signer;
    let summary = serde_json::json!({
        "run_id": hex(&genesis.run_id().0),
        "height": ledger.height().0,
        "head_hash": hex(&ledger.tip_hash()),
        "param_hash": hex(&ledger.param_hash()),
        "min_signed_stake_fraction": if persisted.blocks.is_empty() { serde_json::Value::Null } else { min_signed.into() },
        "evidence": evidence,
        "evidence_committed": persisted
            .blocks
            .iter()
            .flat_map(|b| b.value.evidence.iter().map(move |e| serde_json::json!({
                "in_block": b.height.0,
                "kind": evidence_kind(e),
                "offender": hex(&e.offender().0),
                "height": e.height().0,
            })))
            .collect::<Vec<_>>(),
        // Slashed validators are absent: an operator sees who still holds stake.
        "stakes": ledger
            .stakes()
            .iter()
            .map(|(a, s)| (hex(&a.0), serde_json::Value::from(*s)))
            .collect::<serde_json::Map<_, _>>(),
        "updates_included": persisted.blocks.iter().map(|b| b.value.proposal.updates.len()).sum::<usize>(),
        "at": at.map(|b| serde_json::json!({
            "height": b.height.0,
            "hash": hex(&b.hash()),
            "param_hash": hex(&b.value.proposal.result_param_hash),
            "updates": b.value.proposal.updates.len(),
        })),
        "signer": signer.last.map(|(h, r, step)| serde_json::json!({
            "height": h.0, "round": r.as_i64(), "step": format!("{step:?}"),
        })),
        "checkpoint_height": store.latest_checkpoint()?.map(|(h, _)| h),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "chain verified from genesis: {} blocks, every certificate signed by > 2/3 of stake",
            ledger.height().0
        );
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

fn evidence_kind(e: &tabswarm_consensus::evidence::Evidence) -> &'static str {
    use tabswarm_consensus::evidence::Evidence;
    match e {
        Evidence::DoubleVote { .. } => "double_vote",
        Evidence::DoubleProposal { .. } => "double_proposal",
        _ => "other",
    }
}
