//! Lock-step rounds (`tabswarm_sim::rounds`): real training jobs, the shipped round
//! application judging them, hostile trainers of every kind.

use tabswarm_consensus::genesis::{AggregationRule, TrainingRules};
use tabswarm_core::data::Dataset;
use tabswarm_sim::peers::{Attack, small_rules, synthetic_dataset};
use tabswarm_sim::rounds::{self, RoundsConfig, RoundsData, Threat};

fn config(rule: AggregationRule, hostile: usize, threat: Threat, heights: u64) -> RoundsConfig {
    RoundsConfig {
        rule,
        trainers: 10,
        hostile,
        threat,
        heights,
        test_every: heights,
        scoring: true,
    }
}

const CLIP: AggregationRule = AggregationRule::CenteredClip { iterations: 3 };

#[test]
fn a_clean_run_learns_and_commits_every_update() {
    let data = RoundsData::new(&synthetic_dataset(), &small_rules()).unwrap();
    let r = rounds::run(&data, &config(CLIP, 0, Threat::NONE, 4)).unwrap();
    assert_eq!(r.honest_included, 40, "{r:?}");
    assert_eq!(
        (r.hostile_included, r.updates_refused, r.empty_heights),
        (0, 0, 0)
    );
    assert!(r.accuracy() > 0.5, "{r:?}");
}

#[test]
fn updates_far_outside_the_harm_line_never_reach_a_block() {
    let data = RoundsData::new(&synthetic_dataset(), &small_rules()).unwrap();
    for threat in [
        Threat::Rewrite(Attack::Scale { factor: 100.0 }),
        Threat::Rewrite(Attack::Noise { sigma: 1.0 }),
    ] {
        let r = rounds::run(&data, &config(AggregationRule::Mean, 2, threat, 3)).unwrap();
        assert_eq!(r.hostile_included, 0, "{threat:?}: {r:?}");
        assert_eq!(r.honest_included, 24, "{threat:?}: {r:?}");
        assert!(r.updates_refused >= 6, "{threat:?}: {r:?}");
    }
}

/// MNIST as `cargo xtask test` prepares it (`TABSWARM_DATA`).
fn mnist() -> Dataset {
    let path = std::env::var("TABSWARM_DATA")
        .expect("TABSWARM_DATA names data/mnist.tsd: run `cargo xtask test`, which sets it");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Dataset::decode(&bytes).expect("a .tsd dataset")
}

/// The MNIST MLP run of the end-to-end check: 10 trainers, 20 local steps of 32.
fn mnist_rules() -> TrainingRules {
    TrainingRules {
        local_steps: 20,
        batch_size: 32,
        shards: 16,
        ..small_rules()
    }
}

#[test]
fn on_mnist_a_fifth_of_sign_flippers_cost_a_robust_rule_under_a_point_and_the_mean_over_ten() {
    let data = RoundsData::new(&mnist(), &mnist_rules()).unwrap();
    let heights = 15;
    // 2 of 10 trainers send -4 times their honest delta: under the mean they cancel the 8
    // honest ones. Measured first as the literature does (the rule alone, every update
    // combined), then as the protocol runs (validators score first).
    let flip = Threat::Rewrite(Attack::SignFlip { scale: 4.0 });
    let run = |rule, hostile, scoring| {
        let r = rounds::run(
            &data,
            &RoundsConfig {
                scoring,
                ..config(rule, hostile, flip, heights)
            },
        )
        .unwrap();
        eprintln!("{rule:?}, {hostile} hostile, scoring {scoring}: {r:?}");
        r.accuracy()
    };
    let clean = run(CLIP, 0, false);
    let robust = run(CLIP, 2, false);
    let mean = run(AggregationRule::Mean, 2, false);
    assert!(clean > 0.8, "clean {clean:.4}");
    assert!(
        robust >= clean - 0.01,
        "centered clip {robust:.4} against {clean:.4} clean"
    );
    assert!(
        mean < clean - 0.10,
        "the mean (the control) held {mean:.4} against {clean:.4} clean: the attack did nothing"
    );
    // Validators refuse each flipped update alone (over the per-update harm line), so under
    // the protocol even the mean keeps its accuracy.
    let scored_mean = run(AggregationRule::Mean, 2, true);
    assert!(
        scored_mean >= clean - 0.02,
        "the scored mean {scored_mean:.4} against {clean:.4} clean"
    );
}
