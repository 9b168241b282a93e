//! What each aggregation rule costs (`tabswarm_core::perf::aggregation_costs`, the code a tab
//! runs for the same figures in Chromium) for 8, 64 and 512 updates of the MLP's size.
//!
//! `cargo bench -p tabswarm-core --bench aggregate -- --out FILE [--runs N]` writes one record
//! per run; `cargo xtask bench --only robust` folds them into `bench/results/robust.json`.

mod support;

use std::time::Instant;

use tabswarm_core::perf::aggregation_costs;

/// Updates per aggregate: a small height, a busy one, and a network past one machine's
/// validators' reach (a proposal holds at most 32 today).
const UPDATES: [usize; 3] = [8, 64, 512];
/// Values per update: the MLP's parameters (784-128-10).
const VALUES: usize = 101_770;

fn one_run() -> serde_json::Value {
    let start = Instant::now();
    let mut now_ms = || start.elapsed().as_secs_f64() * 1e3;
    let mut out = serde_json::Map::new();
    for n in UPDATES {
        // One timing per rule and run: 512 updates take seconds a call; the runs give the
        // median.
        let costs = aggregation_costs(n, VALUES, 1, &mut now_ms);
        out.insert(
            format!("updates_{n}"),
            serde_json::to_value(costs).expect("json"),
        );
    }
    serde_json::Value::Object(out)
}

fn main() {
    support::main_with(one_run);
}
