//! A network's processes on hosts of their own: each in a Linux network namespace with one
//! address, all joined by a bridge, so a test can cut the wire between them (partitions) the
//! way a real network fails, which loopback cannot, and slow and lossy links between them
//! ([`Hosts::impair`]). Needs root, `ip` (iproute2), `nft` (nftables) and `iptables`;
//! `cargo xtask test` installs the last two.
//!
//! The bridge has an address too, so the test process (outside every namespace) still reads
//! each node's `/status`: faults are applied between hosts, never between a host and the
//! test.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::netem::{Impairment, QUEUE, Shaper};

/// One of a network's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Host {
    /// The relay.
    Relay,
    /// Node `i`.
    Node(usize),
}

/// The name of the nftables table faults live in (one per namespace), removed to heal.
const FAULT_TABLE: &str = "tabswarm_fault";

/// Namespaces, their veth links and the bridge; all removed on drop.
#[derive(Debug)]
pub struct Hosts {
    /// Short and unique per process: interface names have at most 15 bytes.
    tag: u32,
    /// Second octet of the 10.x.0.0/24 the hosts share.
    subnet: u8,
    bridge: String,
    made: BTreeMap<Host, String>,
    shapers: Vec<Shaper>,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?} (network namespaces need root and iproute2)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

impl Hosts {
    /// A bridge for this process's hosts; hosts are made on first use.
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let hosts = Self {
            tag: pid % 100_000,
            // Apart from 10.0.x and 10.1.x, which container networks often take.
            subnet: 10 + (pid % 200) as u8,
            bridge: format!("tsb{}", pid % 100_000),
            made: BTreeMap::new(),
            shapers: Vec::new(),
        };
        // A bridge left by a crashed run with this pid would make `add` fail.
        let _ = ip(&["link", "del", &hosts.bridge]);
        ip(&["link", "add", &hosts.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.{}.0.1/24", hosts.subnet),
            "dev",
            &hosts.bridge,
        ])?;
        ip(&["link", "set", &hosts.bridge, "up"])?;
        Ok(hosts)
    }

    fn index(host: Host) -> usize {
        match host {
            Host::Relay => 0,
            Host::Node(i) => i + 1,
        }
    }

    /// `host`'s address.
    pub fn ip(&self, host: Host) -> String {
        format!("10.{}.0.{}", self.subnet, 10 + Self::index(host))
    }

    /// `host`'s namespace, made (with its link to the bridge) if it is new.
    pub fn namespace(&mut self, host: Host) -> anyhow::Result<String> {
        if let Some(ns) = self.made.get(&host) {
            return Ok(ns.clone());
        }
        let i = Self::index(host);
        if i > 200 {
            bail!("at most 200 hosts in one network");
        }
        let ns = format!("tabswarm-{}-{i}", self.tag);
        let veth = format!("tsv{}h{i}", self.tag);
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        self.made.insert(host, ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.ip(host)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    /// `program` to run inside `host`'s namespace.
    pub fn command(&mut self, host: Host, program: &std::path::Path) -> anyhow::Result<Command> {
        let ns = self.namespace(host)?;
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the program: the child's pid is the program's, so signals
        // (kill -9, SIGSTOP) reach it directly.
        cmd.args(["netns", "exec", &ns]).arg(program);
        Ok(cmd)
    }

    /// Cuts every host in `a` off from every host in `b`, both ways; everything else (and
    /// the test's own view of each host) keeps working. [`Hosts::heal`] undoes it.
    pub fn partition(&mut self, a: &[Host], b: &[Host]) -> anyhow::Result<()> {
        for (side, other) in [(a, b), (b, a)] {
            let others: Vec<String> = other.iter().map(|&h| self.ip(h)).collect();
            let set = others.join(", ");
            for &h in side {
                let ns = self.namespace(h)?;
                self.apply(
                    &ns,
                    &format!(
                        "table inet {FAULT_TABLE} {{\n\
                         chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
                         chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
                         }}\n"
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Delays and drops what every host sends to the others (not to the test), until
    /// [`Hosts::heal`]: a fixed one-way delay, so a round trip between two hosts takes twice
    /// `impairment.delay`, and a share of packets lost each way. The random drops are drawn
    /// from `seed`.
    pub fn impair(&mut self, impairment: Impairment, seed: u64) -> anyhow::Result<()> {
        let subnet = format!("10.{}.0.0/24", self.subnet);
        let test_side = format!("10.{}.0.1", self.subnet);
        let queue = QUEUE.to_string();
        for (k, ns) in self.made.values().enumerate() {
            self.shapers
                .push(Shaper::start(ns, impairment, seed ^ (k as u64 + 1))?);
            let iptables = |args: &[&str]| {
                run(Command::new("ip")
                    .args(["netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT"])
                    .args(args))
                .context("iptables (install it: `apt-get install iptables`)")
            };
            iptables(&["-d", &test_side, "-j", "ACCEPT"])?;
            iptables(&[
                "-d",
                &subnet,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ])?;
        }
        Ok(())
    }

    /// Packets the impairment saw and dropped so far, over every host.
    pub fn impaired_packets(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.shapers.iter().fold((0, 0), |(s, d), sh| {
            (
                s + sh.seen.load(Ordering::Relaxed),
                d + sh.dropped.load(Ordering::Relaxed),
            )
        })
    }

    /// Removes every fault from every host.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for ns in self.made.values() {
            let _ =
                run(Command::new("ip")
                    .args(["netns", "exec", ns, "iptables", "-w", "-F", "OUTPUT"]));
        }
        // After the rules: a packet queued meanwhile is released by its shaper on drop.
        self.shapers.clear();
        for ns in self.made.values() {
            // No table means no fault on that host.
            let _ = run(Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                FAULT_TABLE,
            ]));
        }
        Ok(())
    }

    fn apply(&self, ns: &str, rules: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (install nftables: `apt-get install nftables`)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {ns} refused the rules: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.shapers.clear();
        // Deleting a namespace deletes its end of the veth, and with it the bridge's end.
        for ns in self.made.values() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
