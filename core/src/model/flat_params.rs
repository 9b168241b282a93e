//! Reading and writing a model's parameters as one flat vector, in layout order.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::{Model, ParamError, check_len};

/// The model's parameters as one flat vector, in [`super::ParamLayout`] order.
pub fn get_flat(model: &Model) -> Vec<f32> {
    let mut collect = Collect(Vec::with_capacity(model.kind().layout().num_params()));
    model.visit(&mut collect);
    collect.0
}

/// Replaces the model's parameter values with `params`, keeping each parameter's identity
/// (so optimizer state such as Adam's moments stays attached).
pub fn set_flat(model: Model, params: &[f32]) -> Result<Model, ParamError> {
    check_len(&model.kind().layout(), params.len())?;
    Ok(model.map(&mut Assign { params, at: 0 }))
}

struct Collect(Vec<f32>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        extend_f32(&mut self.0, param.val().into_data());
    }
}

struct Assign<'a> {
    params: &'a [f32],
    at: usize,
}

impl ModuleMapper for Assign<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|tensor| {
            let shape = tensor.shape();
            let n = shape.num_elements();
            let values = self.params[self.at..self.at + n].to_vec();
            self.at += n;
            let require_grad = tensor.is_require_grad();
            let fresh = Tensor::from_data(TensorData::new(values, shape), &tensor.device());
            fresh.set_require_grad(require_grad)
        })
    }
}

/// Appends a tensor's values. Reads the f32 slice directly: `TensorData::iter` goes through
/// a boxed iterator per element, which costs more than the whole optimizer step.
pub(crate) fn extend_f32(out: &mut Vec<f32>, data: TensorData) {
    match data.as_slice::<f32>() {
        Ok(values) => out.extend_from_slice(values),
        // Not stored as f32 (never the case for our parameters): convert element-wise.
        Err(_) => out.extend(data.iter::<f32>()),
    }
}
