//! The network end to end: real `tabswarm-relay` and `tabswarm-node` processes on 127.0.0.1
//! training MNIST together, every round committed by stake votes.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{FAST, Net, assert_same_block, heights, reach, serial};
use tabswarm_testnet::counter_sum;

/// Node `i`'s status once it is in sync with (at most one height behind) `others`.
fn in_sync_with(n: &Net, i: usize, others: &[usize]) -> Option<Value> {
    let lowest = heights(n, others).into_iter().min()?;
    n.status(i)
        .filter(|s| s["syncing"] == false && s["height"].as_u64().unwrap_or(0) + 1 >= lowest)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn three_validators_and_a_trainer_agree_and_learn() {
    let _serial = serial();
    let mut net = support::net("agree", 4, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    // The trainer knows the relay only by its QUIC address (a TLS handshake, unlike tcp's Noise).
    let quic = net.relay_addr("/quic-v1").unwrap().to_owned();
    net.start_via(3, &quic, &["--roles", "trainer"]).unwrap();
    let all = [0, 1, 2, 3];
    net.wait_until("every node at height 12", Duration::from_secs(180), |n| {
        heights(n, &all).iter().all(|h| *h >= 12)
    })
    .unwrap();
    for i in all {
        let s = net.status(i).unwrap();
        let acc = s["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.90, "node {i}: test accuracy {acc}");
        assert_eq!(s["rejected"]["bad_signature"], 0, "node {i}: {s}");
    }
    let trainer = net.status(3).unwrap();
    assert_eq!(trainer["roles"], serde_json::json!(["trainer"]));
    assert!(
        trainer["credit"].as_u64().unwrap() > 0,
        "the trainer-only node's updates were never included: {trainer}"
    );
    // Operators see what the transports carried (QUIC for the trainer's relay link).
    let metrics = net.metrics(3).unwrap();
    for direction in ["Inbound", "Outbound"] {
        let label = format!("direction=\"{direction}\"");
        let bytes = counter_sum(&metrics, "libp2p_bandwidth_bytes_total", &label);
        assert!(
            bytes > 1e5,
            "{direction} wire bytes {bytes} after 12 rounds:\n{metrics}"
        );
    }
    assert!(metrics.contains("quic-v1"), "no QUIC series:\n{metrics}");
    net.stop_all().unwrap();
    let ledgers = assert_same_block(&net, &all, 12);
    assert!(
        ledgers[3]["signer"].is_null(),
        "a trainer-only node never signs: {}",
        ledgers[3]
    );
    assert!(ledgers[0]["updates_included"].as_u64().unwrap() >= 12);
    // The committed model leaves as SafeTensors (the newest checkpoint: every 5 heights).
    let out = net.dir.join("model.safetensors");
    let o = std::process::Command::new(support::node_bin())
        .args(["export", "--home"])
        .arg(net.home(0))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(
        header.contains("fc1.weight") && header.contains("fc2.bias"),
        "{header}"
    );
}

#[test]
fn a_killed_validator_misses_nothing_and_never_double_signs() {
    let _serial = serial();
    // Four equal validators: with one down, 3/4 of stake is still more than 2/3.
    let mut net = support::net("kill9", 4, 4, FAST);
    for i in 0..4 {
        net.start(i, &[]).unwrap();
    }
    reach(&net, &[0, 1, 2, 3], 5, "height 5", 120);
    let before = net.status(3).unwrap();
    let t = std::time::Instant::now();
    net.kill9(3);
    let h0 = heights(&net, &[0, 1, 2]).into_iter().max().unwrap();
    reach(
        &net,
        &[0, 1, 2],
        h0 + 4,
        "commits without the killed validator",
        120,
    );
    eprintln!("kill9: commits went on without it after {:?}", t.elapsed());
    net.start(3, &[]).unwrap();
    net.wait_until(
        "the restarted validator caught up",
        Duration::from_secs(120),
        |n| in_sync_with(n, 3, &[0, 1, 2]).is_some_and(|s| s["height"].as_u64().unwrap() > h0 + 4),
    )
    .unwrap();
    eprintln!("kill9: caught up after {:?}", t.elapsed());
    let caught_up = net.height(3);
    net.wait_until(
        "the restarted validator votes again",
        Duration::from_secs(60),
        |n| {
            n.status(3)
                .is_some_and(|s| s["signer"]["height"].as_u64().unwrap_or(0) > caught_up)
        },
    )
    .unwrap();
    let after = net.status(3).unwrap();
    assert!(
        after["height"].as_u64() >= before["height"].as_u64(),
        "committed blocks lost: {before} then {after}"
    );
    assert_eq!(after["signer"]["refused_to_sign"], 0);
    let end = heights(&net, &[0, 1, 2, 3]).into_iter().min().unwrap();
    net.stop_all().unwrap();
    assert_same_block(&net, &[0, 1, 2, 3], end);
}

#[test]
fn a_late_joiner_syncs_blocks_and_a_checkpoint_then_takes_part() {
    let _serial = serial();
    let mut net = support::net("late", 4, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    reach(&net, &[0, 1, 2], 12, "height 12", 120);
    net.start(3, &["--roles", "trainer"]).unwrap();
    net.wait_until(
        "the late joiner caught up and contributed",
        Duration::from_secs(120),
        |n| in_sync_with(n, 3, &[0, 1, 2]).is_some_and(|s| s["credit"].as_u64().unwrap() > 0),
    )
    .unwrap();
    let end = heights(&net, &[0, 1, 2, 3]).into_iter().min().unwrap();
    net.stop_all().unwrap();
    let ledgers = assert_same_block(&net, &[0, 1, 2, 3], end);
    assert!(
        ledgers[3]["checkpoint_height"].as_u64().is_some(),
        "{}",
        ledgers[3]
    );
}

/// A relay closes circuits at its limits (time, bytes); relay-only peers must find each other
/// again every time, or they stay apart for good (an hour into a run with the relay's
/// defaults). Circuits here live 12 s; the relay must see the pair open circuits again after
/// the first ones closed, and both nodes must list each other as relayed peers afterwards.
#[test]
fn relay_only_peers_reconnect_when_their_circuit_hits_the_relays_limit() {
    let _serial = serial();
    let mut net = support::net_with("circuitlimit", 2, 2, FAST, &["--max-circuit-secs", "12"]);
    net.start(0, &["--relay-only"]).unwrap();
    net.start(1, &["--relay-only"]).unwrap();
    reach(&net, &[0, 1], 2, "height 2 through the relay", 120);
    net.wait_until(
        "a circuit opened 13 s or more after the first (the first ones closed at 12 s)",
        Duration::from_secs(60),
        |n| {
            let opened = circuit_openings(&n.relay_log());
            opened.first().is_some_and(|first| {
                opened
                    .iter()
                    .any(|t| (t - first).rem_euclid(86_400.0) >= 13.0)
            })
        },
    )
    .unwrap();
    net.wait_until(
        "both nodes reach each other through the relay again",
        Duration::from_secs(30),
        |n| {
            (0..2).all(|i| {
                let other = &n.nodes[1 - i].peer_id;
                n.status(i)
                    .is_some_and(|s| strings(&s["relayed_peers"]).contains(&other.as_str()))
            })
        },
    )
    .unwrap();
    net.stop_all().unwrap();
}

/// Seconds of the day at which the relay logged "circuit opened".
fn circuit_openings(relay_log: &str) -> Vec<f64> {
    relay_log
        .lines()
        .filter(|l| l.contains("circuit opened"))
        .filter_map(|l| {
            // 2026-12-03T08:54:29.539638Z ...
            let time = l.split_whitespace().next()?.split('T').nth(1)?;
            let mut hms = time.trim_end_matches('Z').split(':');
            let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
            Some(
                h.parse::<f64>().ok()? * 3600.0
                    + m.parse::<f64>().ok()? * 60.0
                    + s.parse::<f64>().ok()?,
            )
        })
        .collect()
}

#[test]
fn two_nodes_that_reach_each_other_only_through_the_relay_still_commit() {
    let _serial = serial();
    let mut net = support::net("relayonly", 2, 2, FAST);
    net.start(0, &["--relay-only"]).unwrap();
    net.start(1, &["--relay-only"]).unwrap();
    net.wait_until(
        "height 5 through the relay",
        Duration::from_secs(180),
        |n| heights(n, &[0, 1]).iter().all(|h| *h >= 5),
    )
    .unwrap();
    for i in 0..2 {
        let s = net.status(i).unwrap();
        let other = &net.nodes[1 - i].peer_id;
        let relayed = strings(&s["relayed_peers"]);
        let direct = strings(&s["direct_peers"]);
        assert!(
            relayed.contains(&other.as_str()),
            "node {i} does not reach {other} through the relay: {s}"
        );
        assert!(
            !direct.contains(&other.as_str()),
            "node {i} has a direct connection: {s}"
        );
        assert!(
            strings(&s["listen"])
                .iter()
                .all(|a| a.contains("p2p-circuit")),
            "{s}"
        );
    }
    let end = heights(&net, &[0, 1]).into_iter().min().unwrap();
    net.stop_all().unwrap();
    assert_same_block(&net, &[0, 1], end);
}

#[test]
fn the_whole_network_restarts_where_it_stopped() {
    let _serial = serial();
    let mut net = support::net("restart", 3, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    reach(&net, &[0, 1, 2], 6, "height 6", 120);
    net.stop_all().unwrap();
    let stopped: Vec<u64> = (0..3)
        .map(|i| net.ledger(i, 1).unwrap()["height"].as_u64().unwrap())
        .collect();
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    // Each node restores its own parameters from disk: none of them has a peer ahead of it.
    let top = stopped.iter().copied().max().unwrap();
    reach(
        &net,
        &[0, 1, 2],
        top + 3,
        "commits after a full restart",
        120,
    );
    net.stop_all().unwrap();
    let after: Vec<u64> = (0..3)
        .map(|i| net.ledger(i, 1).unwrap()["height"].as_u64().unwrap())
        .collect();
    assert!(
        after.iter().zip(&stopped).all(|(a, s)| a > s),
        "{stopped:?} -> {after:?}"
    );
    assert_same_block(&net, &[0, 1, 2], top + 2);
}
