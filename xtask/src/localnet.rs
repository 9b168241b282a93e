//! A local tabswarm network of real processes for the demo and the network benchmark: one
//! relay and several nodes on 127.0.0.1, each node with its own home under one directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) validators: usize,
    pub(crate) trainers: usize,
    pub(crate) genesis_args: Vec<String>,
    /// First metrics port (node i gets base + i); `None` lets each node pick one.
    pub(crate) metrics_base: Option<u16>,
    pub(crate) json_logs: bool,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) home: PathBuf,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

#[derive(Debug)]
pub(crate) struct LocalNet {
    pub(crate) dir: PathBuf,
    node_bin: PathBuf,
    data: PathBuf,
    relay: Option<Child>,
    pub(crate) relay_addrs: Vec<String>,
    pub(crate) nodes: Vec<Node>,
    genesis: PathBuf,
    json_logs: bool,
    metrics_base: Option<u16>,
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

impl LocalNet {
    /// Starts a relay and `validators + trainers` nodes in a fresh `dir`.
    pub(crate) fn start(
        dir: &Path,
        node_bin: &Path,
        relay_bin: &Path,
        data: &Path,
        spec: &Spec,
    ) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let mut relay = Command::new(relay_bin)
            .arg("--home")
            .arg(dir.join("relay"))
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
            .stderr(std::fs::File::create(dir.join("relay.log"))?)
            .spawn()
            .context("starting tabswarm-relay")?;
        let stdout = relay.stdout.take().context("relay stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut relay_addrs = Vec::new();
        while relay_addrs.len() < 4 {
            match lines.next() {
                Some(Ok(l)) => relay_addrs.push(l),
                _ => bail!(
                    "the relay stopped before printing its addresses (see {})",
                    dir.join("relay.log").display()
                ),
            }
        }
        // Keep draining so the relay never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});

        let total = spec.validators + spec.trainers;
        let mut keys = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..total {
            let home = dir.join(format!("node{i}"));
            let out = output(
                Command::new(node_bin)
                    .args(["init", "--json", "--home"])
                    .arg(&home),
            )?;
            let v: Value = serde_json::from_str(&out)?;
            keys.push(v["public_key"].as_str().unwrap_or_default().to_owned());
            nodes.push(Node {
                log: dir.join(format!("node{i}.log")),
                home,
                child: None,
            });
        }
        let genesis = dir.join("genesis.json");
        let mut cmd = Command::new(node_bin);
        cmd.args(["genesis", "--out"]).arg(&genesis);
        for key in &keys[..spec.validators] {
            cmd.args(["--validator", &format!("{key}:100")]);
        }
        cmd.args(&spec.genesis_args);
        output(&mut cmd)?;
        let mut net = Self {
            dir: dir.to_owned(),
            node_bin: node_bin.to_owned(),
            data: data.to_owned(),
            relay: Some(relay),
            relay_addrs,
            nodes,
            genesis,
            json_logs: spec.json_logs,
            metrics_base: spec.metrics_base,
        };
        for i in 0..total {
            let roles = if i < spec.validators {
                None
            } else {
                Some("trainer")
            };
            net.run_node(i, roles)?;
        }
        Ok(net)
    }

    fn relay_tcp(&self) -> String {
        self.relay_addrs
            .iter()
            .find(|a| a.contains("/tcp/") && !a.contains("/ws"))
            .cloned()
            .unwrap_or_default()
    }

    fn run_node(&mut self, i: usize, roles: Option<&str>) -> anyhow::Result<()> {
        let relay = self.relay_tcp();
        let metrics = match self.metrics_base {
            Some(base) => format!("127.0.0.1:{}", base + i as u16),
            None => "127.0.0.1:0".to_owned(),
        };
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(&self.node_bin);
        if self.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["run", "--home"])
            .arg(&node.home)
            .arg("--genesis")
            .arg(&self.genesis)
            .arg("--data")
            .arg(&self.data)
            .args([
                "--bootstrap",
                &relay,
                "--ip",
                "127.0.0.1",
                "--metrics",
                &metrics,
            ]);
        if let Some(r) = roles {
            cmd.args(["--roles", r]);
        }
        let _ = std::fs::remove_file(node.home.join("rpc.addr"));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&node.log)?)
            .spawn()
            .context("starting tabswarm-node")?;
        node.child = Some(child);
        Ok(())
    }

    /// Adds and starts a trainer-only node (a late joiner).
    pub(crate) fn add_trainer(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let home = self.dir.join(format!("node{i}"));
        output(
            Command::new(&self.node_bin)
                .args(["init", "--json", "--home"])
                .arg(&home),
        )?;
        self.nodes.push(Node {
            log: self.dir.join(format!("node{i}.log")),
            home,
            child: None,
        });
        self.run_node(i, Some("trainer"))?;
        Ok(i)
    }

    /// `/status` of node `i`, once it answers.
    pub(crate) fn status(&self, i: usize) -> Option<Value> {
        let home = &self.nodes[i].home;
        if !home.join("rpc.addr").exists() {
            return None;
        }
        let out = Command::new(&self.node_bin)
            .args(["status", "--json", "--home"])
            .arg(home)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    pub(crate) fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until every node in `nodes` reports at least `height`.
    pub(crate) fn wait_height(
        &self,
        nodes: &[usize],
        height: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if nodes.iter().all(|&i| self.height(i) >= height) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!(
            "the network did not reach height {height} within {timeout:?} (logs in {})",
            self.dir.display()
        )
    }

    /// Nodes whose process exited since the last call (each reported once; a node restarted
    /// by hand outside the demo is not watched).
    pub(crate) fn newly_dead(&mut self) -> Vec<usize> {
        let mut dead = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            {
                n.child = None;
                dead.push(i);
            }
        }
        dead
    }

    /// Whether any node process is still running.
    pub(crate) fn any_running(&self) -> bool {
        self.nodes.iter().any(|n| n.child.is_some())
    }

    /// SIGTERM to everyone, then wait (bounded) for clean exits.
    pub(crate) fn stop(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        children.extend(self.relay.take());
        for c in &children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for mut c in children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        self.stop();
    }
}
