//! Compression benchmark: bytes per update and test accuracy after a fixed number of heights
//! for each genesis `compression`, on real MNIST jobs (the MLP, the shipped `jobs::run`)
//! among four simulated validators that also train (`tabswarm_sim::peers`, virtual time).
//! Every setting sees the same compute: the same heights, peers and local steps.
//!
//! `TABSWARM_DATA=data/mnist.tsd cargo bench -p tabswarm-sim --bench compression -- --out FILE
//! [--runs N] [--heights N]` writes one record per run (run `i` uses seed `i + 1`); `cargo
//! xtask bench --only compression` folds them into `bench/results/compression.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use tabswarm_consensus::genesis::Compression;
use tabswarm_peer::Event;
use tabswarm_peer::jobs::DataPlan;
use tabswarm_sim::peers::{ALL, JobModel, PeerConfig, PeerSim, small_rules};

mod support;

const SETTINGS: [(&str, Compression); 4] = [
    ("none", Compression::None),
    ("int8", Compression::Int8),
    ("top_k_10pct", Compression::TopK { per_mille: 100 }),
    ("top_k_1pct", Compression::TopK { per_mille: 10 }),
];
const PEERS: usize = 4;

/// Bytes per update and the accuracy tested at `heights` for one setting.
fn one(
    plan: &Arc<DataPlan>,
    seed: u64,
    compression: Compression,
    heights: u64,
) -> serde_json::Value {
    let mut config = PeerConfig::new(seed, PEERS, &[100; PEERS]);
    config.rules = *plan.rules();
    config.compression = compression;
    let mut net = PeerSim::new(config, JobModel::Real(plan.clone())).expect("sim");
    for i in 0..PEERS {
        net.start(i, ALL).expect("start");
    }
    let mut sizes: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    let tested = |n: &PeerSim| {
        n.events(0).iter().find_map(|e| match e {
            Event::Tested {
                height, accuracy, ..
            } if *height >= heights => Some((*height, *accuracy)),
            _ => None,
        })
    };
    let done = net
        .run_until(3_600_000, |n| {
            for (id, e) in n.peer(0).app().pool().iter() {
                if e.delta.is_some() {
                    sizes.insert(*id, e.update.header.payload_len);
                }
            }
            tested(n).is_some()
        })
        .expect("sim");
    assert!(done, "{compression:?}: no test at height {heights}");
    let (height, accuracy) = tested(&net).expect("tested");
    let dense = 4 * net.peer(0).app().params().len() + tabswarm_peer::payload::HEADER_LEN;
    let mean = sizes.values().map(|&b| f64::from(b)).sum::<f64>() / sizes.len().max(1) as f64;
    json!({
        "updates_seen": sizes.len(),
        "bytes_per_update": mean,
        "dense_bytes_per_update": dense,
        "fewer_bytes_than_f32": dense as f64 / mean,
        "test_accuracy": accuracy,
        "tested_height": height,
    })
}

fn main() {
    let runs: u64 = support::number("--runs", 5);
    let heights: u64 = support::number("--heights", 20);
    let dataset = support::mnist();
    let rules = tabswarm_consensus::genesis::TrainingRules {
        local_steps: 20,
        batch_size: 32,
        shards: 16,
        ..small_rules()
    };
    let plan = Arc::new(DataPlan::new(&dataset, &rules).expect("plan"));
    let records: Vec<serde_json::Value> = (0..runs)
        .map(|run| {
            let mut record = serde_json::Map::new();
            for (name, compression) in SETTINGS {
                let r = one(&plan, run + 1, compression, heights);
                eprintln!("run {}/{runs} {name}: {r}", run + 1);
                record.insert(name.into(), r);
            }
            serde_json::Value::Object(record)
        })
        .collect();
    let report = json!({
        "runs": records,
        "setup": {
            "peers": PEERS,
            "heights": heights,
            "model": "mlp",
            "local_steps": rules.local_steps,
            "batch_size": rules.batch_size,
        },
    });
    support::write(&report);
}
