//! `cargo xtask reliability`: every fault and Byzantine scenario at full strength, one at a
//! time, on real processes; `bench/results/reliability.json` and the table in
//! `docs/reliability.md`.
//!
//! The scenarios are the multi-process tests `cargo xtask test` runs in their fast form; here
//! the environment raises their counts (100 kills instead of 12, a 60 s partition instead of
//! 10 s). Each test asserts its scenario's safety and recovery and saves its figures through
//! `TABSWARM_RELIABILITY_OUT`; a scenario passes when its test does.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::sh::{self, Profile};

/// One scenario: its name in the report, the test binary and test that runs it, what it
/// does.
struct Scenario {
    name: &'static str,
    binary: &'static str,
    test: &'static str,
    what: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "kill9",
        binary: "faults",
        test: "validators_killed_9_in_turn_at_random_points_lose_no_committed_block",
        what: "kill -9 and restart each of 4 validators in turn at random points, the next kill while the last victim may still be catching up",
    },
    Scenario {
        name: "pause",
        binary: "faults",
        test: "a_frozen_third_of_stake_halts_commits_and_they_resume_when_it_wakes",
        what: "SIGSTOP a third of stake for 10 s, then SIGCONT",
    },
    Scenario {
        name: "partition",
        binary: "faults",
        test: "a_half_and_half_partition_halts_commits_and_they_resume_soon_after_it_heals",
        what: "50/50 partition between network namespaces, then heal",
    },
    Scenario {
        name: "slow_lossy_links",
        binary: "faults",
        test: "round_trips_of_200_ms_and_2_percent_loss_between_all_peers_still_commit",
        what: "200 ms round trips and 2% loss each way between all hosts",
    },
    Scenario {
        name: "relay_restart",
        binary: "faults",
        test: "the_relay_killed_and_restarted_on_its_addresses_brings_a_relay_only_node_back",
        what: "relay killed -9 and restarted on its addresses",
    },
    Scenario {
        name: "disk_full",
        binary: "faults",
        test: "a_full_disk_stops_a_node_with_a_clear_error_and_loses_nothing",
        what: "one validator's disk fills, then has room again",
    },
    Scenario {
        name: "mass_restart",
        binary: "faults",
        test: "all_validators_killed_at_once_find_each_other_again_each_time",
        what: "every validator killed -9 at once and restarted on new ports, 20 times over",
    },
    Scenario {
        name: "soak",
        binary: "soak",
        test: "many_peers_for_minutes_no_panic_no_leak_no_growing_queue",
        what: "32 native peers (4 validators, 28 trainers) and 4 headless tabs training for 10 minutes; memory and buffers sampled every 5-10 s",
    },
    Scenario {
        name: "byzantine_validators",
        binary: "adversary",
        test: "an_equivocating_proposer_and_a_double_voter_are_slashed_and_commits_go_on",
        what: "a quarter of stake proposes twice per round and double-votes",
    },
    Scenario {
        name: "hostile_messages",
        binary: "adversary",
        test: "bad_messages_are_refused_and_penalised_while_commits_go_on",
        what: "malformed, oversize, forged, cross-run and replayed messages",
    },
];

/// The fast counts of `cargo xtask test`, raised.
const FULL_STRENGTH: &[(&str, &str)] = &[
    ("TABSWARM_KILLS", "100"),
    ("TABSWARM_KILL_OVERLAP", "1"),
    ("TABSWARM_PARTITION_SECS", "60"),
    ("TABSWARM_IMPAIRED_HEIGHTS", "20"),
    ("TABSWARM_MASS_RESTARTS", "20"),
    ("TABSWARM_SOAK_PEERS", "32"),
    ("TABSWARM_SOAK_SECS", "600"),
    ("TABSWARM_SOAK_TABS", "4"),
];

pub(crate) fn run(only: Option<String>) -> anyhow::Result<()> {
    let mut s = sh::Steps::new();
    s.step("install what is missing", crate::test::install_missing)?;
    let data = s.step("data (data/mnist.tsd)", || {
        crate::install::ensure_data(Profile::Dev)
    })?;
    // The soak's volunteers' tabs load the browser package.
    let pkg = s.step(
        "browser build (wasm32, simd128 and relaxed SIMD, wasm-bindgen)",
        crate::wasm::build_browser_pkg,
    )?;
    s.step("build the node, the relay and the tests", || {
        crate::install::build_bins(Profile::Dev)?;
        sh::run(
            "build the scenario tests",
            &mut sh::cargo(&[
                "test",
                "-p",
                "tabswarm-node",
                "--test",
                "faults",
                "--test",
                "adversary",
                "--test",
                "soak",
                "--no-run",
            ]),
        )
    })?;
    let out_dir = sh::cache().join("reliability");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut results = Vec::new();
    for sc in SCENARIOS
        .iter()
        .filter(|sc| only.as_deref().is_none_or(|o| o == sc.name))
    {
        let started = Instant::now();
        let passed = s
            .step(&format!("scenario {}: {}", sc.name, sc.what), || {
                let mut cmd = sh::cargo(&[
                    "test",
                    "-p",
                    "tabswarm-node",
                    "--test",
                    sc.binary,
                    "--",
                    "--exact",
                    sc.test,
                    "--nocapture",
                ]);
                cmd.env("TABSWARM_DATA", &data)
                    .env("TABSWARM_PKG", &pkg)
                    .env("TABSWARM_CHROMIUM", crate::install::CHROMIUM)
                    .env("TABSWARM_RELIABILITY_OUT", &out_dir);
                // A count already in the environment wins: a smaller run while diagnosing
                // (each scenario's figures record the sizes it ran at).
                for (k, v) in FULL_STRENGTH {
                    if std::env::var_os(k).is_none() {
                        cmd.env(k, v);
                    }
                }
                sh::run(sc.name, &mut cmd)
            })
            .is_ok();
        let figures = std::fs::read(out_dir.join(format!("{}.json", sc.name)))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or(Value::Null);
        results.push(json!({
            "scenario": sc.name,
            "what": sc.what,
            "test": format!("native-node/tests/{}.rs::{}", sc.binary, sc.test),
            "passed": passed,
            "seconds": started.elapsed().as_secs_f64(),
            "figures": figures,
        }));
    }
    let root = sh::root();
    let json_path = root.join("bench/results/reliability.json");
    if only.is_some() {
        results = merged_with_earlier(&json_path, results);
    }
    let report = json!({
        "machine": crate::machine::record(),
        "counts": FULL_STRENGTH.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        "scenarios": results,
    });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = root.join("docs/reliability.md");
    std::fs::write(&md_path, markdown(&report))
        .with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    s.summary();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r["passed"] != true)
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    anyhow::ensure!(failed.is_empty(), "scenarios failed: {failed:?}");
    Ok(())
}

/// With `--only`, the other scenarios' rows of the last full report stay (one scenario run
/// again must not wipe the table), in the suite's order.
fn merged_with_earlier(path: &std::path::Path, fresh: Vec<Value>) -> Vec<Value> {
    let earlier: Vec<Value> = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|r| r["scenarios"].as_array().cloned())
        .unwrap_or_default();
    let name = |r: &Value| r["scenario"].as_str().unwrap_or_default().to_owned();
    SCENARIOS
        .iter()
        .filter_map(|sc| {
            fresh
                .iter()
                .chain(&earlier)
                .find(|r| name(r) == sc.name)
                .cloned()
        })
        .collect()
}

/// The report's table, regenerated from the JSON on every run.
fn markdown(report: &Value) -> String {
    let mut md = String::from(
        "# Reliability\n\n\
         Generated by `cargo xtask reliability` from `bench/results/reliability.json`; do not \
         edit by hand. Every scenario runs real `tabswarm-node` and `tabswarm-relay` processes \
         on this machine and asserts, besides its own figures: no conflicting commits (every \
         ledger verifies from genesis and holds the same blocks), no committed block lost, \
         and training progress after the fault. `cargo xtask test` runs the same tests in \
         their fast form. What is not (yet) a scenario, and why, is in DESIGN.md, \"Faults\".\n\n",
    );
    if let Some(cpu) = report["machine"]["cpu"].as_str() {
        md.push_str(&format!("Machine: {cpu}.\n\n"));
    }
    md.push_str("| scenario | what | passed | recovery | figures |\n|---|---|---|---|---|\n");
    for r in report["scenarios"].as_array().into_iter().flatten() {
        let f = &r["figures"];
        let recover = f["recover_s"]
            .as_f64()
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "-".into());
        let figures = match f.as_object() {
            Some(o) => o
                .iter()
                .filter(|(k, _)| k.as_str() != "recover_s")
                .map(|(k, v)| format!("{k}: {}", compact(v)))
                .collect::<Vec<_>>()
                .join("; "),
            None => "-".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r["scenario"].as_str().unwrap_or("?"),
            r["what"].as_str().unwrap_or(""),
            if r["passed"] == true { "yes" } else { "**no**" },
            recover,
            figures.replace('|', "/"),
        ));
    }
    md
}

fn compact(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
