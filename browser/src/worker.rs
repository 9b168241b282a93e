//! The computing half of a tab, for its Web Workers: each worker holds the run's data plan
//! and runs the peer's jobs (training, scoring, testing) handed to it as bytes
//! (`tabswarm_peer::jobs::encode`), so the page's thread, where the network lives, never
//! waits for a model.

use tabswarm_consensus::genesis::Genesis;
use tabswarm_core::data::Dataset;
use tabswarm_peer::jobs::{self, DataPlan, Job};
use wasm_bindgen::prelude::*;

use crate::js_err;

/// Runs jobs for one run.
#[wasm_bindgen]
#[derive(Debug)]
pub struct JobRunner {
    plan: DataPlan,
}

#[wasm_bindgen]
impl JobRunner {
    /// The data plan of `genesis_json`'s run over `dataset` (a `.tsd` file).
    #[wasm_bindgen(constructor)]
    pub fn new(dataset: &[u8], genesis_json: &str) -> Result<JobRunner, JsError> {
        let genesis = Genesis::from_json(genesis_json).map_err(js_err)?;
        let dataset = Dataset::decode(dataset).map_err(js_err)?;
        Ok(Self {
            plan: DataPlan::new(&dataset, &genesis.training).map_err(js_err)?,
        })
    }

    /// Runs one encoded job; returns its encoded output.
    pub fn run(&self, job: &[u8]) -> Result<Vec<u8>, JsError> {
        let job: Job = jobs::decode(job).map_err(js_err)?;
        Ok(jobs::encode(&jobs::run(&self.plan, job)))
    }
}
