//! Property: with less than 1/3 Byzantine stake, across seeded schedules with partitions,
//! loss, crashes and restarts, no two validators ever commit different blocks at a height,
//! no honest validator signs two conflicting votes, and once the faults (partitions,
//! crashes, loss) end commits resume within a bounded virtual time.
//!
//! Cases default to 24 (CI-sized); set `TABSWARM_SIM_CASES=2000` for the heavy run.

use proptest::prelude::*;
use tabswarm_sim::{Behaviour, Config, Crash, Partition, Sim};

/// Virtual time allowed after the last fault for commits to resume everywhere.
const LIVENESS_BOUND_MS: u64 = 20_000;

fn cases() -> u32 {
    std::env::var("TABSWARM_SIM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        Just(Behaviour::Equivocate),
        Just(Behaviour::Silent),
        Just(Behaviour::InvalidProposals),
        Just(Behaviour::Replay),
        Just(Behaviour::Forge),
    ]
}

fn scenario() -> impl Strategy<Value = Config> {
    (
        any::<u64>(),
        proptest::collection::vec(1u64..=5, 4..=7),
        behaviour(),
        0u32..=100,
        proptest::collection::vec((0u64..8_000, 500u64..4_000, any::<u64>()), 0..=2),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u64..8_000,
                0u64..4_000,
                any::<bool>(),
            ),
            0..=2,
        ),
    )
        .prop_map(|(seed, stakes, bad, loss, parts, crashes)| {
            let n = stakes.len();
            let total: u64 = stakes.iter().sum();
            let mut c = Config::new(seed, stakes.clone());
            c.loss_per_mille = loss;
            // Liveness is claimed once the faults end, and loss is one of them: lost votes
            // are never re-sent for past rounds (no gossip layer or vote sync here).
            c.loss_until_ms = Some(8_000);
            // Validator 0 is Byzantine only if its stake is below a third.
            if stakes[0] * 3 < total {
                c.behaviours = vec![bad];
            }
            c.partitions = parts
                .into_iter()
                .map(|(from, len, mask)| Partition {
                    from_ms: from,
                    until_ms: from + len,
                    groups: vec![
                        (0..n).filter(|i| mask >> i & 1 == 1).collect(),
                        (0..n).filter(|i| mask >> i & 1 == 0).collect(),
                    ],
                })
                .collect();
            c.crashes = crashes
                .into_iter()
                .map(|(who, at, down, torn)| Crash {
                    node: 1 + who.index(n - 1),
                    at_ms: at,
                    restart_ms: Some(at + 1 + down),
                    torn,
                })
                .collect();
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/agreement.txt",
            ),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn agreement_no_double_signing_and_liveness_after_faults(config in scenario()) {
        let end = config.faults_end_ms().max(1);
        let mut sim = Sim::new(config.clone()).expect("sim");
        let at_end = sim.run_until(end).expect("run");
        prop_assert_eq!(at_end.agreement_violations, 0);
        let top = at_end.heights.iter().copied().max().unwrap_or(0);
        let r = sim.run_until(end + LIVENESS_BOUND_MS).expect("run");
        prop_assert_eq!(r.agreement_violations, 0, "two blocks at one height");
        prop_assert_eq!(r.honest_double_signs, 0, "an honest validator double-signed");
        prop_assert!(
            r.min_honest_height > top,
            "every honest validator passes the height reached at the end of the faults \
             ({top}) within {LIVENESS_BOUND_MS} ms: {:?}",
            r.heights
        );
    }
}
