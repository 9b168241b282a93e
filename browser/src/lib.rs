//! # tabswarm-browser
//!
//! The tab peer, compiled to WebAssembly (SIMD128) and exposed to JavaScript with
//! wasm-bindgen, in two halves:
//! - [`Tab`] (in a browser only): the libp2p swarm on the page's thread driving the same
//!   `tabswarm_peer::Peer` as native nodes; its jobs go to Web Workers;
//! - [`JobRunner`]: what each Web Worker runs (training, scoring, testing), and
//!   [`WasmTrainer`], the bare trainer the benchmarks and conformance tests use;
//! - [`ModelRunner`]: the committed model on a volunteer's drawing, and as a SafeTensors file.
//!
//! ## Usage (JavaScript)
//!
//! ```js
//! import init, { WasmTrainer } from './pkg/tabswarm_browser.js';
//! await init();
//! const bytes = new Uint8Array(await (await fetch('/data/mnist.tsd')).arrayBuffer());
//! const t = new WasmTrainer(bytes, 'mlp', 'flex', 'adam', 0.001, 64, 0n);
//! const losses = t.steps(50);           // Float32Array, one loss per step
//! const { accuracy } = JSON.parse(t.evaluate());
//! ```
//!
//! Errors (a bad dataset, an unknown model name) are thrown as JS `Error`s with the same
//! messages the native node prints.

mod cache;
pub mod circuit_dials;
mod data_cache;
mod identity;
mod status;
#[cfg(target_arch = "wasm32")]
mod tab;
mod try_model;
mod worker;

use std::sync::Arc;

use tabswarm_core::data::{Batches, Dataset, Split};
use tabswarm_core::perf;
use tabswarm_core::train::{self, Trainer};
use wasm_bindgen::prelude::*;

pub use cache::{CACHE_FORMAT, CacheError, ChainCache, MAX_CACHE_BYTES};
pub use circuit_dials::CircuitDials;
pub use data_cache::{DATA_CACHE_FORMAT, DataCache, MAX_DATA_CACHE_BYTES};
pub use identity::{SECRET_BYTES, TabKeys};
pub use status::{HISTORY, Point, RTT_SAMPLES, RttSamples, RttSummary, State, TabStatus};
#[cfg(target_arch = "wasm32")]
pub use tab::Tab;
pub use try_model::ModelRunner;
pub use worker::{JobRunner, average_gradients};

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A trainer over the fixed MNIST split of a `.tsd` dataset.
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmTrainer {
    trainer: Trainer,
    batches: Batches,
    test: Arc<Dataset>,
}

#[wasm_bindgen]
impl WasmTrainer {
    /// Decodes `dataset` (a `.tsd` file), splits it as every peer does, and builds a trainer
    /// with the seeded initial parameters.
    #[wasm_bindgen(constructor)]
    pub fn new(
        dataset: &[u8],
        model: &str,
        backend: &str,
        optimizer: &str,
        lr: f64,
        batch_size: u32,
        seed: u64,
    ) -> Result<WasmTrainer, JsError> {
        let dataset = Dataset::decode(dataset).map_err(js_err)?;
        let config = train::Config {
            model: model.parse().map_err(js_err)?,
            backend: backend.parse().map_err(js_err)?,
            optimizer: optimizer.parse().map_err(js_err)?,
            lr,
            batch_size: batch_size as usize,
            seed,
        };
        let split = Split::mnist(&dataset);
        let trainer = Trainer::new(&config).map_err(js_err)?;
        Ok(WasmTrainer {
            batches: Batches::new(split.train, config.batch_size, seed),
            test: split.test,
            trainer,
        })
    }

    /// One optimizer step on the next batch; returns its loss.
    pub fn step(&mut self) -> Result<f32, JsError> {
        let batch = self.batches.next_batch();
        self.trainer.step(&batch).map_err(js_err)
    }

    /// `n` steps; returns each step's loss.
    pub fn steps(&mut self, n: u32) -> Result<Vec<f32>, JsError> {
        (0..n).map(|_| self.step()).collect()
    }

    /// One step timed by phase with `now` (e.g. `() => performance.now()`); returns JSON
    /// `{loss, input, forward, backward, optimizer}` in `now`'s units.
    pub fn step_phases(&mut self, now: &js_sys::Function) -> Result<String, JsError> {
        let batch = self.batches.next_batch();
        let mut clock = js_clock(now);
        let (loss, phases) = self
            .trainer
            .step_phases(&batch, &mut clock)
            .map_err(js_err)?;
        let mut v = serde_json::to_value(phases).map_err(js_err)?;
        v["loss"] = loss.into();
        Ok(v.to_string())
    }

    /// Loss and accuracy on the 1,000 held-out digits, as JSON `{loss, accuracy, examples}`.
    pub fn evaluate(&self) -> Result<String, JsError> {
        let eval = self.trainer.evaluate(&self.test).map_err(js_err)?;
        serde_json::to_string(&eval).map_err(js_err)
    }

    /// Hex hash of the current flat parameters.
    pub fn param_hash(&self) -> String {
        self.trainer.param_hash().to_hex()
    }
}

fn js_clock(now: &js_sys::Function) -> impl FnMut() -> f64 + '_ {
    move || {
        now.call0(&JsValue::NULL)
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    }
}

/// The cross-platform conformance report for `seed` (see `tabswarm_core::conformance`),
/// as JSON `{name: hex}`; `cargo run -p tabswarm-core --example conformance` prints the
/// native one.
#[wasm_bindgen]
pub fn conformance(seed: u64) -> Result<String, JsError> {
    serde_json::to_string(&tabswarm_core::conformance::report(seed)).map_err(js_err)
}

/// GFLOP/s of burn's matmul `[m,k] x [k,n]` on `backend`, median of `iters` runs timed
/// with `now` (milliseconds).
#[wasm_bindgen]
pub fn matmul_gflops(
    backend: &str,
    m: u32,
    k: u32,
    n: u32,
    iters: u32,
    now: &js_sys::Function,
) -> Result<f64, JsError> {
    let backend = backend.parse().map_err(js_err)?;
    let mut clock = js_clock(now);
    let ms = perf::matmul_median(
        backend,
        [m as usize, k as usize, n as usize],
        iters as usize,
        &mut clock,
    );
    Ok(perf::gflops(
        [m as usize, k as usize, n as usize],
        ms / 1000.0,
    ))
}

/// What each aggregation rule costs in this browser for `updates` updates of `values` values,
/// each the median of `reps` timings with `now` (milliseconds), as JSON (see
/// `tabswarm_core::perf::AggregationCosts`; `cargo xtask bench --only robust` runs the same
/// natively).
#[wasm_bindgen]
pub fn aggregation_costs(
    updates: u32,
    values: u32,
    reps: u32,
    now: &js_sys::Function,
) -> Result<String, JsError> {
    let mut clock = js_clock(now);
    let costs =
        perf::aggregation_costs(updates as usize, values as usize, reps as usize, &mut clock);
    serde_json::to_string(&costs).map_err(js_err)
}

/// The data vault's figures in this browser for a shard of `samples` images, each the median
/// of `reps` timings with `now` (milliseconds), as JSON (see
/// `tabswarm_core::perf::VaultRates`; `cargo xtask bench --only data` runs the same natively).
#[wasm_bindgen]
pub fn vault_rates(samples: u32, reps: u32, now: &js_sys::Function) -> Result<String, JsError> {
    let mut clock = js_clock(now);
    let rates = perf::vault_rates(samples as usize, reps as usize, &mut clock);
    serde_json::to_string(&rates).map_err(js_err)
}
