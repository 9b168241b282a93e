//! The run's data on the network, end to end on real processes (DESIGN.md, "Data"): the owner
//! adds MNIST with `data add`, storage nodes replicate every shard to three holders and
//! repair lost ones, validators train and score on fetched shards (they get no local copy),
//! a damaged shard is detected and fetched again, a node without a grant stores ciphertext it
//! cannot read until it is granted, and a member left out of a new epoch cannot read it.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use support::attacker::Attacker;
use tabswarm_consensus::genesis::{Genesis, unhex32};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_core::chunks::Manifest;
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{jobs, payload};

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{FAST, Net, serial};
use tabswarm_testnet::counter_sum;

/// Nodes 0 and 1 validate and train on four training shards, node 2 trains on two; none of
/// them stores. Node 6 owns the data (stores only: the validators never restart, so consensus
/// goes on while the owner stops to grant or rotate); nodes 3, 4 and 7 store; node 5 stores
/// and trains but has no grant.
fn data_net() -> Net {
    support::net_spec("data", 8, 2, FAST, |spec| spec.network_data(OWNER, &[5]))
}

const OWNER: usize = 6;
const STORAGE: [usize; 5] = [3, 4, 5, 6, 7];

/// Storage-only nodes; node 5 also trains, so it wants to read what it stores.
fn start_storage(net: &mut Net, i: usize) {
    let roles = if i == 5 { "trainer,storage" } else { "storage" };
    net.start(i, &["--roles", roles]).unwrap();
}

fn data(net: &Net, i: usize) -> Option<Value> {
    net.status(i)
        .map(|s| s["data"].clone())
        .filter(|d| !d.is_null())
}

fn shard_count(net: &Net) -> u64 {
    data(net, OWNER).unwrap()["shards"].as_u64().unwrap()
}

fn every_shard_has(net: &Net, live: &[usize], n: usize) -> bool {
    let h = net.shard_holders(live);
    let shards = shard_count(net);
    (0..shards).all(|s| h.get(&s).is_some_and(|v| v.len() >= n))
}

/// A trainer outside the closed run (a fresh key: no grant, so no membership) announces
/// harmless updates and serves their payloads. Validators refuse them: never included, never
/// credited.
fn closed_run_refuses_a_stranger(net: &Net) {
    let genesis = Genesis::from_json(&std::fs::read_to_string(&net.genesis).unwrap()).unwrap();
    let run = genesis.run_id();
    let stranger = Keypair::from_seed([77; 32]);
    let zeros = vec![0f32; jobs::initial_params(&genesis.training).unwrap().len()];
    let (bytes, _) =
        payload::Encoder::default().encode(&stranger.address(), &zeros, genesis.compression);
    let manifest = Manifest::of(&bytes);
    let address = manifest.hash();
    let served = bytes.clone();
    let attacker = Attacker::spawn(&genesis, move |request| match request {
        Request::Manifest { address: a } if *a == address => Response::Manifest(manifest.clone()),
        Request::Chunk { address: a, index } if *a == address => manifest
            .range(*index as usize)
            .map(|r| Response::Chunk(served[r].to_vec().into()))
            .unwrap_or(Response::NotFound),
        _ => Response::NotFound,
    });
    for i in [0, 1] {
        attacker.dial(support::direct_tcp(&net.status(i).unwrap()));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(status) = net.status(0) {
            let header = UpdateHeader {
                height: status["height"].as_u64().unwrap() + 1,
                base_param_hash: unhex32(status["param_hash"].as_str().unwrap()).unwrap(),
                trainer: stranger.address(),
                samples: jobs::update_weight(&genesis.training),
                loss_before: 2.3,
                loss_after: 0.1,
                payload_hash: address,
                payload_len: bytes.len() as u32,
            };
            let signed = SignedUpdate::sign(header, &stranger, &run);
            attacker.publish(Topic::Updates, signed.encode().unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let refused: u64 = [0, 1]
        .iter()
        .filter_map(|&i| net.status(i))
        .map(|s| s["rejected"]["non_members_refused"].as_u64().unwrap())
        .sum();
    assert!(
        refused > 0,
        "the validators never saw the stranger's announcements"
    );
    // Its payload was there to fetch (peers that do not judge membership did): with a mean
    // or robust rule and no membership check, a zero update would be included and credited.
    let seen = attacker.seen();
    println!("stranger's payload requests: {seen:?}; refused by validators: {refused}");
    let stranger_hex: String = stranger
        .address()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        net.credit_of(0, &stranger_hex),
        Some(0),
        "the stranger was credited"
    );
    drop(attacker);
}

#[test]
fn the_runs_data_lives_on_the_network_replicated_repaired_and_readable_only_with_a_grant() {
    let _serial = serial();
    let mut net = data_net();
    for i in [0, 1] {
        net.start(i, &["--roles", "trainer,validator", "--train-shards", "4"])
            .unwrap();
    }
    net.start(2, &["--roles", "trainer", "--train-shards", "2"])
        .unwrap();
    for i in 3..8 {
        start_storage(&mut net, i);
    }
    let all = STORAGE.to_vec();

    // Validators train and score on shards they fetched: no local copy exists for them.
    net.wait_until(
        "the validators have the data and commit",
        Duration::from_secs(90),
        |n| {
            [0, 1]
                .iter()
                .all(|&i| data(n, i).is_some_and(|d| d["ready"] == true) && n.height(i) >= 3)
        },
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&net.nodes[1].log)
            .unwrap()
            .contains("training on the run's shards from the network"),
        "{}",
        net.logs()
    );
    net.wait_until(
        "node 1 reports test accuracy",
        Duration::from_secs(60),
        |n| {
            n.status(1)
                .is_some_and(|s| s["test_accuracy"].as_f64().is_some())
        },
    )
    .unwrap();

    closed_run_refuses_a_stranger(&net);

    // Readers hold only what they train and score on.
    let d1 = data(&net, 1).unwrap();
    assert_eq!(d1["held"].as_array().unwrap().len(), 4 + 2, "{d1}");

    // Replication: every shard on three storage peers (four where the owner, which keeps all
    // of its data, is not among the three ranked first), and no more.
    let t0 = Instant::now();
    net.wait_until(
        "every shard on three to four storage holders",
        Duration::from_secs(90),
        |n| every_shard_has(n, &all, 3) && n.shard_holders(&all).values().all(|on| on.len() <= 4),
    )
    .unwrap();
    println!(
        "replicated to 3 holders {:.1} s after the validators were ready; holders {:?}",
        t0.elapsed().as_secs_f64(),
        net.shard_holders(&all)
    );

    // No grant: node 5 stores and serves ciphertext it cannot read.
    net.wait_until("node 5 holds shards", Duration::from_secs(60), |n| {
        data(n, 5).is_some_and(|d| !d["held"].as_array().unwrap().is_empty())
    })
    .unwrap();
    let d5 = data(&net, 5).unwrap();
    assert!(!d5["held"].as_array().unwrap().is_empty(), "{d5}");
    assert_eq!(d5["readable"], false, "{d5}");
    assert_eq!(d5["ready"], false, "{d5}");

    // Kill two holders of a shard (storage-only nodes with a grant: both validators are
    // needed for a quorum, node 5 for later); the shard stays retrievable and is back on three
    // live holders within bounded time.
    let h = net.shard_holders(&all);
    let others = [3, 4, 7];
    let (&shard, on) = h
        .iter()
        .find(|(_, v)| v.iter().filter(|i| others.contains(i)).count() >= 2)
        .expect("a shard with two storage-only holders");
    let killed: Vec<usize> = on
        .iter()
        .copied()
        .filter(|i| others.contains(i))
        .take(2)
        .collect();
    for &i in &killed {
        net.kill9(i);
    }
    let live: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !killed.contains(i))
        .collect();
    assert!(
        net.shard_holders(&live)[&shard].len() < 3,
        "the kill leaves the shard under three live holders"
    );
    let t0 = Instant::now();
    net.wait_until(
        "the shard is back on three live holders",
        Duration::from_secs(60),
        |n| {
            n.shard_holders(&live)
                .get(&shard)
                .is_some_and(|v| v.len() >= 3)
        },
    )
    .unwrap();
    println!(
        "shard {shard}: holders {killed:?} killed, repaired in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A shard damaged on disk: detected at start, reported, fetched again; training goes on.
    // Three storage peers are left, so each holds every shard.
    let victim = *others.iter().find(|i| !killed.contains(i)).unwrap();
    let shards = shard_count(&net) as usize;
    let holds_all =
        |n: &Net| data(n, victim).is_some_and(|d| d["held"].as_array().unwrap().len() == shards);
    net.wait_until(
        "the last storage-only node holds every shard",
        Duration::from_secs(60),
        holds_all,
    )
    .unwrap();
    assert!(net.stop(victim));
    let dir = std::fs::read_dir(net.nodes[victim].home.join("data/epoch-1/shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none())
        .unwrap();
    let mut bytes = std::fs::read(&dir).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dir, bytes).unwrap();
    let height = net.height(0);
    start_storage(&mut net, victim);
    net.wait_until(
        "the damaged shard is reported and held again",
        Duration::from_secs(60),
        |n| {
            n.metrics(victim)
                .is_some_and(|m| counter_sum(&m, "tabswarm_shards_damaged_total", "") >= 1.0)
                && holds_all(n)
        },
    )
    .unwrap();
    net.wait_until("training goes on", Duration::from_secs(60), |n| {
        n.height(0) >= height + 2
    })
    .unwrap();

    // Without a grant, reading fails with what to do; granted, the same node reads.
    assert!(net.stop(5));
    let genesis = net.genesis.to_str().unwrap().to_owned();
    let out = std::env::temp_dir().join(format!("tabswarm-data-{}.tsd", std::process::id()));
    let get = |net: &Net| {
        net.data_command(
            5,
            &["get", "--run", &genesis, "--out", out.to_str().unwrap()],
        )
    };
    let err = get(&net).unwrap_err().to_string();
    assert!(
        err.contains("holds no grant") && err.contains("data grant --member"),
        "{err}"
    );
    assert!(net.stop(OWNER));
    net.grant(5).unwrap();
    start_storage(&mut net, OWNER);
    start_storage(&mut net, 5);
    net.wait_until("node 5 reads once granted", Duration::from_secs(60), |n| {
        data(n, 5).is_some_and(|d| d["readable"] == true && d["ready"] == true)
    })
    .unwrap();
    assert!(net.stop(5));
    let said = get(&net).unwrap();
    assert!(said.contains("samples"), "{said}");
    let _ = std::fs::remove_file(&out);

    // A new epoch leaving node 2 out: it can no longer read; the others can.
    assert!(net.stop(OWNER));
    net.revoke(2);
    net.add_data().unwrap();
    start_storage(&mut net, OWNER);
    start_storage(&mut net, 5);
    net.wait_until(
        "epoch 2: node 1 reads, node 2 cannot",
        Duration::from_secs(90),
        |n| {
            data(n, 1).is_some_and(|d| d["epoch"] == 2 && d["ready"] == true)
                && data(n, 2).is_some_and(|d| d["epoch"] == 2 && d["readable"] == false)
        },
    )
    .unwrap();
    // Blocks go on in the new epoch. (They stopped in 3 of about 14 runs while validators
    // kept the revoked member's update of the height in progress and named it in every
    // proposal, which every other validator refused as a non-member's.)
    let h = net.height(1);
    net.wait_until("blocks go on in epoch 2", Duration::from_secs(60), |n| {
        n.height(1) >= h + 2
    })
    .unwrap();
    net.stop_all().unwrap();
}
