//! Faults on real processes (loopback), the fast subset of the reliability suite: a third of
//! stake frozen with SIGSTOP halts commits, which resume once it wakes; the relay killed and
//! started again on its addresses, and a node that reaches the others only through it comes
//! back; a node whose disk fills stops with a clear error and, given room, comes back with
//! nothing lost (its home on a tmpfs the test mounts: root, as the suite assumes). Each scenario ends by stopping every node and checking their ledgers agree block for
//! block (no conflicting commit, no double signature, certificates of more than 2/3 of
//! stake) and that training went on after the fault (test loss fell).

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::{FAST, Net, assert_same_block, heights, reach, report, scale, serial};
use tabswarm_testnet::{Host, Impairment, Spec};

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
    report(
        "pause",
        json!({
            "halted_at": during,
            "halted_s": 10,
            "recover_s": recovered.as_secs_f64(),
            "blocks_after": 3,
        }),
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
    report(
        "relay_restart",
        json!({
            "committed_without_relay": target - 2 - killed,
            "relay_only_node_stayed_at": behind,
            "recover_s": restarted.elapsed().as_secs_f64(),
        }),
    );
    assert_ledgers_agree(&mut net, &all, target);
}

/// Two validators and the relay on one side, two validators on the other, every packet
/// between the sides dropped (network namespaces, nftables): neither half holds more than
/// 2/3 of stake, so nothing commits; once healed, commits resume within 20 s and every node
/// ends on the same chain.
#[test]
fn a_half_and_half_partition_halts_commits_and_they_resume_soon_after_it_heals() {
    let _serial = serial();
    let cut_secs = scale("TABSWARM_PARTITION_SECS", 10);
    let mut net = support::net_spec("partition", 4, 4, FAST, Spec::isolated);
    net.start_all().unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 3, "every node at height 3", 120);
    let loss_before = test_loss(&net, 0);

    let a = [Host::Relay, Host::Node(0), Host::Node(1)];
    let b = [Host::Node(2), Host::Node(3)];
    net.hosts().unwrap().partition(&a, &b).unwrap();
    // A height in flight may still finish with votes sent before the cut.
    std::thread::sleep(Duration::from_secs(3));
    let cut_at = heights(&net, &all).into_iter().max().unwrap();
    std::thread::sleep(Duration::from_secs(cut_secs));
    let during = heights(&net, &all).into_iter().max().unwrap();
    assert!(
        during <= cut_at,
        "heights {cut_at} -> {during} while split 50/50: a half committed without 2/3 of stake"
    );

    net.hosts().unwrap().heal().unwrap();
    let healed = Instant::now();
    reach(
        &net,
        &all,
        during + 1,
        "a commit on every node after the heal",
        20,
    );
    let first_commit = healed.elapsed();
    reach(&net, &all, during + 3, "three heights after the heal", 60);
    net.wait_until("the test loss to fall", Duration::from_secs(60), |n| {
        test_loss(n, 0) < loss_before
    })
    .unwrap();
    report(
        "partition",
        json!({
            "split": "relay + 2 validators | 2 validators",
            "cut_s": cut_secs,
            "commits_while_cut": during.saturating_sub(cut_at),
            "recover_s": first_commit.as_secs_f64(),
            "three_heights_s": healed.elapsed().as_secs_f64(),
        }),
    );
    let top = heights(&net, &all).into_iter().min().unwrap();
    assert_ledgers_agree(&mut net, &all, top);
}

/// Every host delays what it sends to the others by 100 ms (200 ms round trips) and drops 2%
/// of it: consensus, gossip and update fetches all cross the slow, lossy links, and blocks
/// still commit; after the links are healed, every node ends on the same chain.
#[test]
fn round_trips_of_200_ms_and_2_percent_loss_between_all_peers_still_commit() {
    let _serial = serial();
    let heights_wanted = scale("TABSWARM_IMPAIRED_HEIGHTS", 3);
    let mut net = support::net_spec("slow-links", 4, 4, FAST, Spec::isolated);
    net.start_all().unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 3, "every node at height 3", 120);
    let loss_before = test_loss(&net, 0);

    let impairment = Impairment {
        delay: Duration::from_millis(100),
        loss_per_mille: 20,
    };
    net.hosts().unwrap().impair(impairment, 7).unwrap();
    let impaired = Instant::now();
    let from = heights(&net, &all).into_iter().max().unwrap();
    reach(
        &net,
        &all,
        from + heights_wanted,
        "commits over 200 ms round trips with 2% loss",
        240,
    );
    let took = impaired.elapsed();
    let (seen, dropped) = net.hosts().unwrap().impaired_packets();
    assert!(
        seen > 1_000,
        "only {seen} packets crossed the impaired links"
    );
    let lost = dropped as f64 / seen as f64;
    assert!(
        (0.01..0.03).contains(&lost),
        "{dropped} of {seen} packets dropped: not the 2% asked"
    );
    net.hosts().unwrap().heal().unwrap();
    let healed_from = heights(&net, &all).into_iter().max().unwrap();
    reach(&net, &all, healed_from + 2, "commits after the heal", 60);
    net.wait_until("the test loss to fall", Duration::from_secs(60), |n| {
        test_loss(n, 0) < loss_before
    })
    .unwrap();
    report(
        "slow_lossy_links",
        json!({
            "rtt_ms": 200,
            "loss_per_mille_each_way": 20,
            "heights": heights_wanted,
            "seconds_for_heights": took.as_secs_f64(),
            "seconds_per_height": took.as_secs_f64() / heights_wanted as f64,
            "packets_seen": seen,
            "packets_dropped": dropped,
        }),
    );
    let top = heights(&net, &all).into_iter().min().unwrap();
    assert_ledgers_agree(&mut net, &all, top);
}

/// Kill -9 each validator in turn at random points of its work (mid-vote, mid-write,
/// mid-training: wherever the random wait lands) and start it again: a restarted node
/// never reports less than it had committed before the kill, the others keep committing,
/// and once the kills stop every node is in step on the same chain. In the fast form each
/// victim is back in step before the next kill; the reliability suite also overlaps them.
#[test]
fn validators_killed_9_in_turn_at_random_points_lose_no_committed_block() {
    let _serial = serial();
    let kills = scale("TABSWARM_KILLS", 12);
    // With overlap (the reliability suite), the next kill may come while the last victim is
    // still catching up, so two validators can be out at once.
    let overlap = scale("TABSWARM_KILL_OVERLAP", 0) == 1;
    let seed = scale("TABSWARM_FAULT_SEED", 7);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = support::net("kill9", 4, 4, FAST);
    net.start_all().unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 3, "every node at height 3", 120);
    let loss_before = test_loss(&net, 0);
    let start_height = net.height(0);
    let started = Instant::now();
    let mut restart_ms = Vec::new();
    for k in 0..kills {
        let victim = (k % 4) as usize;
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2_000)));
        let committed = net.height(victim);
        net.kill9(victim);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        net.start(victim, &[]).unwrap();
        let restarted = Instant::now();
        net.wait_until(
            &format!("node {victim} to answer after kill {k}"),
            Duration::from_secs(60),
            |n| n.status(victim).is_some(),
        )
        .unwrap();
        restart_ms.push(restarted.elapsed().as_millis() as u64);
        let after = net.height(victim);
        assert!(
            after >= committed,
            "kill {k} (seed {seed}): node {victim} had committed {committed}, came back at \
             {after}: a committed block was lost"
        );
        if !overlap {
            // Back in step before the next kill: one validator out at a time.
            let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
            let top = heights(&net, &others).into_iter().min().unwrap();
            reach(&net, &[victim], top, "the restarted node back in step", 60);
        }
    }
    let killing = started.elapsed();
    let during = net.height(0).max(net.height(1)) - start_height;
    let last_restart = Instant::now();
    let target = all.iter().map(|&i| net.height(i)).max().unwrap() + 2;
    reach(
        &net,
        &all,
        target,
        "every node in step after the kills",
        120,
    );
    let recovered = last_restart.elapsed();
    net.wait_until("the test loss to fall", Duration::from_secs(60), |n| {
        test_loss(n, 0) < loss_before
    })
    .unwrap();
    assert!(
        during > 0,
        "nothing committed while validators were killed one at a time"
    );
    restart_ms.sort_unstable();
    report(
        "kill9",
        json!({
            "kills": kills,
            "overlapping_restarts": overlap,
            "seed": seed,
            "seconds_killing": killing.as_secs_f64(),
            "blocks_committed_during": during,
            "restart_to_status_ms_median": restart_ms[restart_ms.len() / 2],
            "restart_to_status_ms_max": restart_ms.last(),
            "recover_s": recovered.as_secs_f64(),
            "blocks_lost": 0,
        }),
    );
    assert_ledgers_agree(&mut net, &all, target);
}

/// A tmpfs of `size` at `dir`, unmounted when dropped (also when the test panics).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs (this test needs root, as the reliability suite does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_stops_a_node_with_a_clear_error_and_loses_nothing() {
    let _serial = serial();
    let mut net = support::net("disk-full", 4, 4, FAST);
    // Node 3's home on a small disk of its own.
    let disk = SmallDisk::mount(net.dir.join("small-disk"), "64m");
    let home = disk.0.join("node3");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(net.home(3))
        .arg(&home)
        .status()
        .unwrap();
    assert!(copied.success());
    net.nodes[3].home = home.clone();
    net.start_all().unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 3, "every node at height 3", 120);

    // Fill the disk but for a little: a few parameter snapshots more and it is full.
    let filler = disk.0.join("filler");
    let keep = 600 * 1024;
    let fill = disk.free_bytes().saturating_sub(keep);
    // The node writes too while the filler does: if it took the last 600 KB first, the disk
    // is simply full sooner (the filler's own write then fails, as the node's next will).
    match std::fs::write(&filler, vec![0u8; fill as usize]) {
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {}
        other => other.unwrap(),
    }
    let at_fill = net.height(3);
    net.wait_until(
        "node 3 to stop on the full disk",
        Duration::from_secs(120),
        |n| n.status(3).is_none() || n.height(0) > at_fill + 60,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while net.is_running(3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!net.is_running(3), "node 3 still runs on a full disk");
    assert_eq!(net.newly_dead(), vec![3]);
    let log = std::fs::read_to_string(&net.nodes[3].log).unwrap();
    let last = log.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error:")
            && last.contains("free some space")
            && last.contains("No space left on device"),
        "node 3 did not say why it stopped: {last}"
    );
    let stopped_at = net.height(0);
    // The others go on (three of four equal validators).
    reach(
        &net,
        &[0, 1, 2],
        stopped_at + 3,
        "commits without node 3",
        60,
    );

    // Room again: it restarts from its store, catches up and votes.
    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    net.start(3, &[]).unwrap();
    let target = net.height(0) + 3;
    reach(
        &net,
        &all,
        target,
        "node 3 back after the disk has room",
        90,
    );
    report(
        "disk_full",
        json!({
            "error": last,
            "recover_s": back.elapsed().as_secs_f64(),
            "back_in_step_at": target,
        }),
    );
    assert_ledgers_agree(&mut net, &all, target);
}

/// Every validator killed -9 at once and started again (each on new ports, as the harness
/// lets them pick), several times over: each time they find each other again through the
/// relay and commit. Found by the reliability suite's overlapping kills, where after enough
/// restarts every node stayed connected to the relay alone and the height stalled for good.
#[test]
fn all_validators_killed_at_once_find_each_other_again_each_time() {
    let _serial = serial();
    let times = scale("TABSWARM_MASS_RESTARTS", 8);
    let mut net = support::net("mass-restart", 4, 4, FAST);
    net.start_all().unwrap();
    let all = [0, 1, 2, 3];
    reach(&net, &all, 2, "every node at height 2", 120);
    let mut back_s = Vec::new();
    for t in 0..times {
        let target = heights(&net, &all).into_iter().max().unwrap() + 1;
        for i in all {
            net.kill9(i);
        }
        for i in all {
            net.start(i, &[]).unwrap();
        }
        let restarted = Instant::now();
        reach(
            &net,
            &all,
            target,
            &format!("every node past the height it had after mass restart {t}"),
            60,
        );
        back_s.push(restarted.elapsed().as_secs_f64());
    }
    report(
        "mass_restart",
        json!({ "restarts": times, "back_s": back_s }),
    );
    let top = heights(&net, &all).into_iter().min().unwrap();
    assert_ledgers_agree(&mut net, &all, top);
}
