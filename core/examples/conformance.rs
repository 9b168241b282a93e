//! Prints the conformance report as JSON: `{"<seed>": {name: hex}}` for each seed given
//! (default `0 1 2`). The browser end-to-end test runs this and compares.

use std::collections::BTreeMap;

fn main() {
    let mut seeds = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<u64>() {
            Ok(s) => seeds.push(s),
            Err(_) => {
                eprintln!("error: seed {arg:?} is not a number");
                std::process::exit(2);
            }
        }
    }
    if seeds.is_empty() {
        seeds = vec![0, 1, 2];
    }
    let out: BTreeMap<String, _> = seeds
        .into_iter()
        .map(|seed| (seed.to_string(), tabswarm_core::conformance::report(seed)))
        .collect();
    println!(
        "{}",
        serde_json::to_string(&out).expect("string maps always serialise")
    );
}
