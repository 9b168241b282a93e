//! The computing half of a tab, for its Web Workers: each worker holds the run's data plan
//! and runs the peer's jobs (training, scoring, testing) handed to it as bytes
//! (`tabswarm_peer::jobs::encode`), so the page's thread, where the network lives, never
//! waits for a model.

use tabswarm_consensus::genesis::{Genesis, TrainingRules};
use tabswarm_core::data::Dataset;
use tabswarm_peer::jobs::{self, DataPlan, Job};
use tabswarm_peer::parallel::{Replica, StepGradient};
use wasm_bindgen::prelude::*;

use crate::js_err;

/// Runs jobs for one run.
#[wasm_bindgen]
#[derive(Debug)]
pub struct JobRunner {
    rules: TrainingRules,
    /// The data jobs run on: cut from the page's copy, or the peer's plan from shards it
    /// fetched (`use_plan`); `None` until the latter arrives.
    plan: Option<DataPlan>,
    /// This worker's share of a training job split across the tab's workers.
    replica: Option<Replica>,
}

#[wasm_bindgen]
impl JobRunner {
    /// A runner for `genesis_json`'s run: over `dataset` (a `.tsd` file) cut as every peer
    /// cuts it, or, in a run that keeps its data on the network (no `dataset`), over the
    /// plan [`JobRunner::use_plan`] gives.
    #[wasm_bindgen(constructor)]
    pub fn new(dataset: Option<Vec<u8>>, genesis_json: &str) -> Result<JobRunner, JsError> {
        let genesis = Genesis::from_json(genesis_json).map_err(js_err)?;
        let plan = match dataset {
            Some(bytes) => {
                let dataset = Dataset::decode(&bytes).map_err(js_err)?;
                Some(DataPlan::new(&dataset, &genesis.training).map_err(js_err)?)
            }
            None => None,
        };
        Ok(Self {
            rules: genesis.training,
            plan,
            replica: None,
        })
    }

    /// Takes the data plan the tab's peer made from the shards it fetched (an encoded
    /// `DataPlan`); jobs after it run on it.
    pub fn use_plan(&mut self, plan: &[u8]) -> Result<(), JsError> {
        self.plan = Some(DataPlan::decode(plan, &self.rules).map_err(js_err)?);
        Ok(())
    }

    /// Runs one encoded job; returns its encoded output.
    pub fn run(&self, job: &[u8]) -> Result<Vec<u8>, JsError> {
        let job: Job = jobs::decode(job).map_err(js_err)?;
        Ok(jobs::encode(&jobs::run(self.plan()?, job)))
    }

    fn plan(&self) -> Result<&DataPlan, JsError> {
        self.plan
            .as_ref()
            .ok_or_else(|| js_err("no data yet: the run's shards have not reached this worker"))
    }

    /// Becomes replica `part` of `parts` of the encoded training job `job` (see
    /// `tabswarm_peer::parallel`); returns the encoded gradient of its first slice.
    pub fn replica_start(&mut self, job: &[u8], part: u32, parts: u32) -> Result<Vec<u8>, JsError> {
        let job: Job = jobs::decode(job).map_err(js_err)?;
        self.replica =
            Some(Replica::new(self.plan()?, job, part as usize, parts as usize).map_err(js_err)?);
        self.replica_gradient()
    }

    /// Takes the step every replica takes (an encoded `StepGradient`, the page's average);
    /// returns how many steps are left.
    pub fn replica_apply(&mut self, step: &[u8]) -> Result<u32, JsError> {
        let step: StepGradient = jobs::decode(step).map_err(js_err)?;
        let replica = self
            .replica
            .as_mut()
            .ok_or_else(|| js_err("no training job split here"))?;
        replica.apply(&step).map_err(js_err)?;
        Ok(replica.steps_left() as u32)
    }

    /// The encoded gradient of this replica's slice of the next batch.
    pub fn replica_gradient(&mut self) -> Result<Vec<u8>, JsError> {
        let replica = self
            .replica
            .as_mut()
            .ok_or_else(|| js_err("no training job split here"))?;
        Ok(jobs::encode(&replica.gradient().map_err(js_err)?))
    }

    /// The encoded output of the split job, once every step is taken.
    pub fn replica_finish(&mut self) -> Result<Vec<u8>, JsError> {
        let replica = self
            .replica
            .take()
            .ok_or_else(|| js_err("no training job split here"))?;
        Ok(jobs::encode(&replica.finish()))
    }
}

/// The page's half of a split training job: the row-weighted mean of the replicas' encoded
/// slice gradients for one step, encoded for every replica to apply.
#[wasm_bindgen]
pub fn average_gradients(slices: js_sys::Array) -> Result<Vec<u8>, JsError> {
    let slices = slices
        .iter()
        .map(|s| jobs::decode(&js_sys::Uint8Array::new(&s).to_vec()).map_err(js_err))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(jobs::encode(
        &tabswarm_peer::parallel::average(&slices).map_err(js_err)?,
    ))
}
