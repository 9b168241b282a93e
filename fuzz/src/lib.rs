//! # tabswarm-fuzz
//!
//! One function per fuzz target: every decoder a peer runs on bytes from others or from its
//! own store, and the peer's input handler. Each function takes arbitrary bytes and panics
//! only on a bug: a decoder that panics, allocates without bound, or whose output does not
//! survive its own encoder.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these (`cargo xtask fuzz`), and the
//! `corpus` test replays every committed input in `corpus/<target>/` through them on stable
//! (part of `cargo xtask test`), so a crash once found stays fixed.

pub mod browser_decoders;
pub mod consensus_decoders;
pub mod core_decoders;
pub mod peer_decoders;
pub mod peer_inputs;
pub mod seeds;

/// A fuzz target: its name (its binary and its corpus directory) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of `fuzz_targets/<name>.rs` and `corpus/<name>/`.
    pub name: &'static str,
    /// What one input runs.
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "wire_message",
        run: consensus_decoders::wire_message,
    },
    Target {
        name: "signed_update",
        run: consensus_decoders::signed_update,
    },
    Target {
        name: "genesis_json",
        run: consensus_decoders::genesis_json,
    },
    Target {
        name: "wal_record",
        run: consensus_decoders::wal_record,
    },
    Target {
        name: "fetch_request",
        run: peer_decoders::fetch_request,
    },
    Target {
        name: "fetch_response",
        run: peer_decoders::fetch_response,
    },
    Target {
        name: "update_payload",
        run: peer_decoders::update_payload,
    },
    Target {
        name: "job_codec",
        run: peer_decoders::job_codec,
    },
    Target {
        name: "data_plan",
        run: peer_decoders::data_plan,
    },
    Target {
        name: "holdings",
        run: peer_decoders::holdings,
    },
    Target {
        name: "chunk_assembly",
        run: peer_decoders::chunk_assembly,
    },
    Target {
        name: "data_manifest",
        run: core_decoders::data_manifest,
    },
    Target {
        name: "shard",
        run: core_decoders::shard,
    },
    Target {
        name: "grant",
        run: core_decoders::grant,
    },
    Target {
        name: "tsd_dataset",
        run: core_decoders::tsd_dataset,
    },
    Target {
        name: "int8_delta",
        run: core_decoders::int8_delta,
    },
    Target {
        name: "sparse_delta",
        run: core_decoders::sparse_delta,
    },
    Target {
        name: "chain_cache",
        run: browser_decoders::chain_cache,
    },
    Target {
        name: "data_cache",
        run: browser_decoders::data_cache,
    },
    Target {
        name: "peer_inputs",
        run: peer_inputs::run,
    },
];

/// The body of the target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
