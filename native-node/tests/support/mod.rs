//! Glue between these tests and `tabswarm-testnet`: the binaries cargo built for this test
//! run and the MNIST file.

#![allow(dead_code, clippy::unwrap_used)] // shared by several test files; panics are the report

pub(crate) mod attacker;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use tabswarm_testnet::{Binaries, Spec};
pub(crate) use tabswarm_testnet::{FAST, Testnet as Net, serial};

pub(crate) fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tabswarm-node"))
}

/// A relay and `nodes` initialised homes under the temp directory; the first `validators`
/// get 100 stake each. Nothing is started.
pub(crate) fn net(name: &str, nodes: usize, validators: usize, genesis_args: &[&str]) -> Net {
    net_with(name, nodes, validators, genesis_args, &[])
}

/// [`net`] with extra `tabswarm-relay` flags.
pub(crate) fn net_with(
    name: &str,
    nodes: usize,
    validators: usize,
    genesis_args: &[&str],
    relay_args: &[&str],
) -> Net {
    net_spec(name, nodes, validators, genesis_args, |spec| Spec {
        relay_args: relay_args.iter().map(|a| (*a).to_owned()).collect(),
        ..spec
    })
}

/// [`net`] with the spec changed by `f`.
pub(crate) fn net_spec(
    name: &str,
    nodes: usize,
    validators: usize,
    genesis_args: &[&str],
    f: impl FnOnce(Spec) -> Spec,
) -> Net {
    let data = data_file();
    let bins = Binaries::beside(node_bin()).unwrap();
    let spec = f(Spec::new(validators, nodes - validators).genesis(genesis_args));
    Net::temp(name, &bins, &data, spec).unwrap()
}

/// The MNIST file the networks train on (`TABSWARM_DATA`, or the repository's `data/`).
pub(crate) fn data_file() -> PathBuf {
    std::env::var_os("TABSWARM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist.tsd"))
}

/// A node's direct TCP listen address (not websocket, not a relay circuit).
pub(crate) fn direct_tcp(status: &serde_json::Value) -> libp2p::Multiaddr {
    status["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| a.contains("/tcp/") && !a.contains("/ws") && !a.contains("p2p-circuit"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits (bounded) until every listed node reports at least `height`.
pub(crate) fn reach(net: &Net, nodes: &[usize], height: u64, what: &str, secs: u64) {
    net.wait_until(what, Duration::from_secs(secs), |n| {
        heights(n, nodes).iter().all(|h| *h >= height)
    })
    .unwrap();
}

pub(crate) fn heights(net: &Net, nodes: &[usize]) -> Vec<u64> {
    nodes.iter().map(|&i| net.height(i)).collect()
}

/// Block `height` and its parameter hash must be the same on every listed node, and no
/// validator signed twice ([`assert_same_chain`] and no evidence).
pub(crate) fn assert_same_block(net: &Net, nodes: &[usize], height: u64) -> Vec<Value> {
    let ledgers = assert_same_chain(net, nodes, height);
    for (i, l) in nodes.iter().zip(&ledgers) {
        assert_eq!(
            l["evidence"], 0,
            "node {i}: equivocation evidence (a double signature)"
        );
    }
    ledgers
}

/// Every listed node's ledger verifies from genesis and holds the same block `height`, with
/// the same parameters, every certificate signed by more than 2/3 of stake.
pub(crate) fn assert_same_chain(net: &Net, nodes: &[usize], height: u64) -> Vec<Value> {
    let ledgers: Vec<Value> = nodes
        .iter()
        .map(|&i| net.ledger(i, height).unwrap())
        .collect();
    for (i, l) in nodes.iter().zip(&ledgers) {
        assert!(
            l["height"].as_u64().unwrap() >= height,
            "node {i} is behind: {l}"
        );
        assert_eq!(
            l["at"]["hash"], ledgers[0]["at"]["hash"],
            "node {i} has another block {height}"
        );
        assert_eq!(
            l["at"]["param_hash"], ledgers[0]["at"]["param_hash"],
            "node {i}: other parameters"
        );
        let signed = l["min_signed_stake_fraction"].as_f64().unwrap();
        assert!(
            signed > 2.0 / 3.0,
            "node {i}: a certificate with only {signed} of stake"
        );
    }
    ledgers
}

/// Where the reliability suite (`cargo xtask reliability`) collects each scenario's figures;
/// unset in a plain test run, which only prints them.
const REPORT_DIR: &str = "TABSWARM_RELIABILITY_OUT";

/// Prints a scenario's figures and, under the reliability suite, saves them as
/// `<dir>/<scenario>.json` for its report.
pub(crate) fn report(scenario: &str, figures: Value) {
    println!("{scenario}: {figures}");
    if let Some(dir) = std::env::var_os(REPORT_DIR) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{scenario}.json")),
            serde_json::to_vec_pretty(&figures).unwrap(),
        )
        .unwrap();
    }
}

/// A count the reliability suite raises (`name` in the environment), or `fast` for
/// `cargo xtask test`.
pub(crate) fn scale(name: &str, fast: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(fast)
}
