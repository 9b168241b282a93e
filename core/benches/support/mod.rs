//! The command line the benchmarks here share: `--runs N` whole runs (5 if not given), their
//! records written as `{"runs": [...]}` to `--out FILE` (stdout without it), for `cargo xtask
//! bench` to fold.

/// Runs `one_run` as often as `--runs` says and writes the records where `--out` says.
pub(crate) fn main_with(mut one_run: impl FnMut() -> serde_json::Value) {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = value("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let runs: Vec<serde_json::Value> = (0..runs).map(|_| one_run()).collect();
    let report = serde_json::json!({ "runs": runs });
    let text = serde_json::to_string_pretty(&report).expect("json");
    match value("--out") {
        Some(path) => std::fs::write(&path, text + "\n").expect("writing the results"),
        None => println!("{text}"),
    }
}
