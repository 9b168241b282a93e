//! A local tabswarm network of real processes on 127.0.0.1: one relay, several nodes, each
//! with its own home. Every wait is bounded; every child is killed when the `Net` drops.

#![allow(dead_code, clippy::unwrap_used)] // shared by several test files; panics are the report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Network tests share two cores: run them one at a time within a test binary (nextest runs
/// them one at a time through the `network` test group, see .config/nextest.toml).
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tabswarm-node"))
}

pub(crate) fn relay_bin() -> PathBuf {
    let path = node_bin().with_file_name("tabswarm-relay");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p tabswarm-relay`; `cargo xtask test` does)",
        path.display()
    );
    path
}

pub(crate) fn data_path() -> PathBuf {
    let path = std::env::var_os("TABSWARM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist.tsd"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask data`",
        path.display()
    );
    path
}

/// One node's process and home.
pub(crate) struct NodeProc {
    pub(crate) home: PathBuf,
    pub(crate) public_key: String,
    pub(crate) peer_id: String,
    child: Option<Child>,
}

pub(crate) struct Net {
    pub(crate) dir: PathBuf,
    pub(crate) relay: Child,
    pub(crate) relay_addrs: Vec<String>,
    pub(crate) genesis: PathBuf,
    pub(crate) nodes: Vec<NodeProc>,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Net {
    /// A relay and `nodes` initialised homes; the first `validators` get 100 stake each.
    pub(crate) fn new(name: &str, nodes: usize, validators: usize, genesis_args: &[&str]) -> Net {
        let dir = std::env::temp_dir().join(format!("tabswarm-net-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut relay = Command::new(relay_bin())
            .args(["--home", dir.join("relay").to_str().unwrap()])
            .args(["--ip", "127.0.0.1", "--tcp-port", "0", "--quic-port", "0"])
            .args([
                "--ws-port",
                "0",
                "--webrtc-port",
                "0",
                "--per-ip-per-minute",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let relay_addrs = read_lines(relay.stdout.take().unwrap(), 4, Duration::from_secs(20));
        let mut procs = Vec::new();
        for i in 0..nodes {
            let home = dir.join(format!("node{i}"));
            let out = run_ok(
                Command::new(node_bin())
                    .args(["init", "--json", "--home"])
                    .arg(&home),
            );
            let v: Value = serde_json::from_str(&out).unwrap();
            procs.push(NodeProc {
                home,
                public_key: v["public_key"].as_str().unwrap().to_owned(),
                peer_id: v["peer_id"].as_str().unwrap().to_owned(),
                child: None,
            });
        }
        let genesis = dir.join("genesis.json");
        let mut cmd = Command::new(node_bin());
        cmd.args(["genesis", "--out"]).arg(&genesis);
        for p in &procs[..validators] {
            cmd.args(["--validator", &format!("{}:100", p.public_key)]);
        }
        cmd.args(genesis_args);
        run_ok(&mut cmd);
        Net {
            dir,
            relay,
            relay_addrs,
            genesis,
            nodes: procs,
        }
    }

    /// The relay's address for one transport (`/tcp/`, `/quic-v1`, `/ws`, `/webrtc-direct`).
    pub(crate) fn relay_addr(&self, transport: &str) -> String {
        self.relay_addrs
            .iter()
            .find(|a| a.contains(transport) && (transport != "/tcp/" || !a.contains("/ws")))
            .unwrap()
            .clone()
    }

    /// Starts node `i` (bootstrapping from the relay over TCP) with extra flags.
    pub(crate) fn start(&mut self, i: usize, extra: &[&str]) {
        let relay = self.relay_addr("/tcp/");
        self.start_via(i, &relay, extra);
    }

    /// Starts node `i` bootstrapping from `relay`.
    pub(crate) fn start_via(&mut self, i: usize, relay: &str, extra: &[&str]) {
        let relay = relay.to_owned();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} already running");
        let _ = std::fs::remove_file(node.home.join("rpc.addr"));
        let log = std::fs::File::create(node.home.with_extension("log")).unwrap();
        let child = Command::new(node_bin())
            .args(["run", "--home"])
            .arg(&node.home)
            .arg("--genesis")
            .arg(&self.genesis)
            .arg("--data")
            .arg(data_path())
            .args([
                "--bootstrap",
                &relay,
                "--ip",
                "127.0.0.1",
                "--metrics",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub(crate) fn is_running(&mut self, i: usize) -> bool {
        match &mut self.nodes[i].child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// `/status` of node `i`, or `None` while it is not answering.
    pub(crate) fn status(&self, i: usize) -> Option<Value> {
        let home = &self.nodes[i].home;
        if !home.join("rpc.addr").exists() {
            return None;
        }
        let out = Command::new(node_bin())
            .args(["status", "--json", "--home"])
            .arg(home)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub(crate) fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Polls `cond` every 250 ms until it holds; panics with `what` and the node logs after
    /// `timeout`.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Net) -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            self.logs()
        );
    }

    /// The last lines of every node's log, for failure reports.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(n.home.with_extension("log")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {i} ---\n"));
            for l in &lines[lines.len().saturating_sub(12)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub(crate) fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether it exited cleanly.
    pub(crate) fn stop(&mut self, i: usize) -> bool {
        let Some(mut c) = self.nodes[i].child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(status) = c.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        false
    }

    pub(crate) fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            assert!(
                self.stop(i),
                "node {i} did not stop cleanly on SIGTERM\n{}",
                self.logs()
            );
        }
    }

    /// `tabswarm-node ledger --json` of a stopped node (verifies its chain from genesis).
    pub(crate) fn ledger(&self, i: usize, height: u64) -> Value {
        let out = run_ok(
            Command::new(node_bin())
                .args([
                    "ledger",
                    "--json",
                    "--height",
                    &height.to_string(),
                    "--home",
                ])
                .arg(&self.nodes[i].home),
        );
        serde_json::from_str(&out).unwrap()
    }

    pub(crate) fn home(&self, i: usize) -> &Path {
        &self.nodes[i].home
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = self.relay.kill();
        let _ = self.relay.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads `n` lines from a child's stdout within `timeout`.
fn read_lines(stdout: std::process::ChildStdout, n: usize, timeout: Duration) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!(
                "relay printed {} of {n} addresses in {timeout:?}",
                lines.len()
            ),
        }
    }
    lines
}

/// Genesis flags that keep test rounds short.
pub(crate) const FAST: &[&str] = &[
    "--local-steps",
    "30",
    "--round-deadline-ms",
    "500",
    "--checkpoint-every",
    "5",
    "--propose-timeout-ms",
    "3000",
];
