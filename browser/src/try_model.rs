//! "Try the model" on the volunteer page: the committed parameters the tab holds, run on a
//! drawing or saved as a file, in a worker of their own (no dataset, no queue behind
//! training jobs), so a guess comes back while the tab trains.

use tabswarm_consensus::genesis::Genesis;
use tabswarm_core::model::Model;
use tabswarm_core::train::Config;
use tabswarm_peer::jobs;
use wasm_bindgen::prelude::*;

use crate::js_err;

/// The run's model architecture, ready to take parameters.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ModelRunner {
    config: Config,
}

#[wasm_bindgen]
impl ModelRunner {
    /// The model of `genesis_json`'s run.
    #[wasm_bindgen(constructor)]
    pub fn new(genesis_json: &str) -> Result<ModelRunner, JsError> {
        let genesis = Genesis::from_json(genesis_json).map_err(js_err)?;
        Ok(Self {
            config: jobs::train_config(&genesis.training),
        })
    }

    /// Each digit's probability for one drawing (`pixels`: 28 x 28, row-major, 0 = background,
    /// 255 = stroke) under `params` (a committed model, from the tab).
    pub fn predict(&self, params: &[f32], pixels: &[u8]) -> Result<Vec<f32>, JsError> {
        Ok(self
            .model(params)?
            .predict(pixels)
            .map_err(js_err)?
            .to_vec())
    }

    /// `params` as a SafeTensors file in PyTorch's layout (see `Model::to_safetensors`).
    pub fn safetensors(&self, params: &[f32]) -> Result<Vec<u8>, JsError> {
        self.model(params)?.to_safetensors().map_err(js_err)
    }
}

impl ModelRunner {
    fn model(&self, params: &[f32]) -> Result<Model, JsError> {
        Model::from_flat(self.config.model, params, &self.config.backend.device()).map_err(js_err)
    }
}
