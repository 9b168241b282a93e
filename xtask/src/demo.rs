//! `cargo xtask demo`: the main job: a relay and five nodes (four staked validators, one
//! trainer) on this machine, training the MLP on MNIST shards round after round, every round
//! committed by stake votes, and the volunteer page on http://127.0.0.1:8080/ (a tab opened
//! there joins as a trainer). The data lives on the network: the trainer node owns it and
//! ingests MNIST with `tabswarm-node data add` (sealed shards, an owner-signed manifest);
//! storage peers replicate the shards, and every node and tab trains on shards it fetched. The
//! run is open (its dataset key is in the genesis), so any volunteer's tab may read them. Prints per-round progress;
//! Ctrl-C stops everything cleanly and keeps each node's state for inspection. Four equal
//! validators survive the loss of one (3/4 of stake is more than 2/3): a node that dies is
//! reported and the rest keep going.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tabswarm_testnet::{Binaries, Spec, Testnet};

use crate::install;
use crate::sh::{self, Profile, Steps};
use crate::wasm;

pub(crate) fn run(rounds: Option<u64>) -> anyhow::Result<()> {
    let mut s = Steps::new();
    let data = s.step("data (data/mnist.tsd)", || {
        install::ensure_data(Profile::Release)
    })?;
    s.step("build tabswarm-node and tabswarm-relay (release)", || {
        install::build_bins(Profile::Release)
    })?;
    let pkg = s.step(
        "the volunteer page (wasm32, simd128 and relaxed SIMD, wasm-bindgen)",
        || {
            install::ensure_wasm_target()?;
            install::ensure_npm()?;
            wasm::build_browser_pkg()
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C reaches the nodes too (same process group); we only wait for them.
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let dir = sh::root().join("out").join("demo");
    let mut net = s.step(
        "start a relay, 4 validators and 1 trainer (the data's owner) on 127.0.0.1",
        || {
            let bins = Binaries {
                node: sh::native_bin(Profile::Release, "tabswarm-node"),
                relay: sh::native_bin(Profile::Release, "tabswarm-relay"),
            };
            let spec = Spec {
                metrics_base: Some(9464),
                ..Spec::new(4, 1)
                    .genesis(&["--name", "demo-mnist-mlp"])
                    .open_network_data(4)
            };
            let mut net = Testnet::create(&dir, &bins, &data, spec)?;
            net.start_all()?;
            // Every node answers its status (and so names its websocket and webrtc-direct
            // addresses) once it runs: without that wait the page was handed the relay alone,
            // and tabs reached the nodes only through relay circuits, too slowly to get their
            // updates into most blocks.
            let all: Vec<usize> = (0..net.nodes.len()).collect();
            net.wait_height(&all, 1, Duration::from_secs(180))?;
            Ok(net)
        },
    )?;
    let network = dir.join("network.json");
    std::fs::write(&network, net.for_browsers()?.to_string())
        .with_context(|| format!("writing {}", network.display()))?;
    let mut page = s.step("serve the volunteer page on 127.0.0.1:8080", || {
        sh::spawn_page_server(&pkg, &data, &network, 8080)
    })?;
    s.summary();
    eprintln!(
        "\nThe volunteer page: http://127.0.0.1:8080/  (open it; each tab joins as a trainer)"
    );
    eprintln!("Relay (what tabs dial besides the nodes; webrtc-direct and websocket):");
    for a in &net.relay_addrs {
        eprintln!("  {a}");
    }
    eprintln!("Nodes (Prometheus /metrics and JSON /status):");
    for i in 0..net.nodes.len() {
        let role = if i < 4 {
            "validator + trainer + storage"
        } else {
            "trainer + storage, owns the data"
        };
        eprintln!("  node{i} ({role}): http://127.0.0.1:{}/status", 9464 + i);
    }
    eprintln!(
        "Logs and state: {}   (Ctrl-C stops everything)\n",
        dir.display()
    );
    eprintln!(
        "{:>6}  {:>7}  {:>8}  {:>9}  {:>8}  {:>5}  {:>7}",
        "height", "updates", "samples", "test loss", "accuracy", "peers", "credit"
    );
    let mut shown = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(300));
        for i in net.newly_dead() {
            eprintln!(
                "node{i} is down (log: {}); the other nodes go on (four equal validators survive the loss of one)",
                net.nodes[i].log.display()
            );
        }
        if !net.any_running() {
            anyhow::bail!("every node stopped; see the logs in {}", dir.display());
        }
        let Some(status) = (0..net.nodes.len()).find_map(|i| net.status(i)) else {
            continue;
        };
        let height = status["height"].as_u64().unwrap_or(0);
        if height > shown {
            shown = height;
            let credits: Vec<String> = (0..net.nodes.len())
                .map(|i| {
                    net.status(i)
                        .and_then(|s| s["credit"].as_u64())
                        .unwrap_or(0)
                        .to_string()
                })
                .collect();
            eprintln!(
                "{height:>6}  {:>7}  {:>8}  {:>9.4}  {:>7.2}%  {:>5}  {:>7}",
                status["last_round_updates"].as_u64().unwrap_or(0),
                status["last_round_samples"].as_u64().unwrap_or(0),
                status["test_loss"].as_f64().unwrap_or(f64::NAN),
                status["test_accuracy"].as_f64().unwrap_or(f64::NAN) * 100.0,
                status["peers"].as_u64().unwrap_or(0),
                credits.join("/"),
            );
        }
        if rounds.is_some_and(|r| height >= r) {
            break;
        }
    }
    eprintln!("\nstopping the network...");
    let _ = page.kill();
    let _ = page.wait();
    net.stop_all()?;
    eprintln!(
        "stopped cleanly. Inspect a node: {} ledger --home {}",
        sh::native_bin(Profile::Release, "tabswarm-node").display(),
        dir.join("node0").display()
    );
    Ok(())
}
