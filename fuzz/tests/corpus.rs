//! Replays every committed input of `corpus/<target>/` through its target's body on stable:
//! the seeds, and every crash the fuzzer found (`regression-*`), so none comes back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use tabswarm_fuzz::{TARGETS, seeds};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(target))
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_committed_input_runs_without_a_panic() {
    let mut failed = Vec::new();
    let mut ran = 0;
    for target in TARGETS {
        let files = inputs(target.name);
        assert!(!files.is_empty(), "no committed corpus for {}", target.name);
        for file in files {
            let bytes = std::fs::read(&file).expect("corpus file");
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| (target.run)(&bytes))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {ran} inputs panicked: {failed:#?}",
        failed.len()
    );
}

#[test]
fn every_target_has_a_fuzz_binary() {
    for target in TARGETS {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz_targets")
            .join(format!("{}.rs", target.name));
        assert!(
            bin.exists(),
            "{} has no fuzz_targets/{}.rs",
            target.name,
            target.name
        );
    }
}

/// Every seed is what today's encoders write: a seed that stopped decoding would fuzz
/// nothing but the first check.
#[test]
fn the_seeds_are_current() {
    for (target, name, bytes) in seeds::all() {
        let committed = std::fs::read(corpus(target).join(&name)).unwrap_or_default();
        assert!(
            committed == bytes,
            "corpus/{target}/{name} is not what the encoder writes today: \
             cargo test --manifest-path fuzz/Cargo.toml --no-default-features -- --ignored write_seed_corpus"
        );
    }
}

#[test]
#[ignore = "writes corpus/: run when an encoder changes"]
fn write_seed_corpus() {
    for (target, name, bytes) in seeds::all() {
        std::fs::create_dir_all(corpus(target)).expect("corpus dir");
        std::fs::write(corpus(target).join(name), bytes).expect("seed written");
    }
}
