//! Accuracy under attack: test accuracy on MNIST after a fixed compute budget (the same
//! heights, trainers and local steps for every cell) for each genesis aggregation rule
//! against each attack of the literature, in lock-step rounds (`tabswarm_sim::rounds`: the
//! shipped training jobs and the shipped validator application, no network).
//!
//! `TABSWARM_DATA=data/mnist.tsd cargo bench -p tabswarm-sim --bench attacks -- --out FILE
//! [--runs N] [--heights N] [--threads N]` writes one record per run (run `i` uses training
//! seed `i + 1`: other initial parameters, other shards); `cargo xtask bench --only attacks`
//! folds them into `bench/results/robust.json`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tabswarm_consensus::genesis::{AggregationRule, TrainingRules};
use tabswarm_sim::peers::{Attack, small_rules};
use tabswarm_sim::rounds::{self, RoundsConfig, RoundsData, Threat, alie_z};

mod support;

const TRAINERS: usize = 10;

const RULES: [(&str, AggregationRule); 4] = [
    ("mean", AggregationRule::Mean),
    ("median", AggregationRule::Median),
    (
        "trimmed_mean_20pct",
        AggregationRule::TrimmedMean {
            trim_per_mille: 200,
        },
    ),
    (
        "centered_clip_3",
        AggregationRule::CenteredClip { iterations: 3 },
    ),
];

/// `(threat, hostile trainers out of TRAINERS)`: every attack at 10% and 20%, IPM also at
/// 40% (the list).
fn scenarios() -> Vec<(Threat, usize)> {
    let mut out = Vec::new();
    for threat in [
        Threat::Rewrite(Attack::SignFlip { scale: 1.0 }),
        Threat::AdaptiveSignFlip,
        Threat::LabelFlip,
        Threat::Rewrite(Attack::Scale { factor: 100.0 }),
        Threat::Rewrite(Attack::Noise { sigma: 1.0 }),
        Threat::Alie { z: None },
        Threat::Ipm { epsilon: 0.1 },
    ] {
        for hostile in [1, 2] {
            out.push((threat, hostile));
        }
    }
    out.push((Threat::Ipm { epsilon: 0.1 }, 4));
    out
}

/// The two settings of the table: the protocol (validators score every update and the
/// aggregate, then the rule combines what passed) and the rule alone (every update combined,
/// as the robust-aggregation literature measures).
const SETTINGS: [(&str, bool); 2] = [("protocol", true), ("rule_alone", false)];

struct Cell {
    setting: &'static str,
    scoring: bool,
    rule_name: &'static str,
    rule: AggregationRule,
    key: String,
    threat: Threat,
    hostile: usize,
}

fn cell(data: &RoundsData, c: &Cell, heights: u64) -> Value {
    let (rule, threat, hostile) = (c.rule, c.threat, c.hostile);
    let config = RoundsConfig {
        rule,
        trainers: TRAINERS,
        hostile,
        threat,
        heights,
        test_every: (heights / 5).max(1),
        scoring: c.scoring,
    };
    let r = rounds::run(data, &config).unwrap_or_else(|e| panic!("{rule:?} {threat:?}: {e}"));
    let curve: Vec<Value> = r
        .curve
        .iter()
        .map(|(h, loss, acc)| json!({"height": h, "test_loss": loss, "test_accuracy": acc}))
        .collect();
    json!({
        "test_accuracy": r.accuracy(),
        "test_loss": r.curve.last().map(|c| c.1),
        "hostile_included": r.hostile_included,
        "honest_included": r.honest_included,
        "updates_refused": r.updates_refused,
        "aggregates_refused": r.aggregates_refused,
        "empty_heights": r.empty_heights,
        "curve": curve,
    })
}

/// Every cell of one run, on `threads` threads.
fn one_run(data: &RoundsData, heights: u64, threads: usize) -> Value {
    let mut cells = Vec::new();
    for (setting, scoring) in SETTINGS {
        for (rule_name, rule) in RULES {
            let mut add = |key: String, threat, hostile| {
                cells.push(Cell {
                    setting,
                    scoring,
                    rule_name,
                    rule,
                    key,
                    threat,
                    hostile,
                })
            };
            add("clean".into(), Threat::NONE, 0);
            for (threat, hostile) in scenarios() {
                add(
                    format!("{}_{}pct", threat.name(), hostile * 100 / TRAINERS),
                    threat,
                    hostile,
                );
            }
        }
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(json!({}));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while let Some(c) = cells.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let v = cell(data, c, heights);
                    eprintln!(
                        "{} {} {}: accuracy {}",
                        c.setting, c.rule_name, c.key, v["test_accuracy"]
                    );
                    let mut all = results.lock().expect("no thread panics holding it");
                    all[c.setting][c.rule_name][&c.key] = v;
                }
            });
        }
    });
    results.into_inner().expect("threads done")
}

fn main() {
    let runs: u64 = support::number("--runs", 5);
    let heights: u64 = support::number("--heights", 20);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: usize = support::number("--threads", cores);
    let dataset = support::mnist();
    let rules_for = |seed: u64| TrainingRules {
        seed,
        local_steps: 20,
        batch_size: 32,
        shards: 16,
        ..small_rules()
    };
    let records: Vec<Value> = (0..runs)
        .map(|run| {
            let data = RoundsData::new(&dataset, &rules_for(run + 1)).expect("plan");
            let record = one_run(&data, heights, threads);
            eprintln!("run {}/{runs} done", run + 1);
            record
        })
        .collect();
    let rules = rules_for(1);
    let report = json!({
        "runs": records,
        "setup": {
            "model": "mlp",
            "examples": dataset.len(),
            "trainers": TRAINERS,
            "heights": heights,
            "local_steps": rules.local_steps,
            "batch_size": rules.batch_size,
            "learning_rate": rules.learning_rate,
            "shards": rules.shards,
            "alie_z": {"10pct": alie_z(TRAINERS, 1), "20pct": alie_z(TRAINERS, 2)},
        },
    });
    support::write(&report);
}
