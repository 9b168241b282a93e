//! Export to SafeTensors in PyTorch's layout, for people who take the model elsewhere.

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};

use super::Model;

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
#[error("could not export the model as safetensors: {0}")]
pub struct ExportError(String);

impl Model {
    /// The model as a SafeTensors file, in PyTorch's conventions: tensors named like
    /// `fc1.weight`, `Linear` weights transposed to `[out, in]`, `f32` values.
    /// `torch.nn.Module.load_state_dict(safetensors.torch.load_file(..))` takes it for the
    /// equivalent PyTorch module. The metadata names the tabswarm model kind and the
    /// parameter hash.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ExportError> {
        let params = super::get_flat(self);
        let mut store = SafetensorsStore::from_bytes(None)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true)
            .metadata("tabswarm.model", self.kind().name())
            .metadata(
                "tabswarm.param_hash",
                crate::flat::param_hash(&params).to_hex(),
            );
        self.save_into(&mut store)
            .map_err(|e| ExportError(e.to_string()))?;
        store.get_bytes().map_err(|e| ExportError(e.to_string()))
    }
}
