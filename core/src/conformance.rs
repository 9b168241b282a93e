//! Values every platform must compute bit for bit alike, gathered in one report.
//!
//! The native build prints it (`cargo run -p tabswarm-core --example conformance`), the
//! browser build returns it (`tabswarm_browser::conformance`), and the end-to-end test
//! compares the two: if a compiler, a target feature or a refactor ever changed one bit of
//! aggregation (every genesis rule), delta application, hashing or model initialisation,
//! peers would fork.

use std::collections::BTreeMap;

use crate::flat;
use crate::model::ModelKind;
use crate::rng::SeededRng;
use crate::robust;

/// `{name: hex hash}` for the flat-vector conformance vectors and each model's seeded
/// initial parameters.
pub fn report(seed: u64) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, hash) in flat::conformance_vectors(seed) {
        out.insert(name.to_owned(), hash.to_hex());
    }
    for kind in [ModelKind::Mlp, ModelKind::Cnn] {
        let params = kind.layout().initial_params(seed);
        out.insert(format!("init_{kind}"), flat::param_hash(&params).to_hex());
    }
    for (name, result) in robust_rules(seed) {
        out.insert(name.to_owned(), result);
    }
    out
}

/// The robust rules on five updates, two of them hostile (huge, NaN, infinite), and on an even
/// count: hex hashes of their results.
fn robust_rules(seed: u64) -> Vec<(&'static str, String)> {
    const LEN: usize = 4_099;
    let mut rng = SeededRng::new(seed, "robust-conformance");
    let mut updates: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..LEN).map(|_| rng.uniform(0.01)).collect())
        .collect();
    updates.push(
        (0..LEN)
            .map(|i| if i % 7 == 0 { f32::NAN } else { -3.0e4 })
            .collect(),
    );
    updates.push(
        (0..LEN)
            .map(|i| {
                if i % 5 == 0 {
                    f32::INFINITY
                } else {
                    rng.uniform(1e3)
                }
            })
            .collect(),
    );
    let all: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
    let hash = |r: Result<Vec<f32>, flat::FlatError>| match r {
        Ok(v) => flat::param_hash(&v).to_hex(),
        Err(e) => format!("error: {e}"),
    };
    vec![
        ("robust_median_odd", hash(robust::coordinate_median(&all))),
        (
            "robust_median_even",
            hash(robust::coordinate_median(&all[1..])),
        ),
        ("robust_trimmed_mean", hash(robust::trimmed_mean(&all, 2))),
        ("robust_centered_clip", hash(robust::centered_clip(&all, 3))),
    ]
}
