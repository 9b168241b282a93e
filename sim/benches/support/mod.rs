//! What the simulator's benchmarks share: their command line (`--name value` flags, the
//! records written to `--out FILE` or stdout) and the MNIST file `cargo xtask bench` names in
//! `TABSWARM_DATA`.

use tabswarm_core::data::Dataset;

/// The value after `--name` on the command line.
pub(crate) fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--name`'s value parsed, or `default` when it is absent or does not parse.
pub(crate) fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    flag(name).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The dataset `TABSWARM_DATA` names.
pub(crate) fn mnist() -> Dataset {
    let path = std::env::var("TABSWARM_DATA")
        .expect("TABSWARM_DATA names data/mnist.tsd (`cargo xtask bench` sets it)");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Dataset::decode(&bytes).expect("a .tsd dataset")
}

/// Writes `report` to `--out`'s file, or prints it.
pub(crate) fn write(report: &serde_json::Value) {
    let text = serde_json::to_string_pretty(report).expect("json");
    match flag("--out") {
        Some(p) => std::fs::write(&p, text + "\n").expect("writing the results"),
        None => println!("{text}"),
    }
}
