//! The run's data on the network, measured on real processes (`bench/results/data.json`,
//! `network`). Each run is a fresh network on loopback: three validators (training on every
//! shard, storing none), four storage-only nodes and the data's owner (storage only),
//! replication 3, an open run (the fresh trainer needs no grant), MNIST sealed with `data
//! add` into the owner's home. Holders are counted among the storage nodes: readers keep the
//! shards they read but do not store for others.
//!
//! - **Settling**: from the start until every shard is on at least three storage holders,
//!   then 30 s more for surplus copies to go (a holder drops a copy it does not rank for once
//!   the peers that rank have proven theirs); the shard bytes each storage node then keeps on
//!   disk, and the copies per shard.
//! - **Fetch**: a fresh trainer (no local copy, every training shard) starts; the time until
//!   it holds and has opened every shard, and the shards' bytes over that time. Process start,
//!   dialling and the manifest are inside the figure: it is what an operator waits.
//! - **Repair**: two holders of a shard killed with kill -9; the time until it is on three
//!   live holders again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tabswarm_testnet::{Binaries, Spec, Testnet};

use crate::sh::{self, Profile};

const VALIDATORS: usize = 3;
/// Storage-only nodes, the owner last (five, so three are left after two are killed).
const STORAGE: [usize; 5] = [3, 4, 5, 6, 7];
const OWNER: usize = 7;
const REPLICATION: usize = 3;
/// How long after replication the stored bytes are read.
const SURPLUS_WAIT: Duration = Duration::from_secs(30);

/// Shard bytes a node keeps on disk (every epoch).
fn bytes_on_disk(home: &Path) -> u64 {
    let mut total = 0;
    let Ok(epochs) = std::fs::read_dir(home.join("data")) else {
        return 0;
    };
    for epoch in epochs.flatten() {
        let Ok(shards) = std::fs::read_dir(epoch.path().join("shards")) else {
            continue;
        };
        total += shards
            .flatten()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
    }
    total
}

/// One run on a fresh network in `dir`.
pub(crate) fn one_run(bins: &Binaries, data: &Path, dir: &Path) -> anyhow::Result<Value> {
    let spec = Spec::new(VALIDATORS, STORAGE.len())
        .genesis(tabswarm_testnet::FAST)
        .open_network_data(OWNER);
    let mut net = Testnet::create(dir, bins, data, spec)?;
    let started = Instant::now();
    for i in 0..VALIDATORS {
        net.start(i, &["--roles", "validator,trainer"])?;
    }
    for i in STORAGE {
        net.start(i, &["--roles", "storage"])?;
    }
    let storage: Vec<usize> = STORAGE.to_vec();
    let owner_shards = |n: &Testnet| n.status(OWNER).and_then(|s| s["data"]["shards"].as_u64());
    net.wait_until(
        "the owner serving its shards",
        Duration::from_secs(60),
        |n| owner_shards(n).is_some_and(|s| s > 0),
    )?;
    let shards = owner_shards(&net).context("the owner reports no shards")?;
    let replicated = |n: &Testnet| {
        let h = n.shard_holders(&storage);
        (0..shards).all(|s| h.get(&s).is_some_and(|v| v.len() >= REPLICATION))
    };
    net.wait_until(
        "every shard on three storage holders",
        Duration::from_secs(240),
        replicated,
    )?;
    let settle_s = started.elapsed().as_secs_f64();
    std::thread::sleep(SURPLUS_WAIT);
    let copies: Vec<usize> = net.shard_holders(&storage).values().map(Vec::len).collect();
    let dataset_bytes = bytes_on_disk(net.home(OWNER)).max(1);
    let per_holder: Vec<u64> = storage
        .iter()
        .map(|&i| bytes_on_disk(net.home(i)))
        .collect();
    let stored: u64 = per_holder.iter().sum();

    let reader = net.add_node()?;
    let t0 = Instant::now();
    net.start(reader, &["--roles", "trainer"])?;
    net.wait_until(
        "the fresh trainer holds and reads every shard",
        Duration::from_secs(120),
        |n| {
            n.status(reader).is_some_and(|s| {
                s["data"]["ready"] == true
                    && s["data"]["held"].as_array().map(Vec::len) == Some(shards as usize)
            })
        },
    )?;
    let fetch_s = t0.elapsed().as_secs_f64();
    let fetched = bytes_on_disk(net.home(reader));

    // Two holders of a shard (the validators keep the chain going; the repair does not
    // need it).
    let h = net.shard_holders(&storage);
    let (&shard, on) = h
        .iter()
        .find(|(_, v)| v.iter().filter(|i| STORAGE.contains(i)).count() >= 2)
        .context("no shard with two storage-only holders")?;
    let killed: Vec<usize> = on
        .iter()
        .copied()
        .filter(|i| STORAGE.contains(i))
        .take(2)
        .collect();
    for &i in &killed {
        net.kill9(i);
    }
    let live: Vec<usize> = storage
        .iter()
        .copied()
        .filter(|i| !killed.contains(i))
        .collect();
    let t0 = Instant::now();
    net.wait_until(
        "the shard back on three live holders",
        Duration::from_secs(120),
        |n| {
            n.shard_holders(&live)
                .get(&shard)
                .is_some_and(|v| v.len() >= REPLICATION)
        },
    )?;
    let repair_s = t0.elapsed().as_secs_f64();
    net.stop_all()?;
    Ok(json!({
        "shards": shards,
        "storage_peers": storage.len(),
        "replication": REPLICATION,
        "dataset_sealed_bytes": dataset_bytes,
        "replicated_s": settle_s,
        "copies_per_shard_mean": copies.iter().sum::<usize>() as f64 / copies.len().max(1) as f64,
        "copies_per_shard_max": copies.iter().max().copied().unwrap_or(0),
        "bytes_per_holder_mean": stored as f64 / storage.len() as f64,
        "bytes_per_holder_max": per_holder.iter().max().copied().unwrap_or(0),
        "copies_stored_over_dataset": stored as f64 / dataset_bytes as f64,
        "fetch_all_shards_s": fetch_s,
        "fetch_bytes": fetched,
        "fetch_mb_s": fetched as f64 / 1e6 / fetch_s,
        "repair_two_of_three_killed_s": repair_s,
    }))
}

/// `runs` runs under the cache's scratch folder, with the release binaries.
pub(crate) fn runs(data: &Path, runs: usize) -> anyhow::Result<Vec<Value>> {
    let bins = Binaries {
        node: sh::native_bin(Profile::Release, "tabswarm-node"),
        relay: sh::native_bin(Profile::Release, "tabswarm-relay"),
    };
    let dir = sh::cache().join("bench").join("data-network");
    (0..runs)
        .map(|k| {
            eprintln!("data on the network: run {} of {runs}", k + 1);
            let run = one_run(&bins, data, &dir)?;
            eprintln!("{run}");
            Ok(run)
        })
        .collect()
}
