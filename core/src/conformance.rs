//! Values every platform must compute bit for bit alike, gathered in one report.
//!
//! The native build prints it (`cargo run -p tabswarm-core --example conformance`), the
//! browser build returns it (`tabswarm_browser::conformance`), and the end-to-end test
//! compares the two: if a compiler, a target feature or a refactor ever changed one bit of
//! aggregation, delta application, hashing or model initialisation, peers would fork.

use std::collections::BTreeMap;

use crate::flat;
use crate::model::ModelKind;

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
    out
}
