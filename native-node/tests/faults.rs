//! Faults on real processes (loopback), the fast subset of the reliability suite: a third of
//! stake frozen with SIGSTOP halts commits, which resume once it wakes; the relay killed and
//! started again on its addresses, and a node that reaches the others only through it comes
//! back. Each scenario ends by stopping every node and checking their ledgers agree block for
//! block (no conflicting commit, no double signature, certificates of more than 2/3 of
//! stake) and that training went on after the fault (test loss fell).

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use support::{FAST, Net, assert_same_block, heights, reach, serial};

fn test_loss(net: &Net, i: usize) -> f64 {
    net.status(i)
        .and_then(|s| s["test_loss"].as_f64())
        .unwrap_or(f64::NAN)
}

/// Stops every node, then checks their ledgers agree at `height` ([`assert_same_block`]).
fn assert_ledgers_agree(net: &mut Net, nodes: &[usize], height: u64) {
    net.stop_all().unwrap();
    assert_same_block(net, nodes, height);
}

#[test]
fn a_frozen_third_of_stake_halts_commits_and_they_resume_when_it_wakes() {
    let _serial = serial();
    let mut net = support::net("pause", 3, 3, FAST);
    net.start_all().unwrap();
    let all = [0, 1, 2];
    reach(&net, &all, 3, "three heights before the fault", 120);
    let loss_before = test_loss(&net, 0);

    net.pause(2).unwrap();
    // A height in flight may still finish with votes node 2 sent before it froze.
    std::thread::sleep(Duration::from_secs(3));
    let frozen_at = net.height(0).max(net.height(1));
    std::thread::sleep(Duration::from_secs(10));
    let during = net.height(0).max(net.height(1));
    assert!(
        during <= frozen_at,
        "heights {frozen_at} -> {during} with a third of stake frozen: committed without 2/3"
    );

    net.resume(2).unwrap();
    let woke = Instant::now();
    reach(
        &net,
        &all,
        during + 3,
        "three heights after the wake-up",
        90,
    );
    let recovered = woke.elapsed();
    println!(
        "pause: halted at height {during} for 10 s; {:.1} s after SIGCONT every node had \
         committed 3 more",
        recovered.as_secs_f64()
    );
    net.wait_until("the test loss to fall", Duration::from_secs(60), |n| {
        test_loss(n, 0) < loss_before
    })
    .unwrap();
    let top = heights(&net, &all).into_iter().min().unwrap();
    assert_ledgers_agree(&mut net, &all, top);
}

#[test]
fn the_relay_killed_and_restarted_on_its_addresses_brings_a_relay_only_node_back() {
    let _serial = serial();
    let mut net = support::net("relay-restart", 4, 4, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    // Node 3 reaches the others only through relay circuits.
    net.start(3, &["--relay-only"]).unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 3, "every node at height 3", 120);

    net.kill_relay();
    let killed = net.height(0);
    // Three of four equal validators are more than 2/3: commits go on without node 3.
    reach(
        &net,
        &[0, 1, 2],
        killed + 3,
        "commits without the relay",
        60,
    );
    let behind = net.height(3);

    net.restart_relay().unwrap();
    let restarted = Instant::now();
    let target = net.height(0) + 2;
    reach(&net, &all, target, "node 3 back through the relay", 90);
    println!(
        "relay: down while the others went from {killed} to {}; node 3 stayed at {behind}, \
         caught up {:.1} s after the relay came back",
        target - 2,
        restarted.elapsed().as_secs_f64()
    );
    assert_ledgers_agree(&mut net, &all, target);
}
