//! Light peers next to the validators: agreement holds, every light peer follows the chain,
//! and per-peer gossip traffic does not grow with the number of light peers.

use tabswarm_sim::{Config, LightPeers, LightReport, Sim};

/// Validators commit at least this many heights in each run.
const HEIGHTS: u64 = 6;

fn run(light_peers: usize) -> LightReport {
    let mut c = Config::new(3, vec![1; 4]);
    // 200 ms RTT, as in the benchmark.
    c.latency_ms = 90;
    c.link_spread_ms = 20;
    c.jitter_ms = 10;
    c.light = Some(LightPeers::new(light_peers).with_churn_per_mille(20));
    let mut sim = Sim::new(c).expect("sim");
    let mut t = 0;
    let mut r = sim.report();
    while r.min_honest_height < HEIGHTS && t < 60_000 {
        t += 500;
        r = sim.run_until(t).expect("run");
    }
    assert!(r.min_honest_height >= HEIGHTS, "commits went on: {r:?}");
    assert_eq!(r.agreement_violations, 0);
    assert_eq!(r.honest_double_signs, 0);
    let l = r.light.expect("light report");
    eprintln!("{light_peers} light peers: {l:?}");
    assert_eq!(l.refused, 0, "nothing forged in this run");
    assert!(l.joins > 0 && l.leaves > 0, "churn happened");
    // Every light peer online for a height got each notice, within a few hops of 100 ms.
    assert!(l.notice_delay_ms_max < 2_000, "{l:?}");
    l
}

#[test]
fn light_peer_traffic_per_peer_does_not_grow_with_their_number() {
    let small = run(150);
    let large = run(300);
    // Per light peer and height: one announcement out and at most ~D notice copies in and
    // out, whatever N is, so the ratio at 2x the peers should be ~1. O(log N) growth would
    // allow log(300)/log(150) = 1.14; all-to-all (O(N)) would give 2. 1.3 separates them
    // with room for the randomness of mesh degrees and churn.
    let ratio = large.light_bytes_per_peer_height_mean as f64
        / small.light_bytes_per_peer_height_mean as f64;
    assert!(
        ratio < 1.3,
        "per-peer bytes grew {ratio:.2}x at 2x the peers"
    );
    let ratio_max =
        large.light_bytes_per_peer_height_max as f64 / small.light_bytes_per_peer_height_max as f64;
    assert!(ratio_max < 1.5, "busiest peer grew {ratio_max:.2}x");
    // The proposer hears every announcement: that class grows with N, by design.
    let grow = large.announce_bytes_per_validator_height_max as f64
        / small.announce_bytes_per_validator_height_max as f64;
    assert!(
        grow > 1.6,
        "proposer's announcement bytes grow ~linearly: {grow:.2}x"
    );
}

#[test]
fn light_runs_are_reproducible() {
    assert_eq!(run(60), run(60));
}
