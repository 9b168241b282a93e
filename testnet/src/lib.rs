//! Local tabswarm networks of real processes: one `tabswarm-relay` and several
//! `tabswarm-node`s on 127.0.0.1 (or each on a host of its own, [`Spec::isolated`]), each
//! node with its own home under one directory. The demo,
//! the network benchmark and the multi-process tests all start their networks here, so what
//! the tests exercise is what a user runs.
//!
//! Every wait is bounded; every child is stopped when the [`Testnet`] drops (SIGTERM, then
//! SIGKILL after [`STOP_GRACE`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

mod hosts;
mod netem;

pub use hosts::{Host, Hosts};
pub use netem::Impairment;

/// How long a node may take to exit cleanly on SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the relay may take to print its listen addresses.
const RELAY_START: Duration = Duration::from_secs(20);
/// Addresses the relay prints on stdout (tcp, quic, websocket, webrtc-direct).
const RELAY_ADDRS: usize = 4;

/// Genesis flags that keep rounds short (tests).
pub const FAST: &[&str] = &[
    "--local-steps",
    "30",
    "--round-deadline-ms",
    "500",
    "--checkpoint-every",
    "5",
    "--propose-timeout-ms",
    "3000",
];

/// Genesis flags with room for volunteers' tabs (slower than native trainers): a 2 s
/// deadline for updates. The browser tests and the soak with tabs use them.
pub const WITH_TABS: &[&str] = &[
    "--local-steps",
    "30",
    "--round-deadline-ms",
    "2000",
    "--checkpoint-every",
    "5",
    "--propose-timeout-ms",
    "4000",
];

static SERIAL: Mutex<()> = Mutex::new(());

/// Networks share two cores: tests in one binary take this so they run one at a time (nextest
/// runs them one at a time anyway, through the `network` test group).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The two programs a network runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `tabswarm-node`.
    pub node: PathBuf,
    /// `tabswarm-relay`.
    pub relay: PathBuf,
}

impl Binaries {
    /// `tabswarm-node` at `node` and `tabswarm-relay` beside it (cargo builds both into one
    /// directory).
    pub fn beside(node: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let node = node.into();
        let relay = node.with_file_name(format!("tabswarm-relay{}", std::env::consts::EXE_SUFFIX));
        for p in [&node, &relay] {
            if !p.exists() {
                bail!(
                    "{} is missing: build it first (`cargo build -p tabswarm-node -p tabswarm-relay`; `cargo xtask test` does)",
                    p.display()
                );
            }
        }
        Ok(Self { node, relay })
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Nodes with stake (100 each), numbered first.
    pub validators: usize,
    /// Nodes without stake, after the validators.
    pub others: usize,
    /// Extra `tabswarm-node genesis` flags.
    pub genesis_args: Vec<String>,
    /// First metrics port (node i gets base + i); `None` lets each node pick a free one.
    pub metrics_base: Option<u16>,
    /// Nodes log JSON lines (what the benchmarks parse).
    pub json_logs: bool,
    /// Remove the directory when the network drops, unless a thread is panicking (tests).
    pub remove_on_drop: bool,
    /// Extra `tabswarm-relay` flags (its limits, say).
    pub relay_args: Vec<String>,
    /// Keep the run's data on the network (DESIGN.md, "Data"): node `data_owner` owns it and
    /// adds the dataset with `data add`, granting every node but those in `ungranted`; nodes
    /// get no local copy.
    pub network_data: bool,
    /// Nodes left out of the owner's grants (with `network_data`).
    pub ungranted: Vec<usize>,
    /// The node that owns the data (with `network_data`; default 0).
    pub data_owner: usize,
    /// An open run (with `network_data`): the dataset key is in the genesis, so anyone who
    /// joins reads the data (volunteers' tabs, with no grant) and may submit updates.
    pub open_data: bool,
    /// Each process on a host of its own (a network namespace; see [`Hosts`]), so the test
    /// can partition them; otherwise all on 127.0.0.1.
    pub isolated: bool,
}

impl Spec {
    /// `validators` staked nodes and `others` without stake; defaults otherwise.
    pub fn new(validators: usize, others: usize) -> Self {
        Self {
            validators,
            others,
            genesis_args: Vec::new(),
            metrics_base: None,
            json_logs: false,
            remove_on_drop: false,
            relay_args: Vec::new(),
            network_data: false,
            ungranted: Vec::new(),
            data_owner: 0,
            open_data: false,
            isolated: false,
        }
    }

    /// Each process in a network namespace of its own (needs root and nftables).
    pub fn isolated(mut self) -> Self {
        self.isolated = true;
        self
    }

    /// With the run's data on the network, owned by node `owner` and granted to every node
    /// but `ungranted`.
    pub fn network_data(mut self, owner: usize, ungranted: &[usize]) -> Self {
        self.network_data = true;
        self.data_owner = owner;
        self.ungranted = ungranted.to_vec();
        self
    }

    /// With the run's data on the network, owned by node `owner`, open to anyone who joins.
    pub fn open_network_data(mut self, owner: usize) -> Self {
        self.open_data = true;
        self.network_data(owner, &[])
    }

    /// With these genesis flags.
    pub fn genesis(mut self, args: &[&str]) -> Self {
        self.genesis_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

/// One node's home, log and (while running) process.
#[derive(Debug)]
pub struct Node {
    /// Its home directory.
    pub home: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
    /// Hex ed25519 public key (its consensus identity).
    pub public_key: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Hex X25519 key the data owner grants the dataset key to.
    pub member_key: String,
    child: Option<Child>,
}

/// A relay and nodes on 127.0.0.1, or on hosts of their own.
#[derive(Debug)]
pub struct Testnet {
    /// Where everything lives.
    pub dir: PathBuf,
    bins: Binaries,
    data: PathBuf,
    relay: Option<Child>,
    /// What the relay listens on, one address per transport.
    pub relay_addrs: Vec<String>,
    /// The run's genesis file.
    pub genesis: PathBuf,
    /// Every node, started or not.
    pub nodes: Vec<Node>,
    spec: Spec,
    /// With [`Spec::isolated`]; dropped after the processes (fields drop after `drop`).
    hosts: Option<Hosts>,
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

impl Testnet {
    /// A fresh `dir` with a running relay, `validators + others` initialised node homes and a
    /// genesis staking the validators; no node is started yet.
    pub fn create(dir: &Path, bins: &Binaries, data: &Path, spec: Spec) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if !data.exists() {
            bail!("{} is missing: run `cargo xtask data`", data.display());
        }
        let mut net = Self {
            dir: dir.to_owned(),
            bins: bins.clone(),
            data: data.to_owned(),
            relay: None,
            relay_addrs: Vec::new(),
            genesis: dir.join("genesis.json"),
            nodes: Vec::new(),
            hosts: spec.isolated.then(Hosts::create).transpose()?,
            spec,
        };
        let (relay, relay_addrs) = net.start_relay([0; 4])?;
        net.relay = Some(relay);
        net.relay_addrs = relay_addrs;
        for _ in 0..net.spec.validators + net.spec.others {
            net.add_node()?;
        }
        let mut cmd = Command::new(&net.bins.node);
        cmd.args(["genesis", "--out"]).arg(&net.genesis);
        for n in &net.nodes[..net.spec.validators] {
            cmd.args(["--validator", &format!("{}:100", n.public_key)]);
        }
        cmd.args(&net.spec.genesis_args);
        if net.spec.network_data {
            cmd.args(["--data-owner", &net.nodes[net.spec.data_owner].public_key]);
            if net.spec.open_data {
                cmd.args(["--data-access", "open"]);
            }
        }
        output(&mut cmd)?;
        if net.spec.network_data {
            net.add_data()?;
        }
        Ok(net)
    }

    /// A network under the system's temp directory named after `name` and this process,
    /// removed when it drops (kept for inspection when a test panics).
    pub fn temp(name: &str, bins: &Binaries, data: &Path, spec: Spec) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tabswarm-net-{name}-{}", std::process::id()));
        Self::create(
            &dir,
            bins,
            data,
            Spec {
                remove_on_drop: true,
                ..spec
            },
        )
    }

    /// `data add` in the owner's home, granting every node but the ungranted. Run again (the
    /// owner's node stopped) for a new epoch: a fresh key, and grants only for who is
    /// granted now.
    pub fn add_data(&self) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.bins.node);
        cmd.args(["data", "add"])
            .arg(&self.data)
            .arg("--run")
            .arg(&self.genesis)
            .arg("--home")
            .arg(&self.nodes[self.spec.data_owner].home);
        for (i, n) in self.nodes.iter().enumerate() {
            if i != self.spec.data_owner && !self.spec.ungranted.contains(&i) {
                cmd.args(["--member", &format!("{}:{}", n.public_key, n.member_key)]);
            }
        }
        output(&mut cmd)
    }

    /// Grants node `i` the key of the owner's newest epoch (the owner's node stopped).
    pub fn grant(&mut self, i: usize) -> anyhow::Result<String> {
        self.spec.ungranted.retain(|&u| u != i);
        let n = &self.nodes[i];
        output(
            Command::new(&self.bins.node)
                .args(["data", "grant", "--home"])
                .arg(&self.nodes[self.spec.data_owner].home)
                .args(["--member", &format!("{}:{}", n.public_key, n.member_key)]),
        )
    }

    /// Leaves node `i` out of the grants of the next `add_data`.
    pub fn revoke(&mut self, i: usize) {
        if !self.spec.ungranted.contains(&i) {
            self.spec.ungranted.push(i);
        }
    }

    /// Runs `tabswarm-node data <args>` on node `i`'s home (its node stopped for `get`).
    pub fn data_command(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        output(
            Command::new(&self.bins.node)
                .arg("data")
                .args(args)
                .arg("--home")
                .arg(&self.nodes[i].home),
        )
    }

    /// Starts every node: validators with their default roles, the others as trainers.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if i < self.spec.validators {
                self.start(i, &[])?;
            } else {
                self.start(i, &["--roles", "trainer"])?;
            }
        }
        Ok(())
    }

    /// Initialises one more node home (no stake); returns its index. Start it with
    /// [`Testnet::start`].
    pub fn add_node(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let home = self.dir.join(format!("node{i}"));
        let out = output(
            Command::new(&self.bins.node)
                .args(["init", "--json", "--home"])
                .arg(&home),
        )?;
        let v: Value = serde_json::from_str(&out).context("reading `init --json`")?;
        let field = |k: &str| -> anyhow::Result<String> {
            Ok(v[k]
                .as_str()
                .with_context(|| format!("`init --json` printed no {k}: {v}"))?
                .to_owned())
        };
        self.nodes.push(Node {
            log: self.dir.join(format!("node{i}.log")),
            public_key: field("public_key")?,
            peer_id: field("peer_id")?,
            member_key: field("member_key")?,
            home,
            child: None,
        });
        Ok(i)
    }

    /// The relay's address for one transport (`/tcp/`, `/quic-v1`, `/ws`, `/webrtc-direct`).
    pub fn relay_addr(&self, transport: &str) -> anyhow::Result<&str> {
        self.relay_addrs
            .iter()
            .find(|a| a.contains(transport) && (transport != "/tcp/" || !a.contains("/ws")))
            .map(String::as_str)
            .with_context(|| {
                format!(
                    "the relay has no {transport} address: {:?}",
                    self.relay_addrs
                )
            })
    }

    /// What a browser tab needs to join: the genesis (as text), the addresses a tab can dial
    /// (websocket and webrtc-direct, with certhash, of the relay and of every node answering
    /// `/status`), and each node's `/status` URL. `cargo xtask demo` serves it to the page as
    /// `/network.json`.
    pub fn for_browsers(&self) -> anyhow::Result<Value> {
        let dialable = |a: &str| {
            (a.contains("/ws/") || a.contains("/webrtc-direct/")) && !a.contains("p2p-circuit")
        };
        let mut bootstrap: Vec<String> = self
            .relay_addrs
            .iter()
            .filter(|a| dialable(a))
            .cloned()
            .collect();
        let mut status = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(s) = self.status(i) else { continue };
            for a in s["listen"].as_array().into_iter().flatten() {
                if let Some(a) = a.as_str().filter(|a| dialable(a)) {
                    bootstrap.push(a.to_owned());
                }
            }
            if let Ok(addr) = std::fs::read_to_string(node.home.join("rpc.addr")) {
                status.push(format!("http://{}/status", addr.trim()));
            }
        }
        Ok(serde_json::json!({
            "genesis": std::fs::read_to_string(&self.genesis)
                .with_context(|| format!("reading {}", self.genesis.display()))?,
            "bootstrap": bootstrap,
            "status": status,
        }))
    }

    /// Starts node `i`, bootstrapping from the relay over TCP, with extra `run` flags.
    pub fn start(&mut self, i: usize, extra: &[&str]) -> anyhow::Result<()> {
        let relay = self.relay_addr("/tcp/")?.to_owned();
        self.start_via(i, &relay, extra)
    }

    /// Starts node `i` bootstrapping from `bootstrap`.
    pub fn start_via(&mut self, i: usize, bootstrap: &str, extra: &[&str]) -> anyhow::Result<()> {
        let ip = self.ip(Host::Node(i));
        let metrics = match self.spec.metrics_base {
            Some(base) => format!("{ip}:{}", usize::from(base) + i),
            None => format!("{ip}:0"),
        };
        if self.nodes[i].child.is_some() {
            bail!("node {i} is already running");
        }
        let mut cmd = self.program(Host::Node(i), &self.bins.node.clone())?;
        let node = &mut self.nodes[i];
        // A stale address file would point status readers at the previous process.
        let _ = std::fs::remove_file(node.home.join("rpc.addr"));
        if self.spec.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["run", "--home"])
            .arg(&node.home)
            .arg("--genesis")
            .arg(&self.genesis)
            .arg("--data")
            // A run with its data on the network must never read a local copy.
            .arg(if self.spec.network_data {
                Path::new("/nonexistent/tabswarm.tsd")
            } else {
                &self.data
            })
            .args(["--bootstrap", bootstrap, "--ip", &ip])
            .args(["--metrics", &metrics])
            .args(extra);
        // Nodes log at their default level whatever the caller's RUST_LOG says;
        // TABSWARM_NODE_LOG sets theirs (debugging a test).
        match std::env::var("TABSWARM_NODE_LOG") {
            Ok(filter) => cmd.env("RUST_LOG", filter),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        // Appended, not replaced: what a node logged before a kill is what explains a fault.
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        writeln!(log, "---- tabswarm-node started by the test ----")
            .with_context(|| format!("writing {}", node.log.display()))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tabswarm-node")?;
        node.child = Some(child);
        Ok(())
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Nodes whose process exited since the last call, each reported once.
    pub fn newly_dead(&mut self) -> Vec<usize> {
        let dead: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.is_running(i))
            .collect();
        for &i in &dead {
            self.nodes[i].child = None;
        }
        dead
    }

    /// Node `i`'s resident memory in KiB (Linux `/proc`), while its process runs.
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        let pid = self.nodes[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether any node process is still running (as of the last [`Testnet::newly_dead`]).
    pub fn any_running(&self) -> bool {
        self.nodes.iter().any(|n| n.child.is_some())
    }

    /// The nodes among `nodes` holding each shard of the run's data, by shard index, from
    /// their `/status` (nodes not answering count as holding nothing).
    pub fn shard_holders(&self, nodes: &[usize]) -> BTreeMap<u64, Vec<usize>> {
        let mut out: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for &i in nodes {
            let Some(status) = self.status(i) else {
                continue;
            };
            for s in status["data"]["held"].as_array().into_iter().flatten() {
                if let Some(s) = s.as_u64() {
                    out.entry(s).or_default().push(i);
                }
            }
        }
        out
    }

    /// `/status` of node `i`, or `None` while it is not answering.
    pub fn status(&self, i: usize) -> Option<Value> {
        let home = &self.nodes[i].home;
        if !home.join("rpc.addr").exists() {
            return None;
        }
        let out = Command::new(&self.bins.node)
            .args(["status", "--json", "--home"])
            .arg(home)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// Node `i`'s Prometheus `/metrics` text, or `None` while it is not answering.
    pub fn metrics(&self, i: usize) -> Option<String> {
        self.get(i, "/metrics")
    }

    /// The ledger credit of trainer `address` (hex) by node `i`'s `/credits/{address}`.
    pub fn credit_of(&self, i: usize, address: &str) -> Option<u64> {
        let body = self.get(i, &format!("/credits/{address}"))?;
        serde_json::from_str::<Value>(&body).ok()?["credit"].as_u64()
    }

    /// The body of a GET of `path` on node `i`'s metrics and status server.
    pub fn get(&self, i: usize, path: &str) -> Option<String> {
        let addr = std::fs::read_to_string(self.nodes[i].home.join("rpc.addr")).ok()?;
        let addr: std::net::SocketAddr = addr.trim().parse().ok()?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
    }

    /// Node `i`'s committed height (0 while it is not answering).
    pub fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Polls `cond` every 250 ms until it holds; after `timeout`, an error naming `what` with
    /// the tail of every node's log.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Testnet) -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "timed out after {timeout:?} waiting for {what} (logs in {})\n{}",
            self.dir.display(),
            self.logs()
        )
    }

    /// Waits until every node in `nodes` reports at least `height`.
    pub fn wait_height(
        &self,
        nodes: &[usize],
        height: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_until(
            &format!("height {height} on nodes {nodes:?}"),
            timeout,
            |n| nodes.iter().all(|&i| n.height(i) >= height),
        )
    }

    /// The last lines of every node's log, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {i} ---\n"));
            for l in &lines[lines.len().saturating_sub(12)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The relay's log so far.
    pub fn relay_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default()
    }

    /// SIGSTOP: node `i` freezes (no timer, no socket read) until [`Testnet::resume`], like
    /// a machine that stalls; its peers see silence, not a closed connection.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")
    }

    /// SIGCONT after [`Testnet::pause`].
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        let child = self.nodes[i]
            .child
            .as_ref()
            .with_context(|| format!("node {i} is not running"))?;
        output(Command::new("kill").args([signal, &child.id().to_string()])).map(|_| ())
    }

    /// SIGKILL to the relay: every circuit through it closes at once.
    pub fn kill_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            let _ = relay.kill();
            let _ = relay.wait();
        }
    }

    /// Starts the relay again with its identity and on its ports, so the addresses peers
    /// know stay right.
    pub fn restart_relay(&mut self) -> anyhow::Result<()> {
        self.kill_relay();
        let port = |pick: &dyn Fn(&str) -> bool| -> u16 {
            self.relay_addrs
                .iter()
                .find(|a| pick(a))
                .and_then(|a| {
                    let parts: Vec<&str> = a.split('/').collect();
                    parts
                        .iter()
                        .position(|p| *p == "tcp" || *p == "udp")
                        .and_then(|i| parts.get(i + 1)?.parse().ok())
                })
                .unwrap_or(0)
        };
        let ports = [
            port(&|a| a.contains("/tcp/") && !a.contains("/ws")),
            port(&|a| a.contains("/quic-v1")),
            port(&|a| a.contains("/ws")),
            port(&|a| a.contains("/webrtc-direct")),
        ];
        if ports.contains(&0) {
            bail!("the relay's addresses name no port: {:?}", self.relay_addrs);
        }
        let (relay, addrs) = self.start_relay(ports)?;
        if addrs != self.relay_addrs {
            bail!(
                "the restarted relay listens elsewhere: {addrs:?}, was {:?}",
                self.relay_addrs
            );
        }
        self.relay = Some(relay);
        Ok(())
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; whether it exited cleanly.
    pub fn stop(&mut self, i: usize) -> bool {
        let Some(c) = self.nodes[i].child.take() else {
            return true;
        };
        stop_children(vec![c])[0]
    }

    /// Stops every node at once (SIGTERM, bounded wait); an error names those that did not
    /// exit cleanly.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        let (idx, children): (Vec<usize>, Vec<Child>) = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| n.child.take().map(|c| (i, c)))
            .unzip();
        let unclean: Vec<usize> = idx
            .into_iter()
            .zip(stop_children(children))
            .filter(|(_, clean)| !clean)
            .map(|(i, _)| i)
            .collect();
        if !unclean.is_empty() {
            bail!(
                "nodes {unclean:?} did not exit cleanly on SIGTERM\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// `tabswarm-node ledger --json` of a stopped node (it verifies the chain from genesis).
    pub fn ledger(&self, i: usize, height: u64) -> anyhow::Result<Value> {
        let out = output(
            Command::new(&self.bins.node)
                .args([
                    "ledger",
                    "--json",
                    "--height",
                    &height.to_string(),
                    "--home",
                ])
                .arg(&self.nodes[i].home),
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Node `i`'s home.
    pub fn home(&self, i: usize) -> &Path {
        &self.nodes[i].home
    }

    /// Where `host` listens: its own address on an isolated network, else 127.0.0.1.
    pub fn ip(&self, host: Host) -> String {
        match &self.hosts {
            Some(h) => h.ip(host),
            None => "127.0.0.1".to_owned(),
        }
    }

    /// The hosts of an isolated network ([`Spec::isolated`]), to cut and heal links.
    pub fn hosts(&mut self) -> anyhow::Result<&mut Hosts> {
        self.hosts
            .as_mut()
            .context("the network is not isolated (Spec::isolated): nothing to partition")
    }

    /// `program`, to run as `host`.
    fn program(&mut self, host: Host, program: &Path) -> anyhow::Result<Command> {
        match &mut self.hosts {
            Some(h) => h.command(host, program),
            None => Ok(Command::new(program)),
        }
    }

    /// Starts the relay in `dir/relay` on `ports` (tcp, quic, websocket, webrtc-direct; 0
    /// picks one), appending to `dir/relay.log`, and reads the addresses it prints.
    fn start_relay(&mut self, ports: [u16; 4]) -> anyhow::Result<(Child, Vec<String>)> {
        let cmd = self.program(Host::Relay, &self.bins.relay.clone())?;
        start_relay(
            cmd,
            &self.dir,
            &self.ip(Host::Relay),
            &self.spec.relay_args,
            ports,
        )
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.stop_all();
        if let Some(mut relay) = self.relay.take() {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        if self.spec.remove_on_drop && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGTERM to every child, then a bounded wait; for each, whether it exited successfully.
fn stop_children(children: Vec<Child>) -> Vec<bool> {
    for c in &children {
        // No signal crate: `unsafe` is forbidden in the workspace and `kill` is everywhere.
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + STOP_GRACE;
    children
        .into_iter()
        .map(|mut c| {
            while Instant::now() < deadline {
                if let Ok(Some(status)) = c.try_wait() {
                    return status.success();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            false
        })
        .collect()
}

/// Runs `relay` (the program, perhaps wrapped to run on a host of its own) on `ip` and
/// `ports`; see [`Testnet::start_relay`].
fn start_relay(
    mut relay: Command,
    dir: &Path,
    ip: &str,
    extra: &[String],
    [tcp, quic, ws, webrtc]: [u16; 4],
) -> anyhow::Result<(Child, Vec<String>)> {
    let log = dir.join("relay.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut relay = relay
        .arg("--home")
        .arg(dir.join("relay"))
        .args(["--ip", ip])
        .args([
            "--tcp-port",
            &tcp.to_string(),
            "--quic-port",
            &quic.to_string(),
        ])
        .args([
            "--ws-port",
            &ws.to_string(),
            "--webrtc-port",
            &webrtc.to_string(),
        ])
        .args(["--per-ip-per-minute", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .context("starting tabswarm-relay")?;
    let stdout = relay.stdout.take().context("relay stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining after the addresses so the relay never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + RELAY_START;
    let mut addrs = Vec::new();
    while addrs.len() < RELAY_ADDRS {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => addrs.push(l),
            Err(_) => {
                let _ = relay.kill();
                let _ = relay.wait();
                bail!(
                    "the relay printed {} of {RELAY_ADDRS} addresses in {RELAY_START:?} (see {})",
                    addrs.len(),
                    log.display()
                );
            }
        }
    }
    Ok((relay, addrs))
}

/// The sum of every sample of counter `name` in Prometheus text whose labels contain
/// `label` (e.g. `direction="Outbound"`; empty for all).
pub fn counter_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::counter_sum;

    #[test]
    fn counter_sum_adds_the_matching_series_only() {
        let text = "# HELP libp2p_bandwidth_bytes Bandwidth\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Inbound\"} 100\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1\",direction=\"Inbound\"} 20\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Outbound\"} 7\n\
            tabswarm_bytes_total 5\n";
        let inbound = counter_sum(
            text,
            "libp2p_bandwidth_bytes_total",
            "direction=\"Inbound\"",
        );
        assert_eq!(inbound, 120.0);
        assert_eq!(counter_sum(text, "libp2p_bandwidth_bytes_total", ""), 127.0);
        assert_eq!(counter_sum(text, "tabswarm_bytes_total", ""), 5.0);
        assert_eq!(counter_sum(text, "missing", ""), 0.0);
    }
}
