//! The models tabswarm trains, built identically on every peer from a seed.
//!
//! Parameters travel as one flat `f32` vector. Its order is the model's [`ParamLayout`]:
//! layers in forward order, each layer's weight then bias, every tensor row-major in burn's
//! own layout (`Linear` weights are `[d_in, d_out]`, `Conv2d` weights
//! `[out_channels, in_channels, kh, kw]`). This order is part of the wire format: changing it
//! is a new model kind.

mod cnn;
#[cfg(feature = "safetensors")]
mod export;
mod flat_params;
mod mlp;
mod predict;

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

pub use cnn::Cnn;
#[cfg(feature = "safetensors")]
pub use export::ExportError;
pub use mlp::Mlp;
pub use predict::PredictError;

use crate::rng::SeededRng;

/// Pixels per MNIST image (28 x 28).
pub const INPUT_PIXELS: usize = 28 * 28;
/// Classes of MNIST.
pub const CLASSES: usize = 10;

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multi-layer perceptron 784-128-10 with ReLU: 101,770 parameters.
    #[default]
    Mlp,
    /// Small convolutional net: conv 3x3 (8) - pool - conv 3x3 (16) - pool - linear: 5,258 parameters.
    Cnn,
}

impl ModelKind {
    /// The flat parameter layout of this architecture.
    pub fn layout(self) -> ParamLayout {
        match self {
            ModelKind::Mlp => Mlp::layout(),
            ModelKind::Cnn => Cnn::layout(),
        }
    }

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model name that is not `mlp` or `cnn`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {0:?}: use \"mlp\" or \"cnn\"")]
pub struct UnknownModel(pub String);

impl FromStr for ModelKind {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            _ => Err(UnknownModel(s.to_owned())),
        }
    }
}

/// One named tensor of a model's flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// PyTorch-style name, e.g. `fc1.weight`.
    pub name: String,
    /// Shape in burn's layout.
    pub shape: Vec<usize>,
    /// `1 / sqrt(fan_in)`: initial values are uniform in `[-bound, bound)`, as PyTorch's default.
    pub fan_in: usize,
}

impl ParamSpec {
    /// A layer's weight (of `weight_shape`) then its bias (`bias_len` values), named
    /// `<layer>.weight` and `<layer>.bias`, both initialised from `fan_in`.
    pub fn layer(
        layer: &str,
        weight_shape: &[usize],
        bias_len: usize,
        fan_in: usize,
    ) -> [ParamSpec; 2] {
        [
            ParamSpec {
                name: format!("{layer}.weight"),
                shape: weight_shape.to_vec(),
                fan_in,
            },
            ParamSpec {
                name: format!("{layer}.bias"),
                shape: vec![bias_len],
                fan_in,
            },
        ]
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ordered list of a model's tensors: the meaning of each index of the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout(pub Vec<ParamSpec>);

impl ParamLayout {
    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.0.iter().map(ParamSpec::len).sum()
    }

    /// Seeded initial parameters: each tensor uniform in `+-1/sqrt(fan_in)`, drawn in layout
    /// order from one stream. Identical on every platform for the same seed.
    pub fn initial_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed, "model-init");
        let mut out = Vec::with_capacity(self.num_params());
        for spec in &self.0 {
            let bound = 1.0 / (spec.fan_in as f32).sqrt();
            out.extend((0..spec.len()).map(|_| rng.uniform(bound)));
        }
        out
    }
}

/// A model of either kind. Deriving `Module` on the enum lets one optimizer and one
/// training loop serve both.
#[derive(Module, Debug)]
#[allow(missing_docs)]
// A trainer holds one model and moves it a few times per step: 768 bytes is nothing next to
// a step's 26 MFLOP, and burn's derive does not see through a Box.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Mlp(Mlp),
    Cnn(Cnn),
}

impl Model {
    /// A model of `kind` with the seeded initial parameters of [`ParamLayout::initial_params`].
    pub fn init(kind: ModelKind, seed: u64, device: &Device) -> Model {
        let params = kind.layout().initial_params(seed);
        // The layout and the parameters come from the same source, so this cannot fail.
        Self::from_flat(kind, &params, device).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// A model of `kind` holding the given flat parameters.
    pub fn from_flat(
        kind: ModelKind,
        params: &[f32],
        device: &Device,
    ) -> Result<Model, ParamError> {
        let layout = kind.layout();
        check_len(&layout, params.len())?;
        let mut tensors = split_by_layout(&layout, params);
        Ok(match kind {
            ModelKind::Mlp => Model::Mlp(Mlp::from_tensors(&mut tensors, device)),
            ModelKind::Cnn => Model::Cnn(Cnn::from_tensors(&mut tensors, device)),
        })
    }

    /// Which architecture this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Mlp(_) => ModelKind::Mlp,
            Model::Cnn(_) => ModelKind::Cnn,
        }
    }

    /// Class scores.
    ///
    /// # Shapes
    /// - images: `[batch, 784]` (normalised pixels, row-major 28 x 28)
    /// - output: `[batch, 10]`
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        match self {
            Model::Mlp(m) => m.forward(images),
            Model::Cnn(m) => m.forward(images),
        }
    }
}

/// A flat parameter vector that does not fit a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// Wrong number of values for the layout.
    #[error("model expects {expected} parameters, got {found}")]
    WrongLength {
        /// Parameters of the layout.
        expected: usize,
        /// Values given.
        found: usize,
    },
}

/// Checks that `found` values fit `layout`.
pub(crate) fn check_len(layout: &ParamLayout, found: usize) -> Result<(), ParamError> {
    let expected = layout.num_params();
    if expected == found {
        Ok(())
    } else {
        Err(ParamError::WrongLength { expected, found })
    }
}

/// Cuts a flat vector into per-tensor pieces, in layout order.
fn split_by_layout(
    layout: &ParamLayout,
    params: &[f32],
) -> std::vec::IntoIter<(Vec<f32>, Vec<usize>)> {
    let mut at = 0;
    let mut pieces = Vec::with_capacity(layout.0.len());
    for spec in &layout.0 {
        pieces.push((params[at..at + spec.len()].to_vec(), spec.shape.clone()));
        at += spec.len();
    }
    pieces.into_iter()
}

/// Takes the next two pieces as a linear layer's weight and bias.
fn next_linear(
    pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
    device: &Device,
) -> burn::nn::Linear {
    burn::nn::Linear {
        weight: next_param(pieces, device),
        bias: Some(next_param(pieces, device)),
    }
}

/// Takes the next piece as a `D`-dimensional trainable parameter.
fn next_param<const D: usize>(
    pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
    device: &Device,
) -> Param<Tensor<D>> {
    // Called exactly once per layout entry by the model constructors, in layout order.
    let (values, shape) = pieces
        .next()
        .unwrap_or_else(|| unreachable!("layout and model constructor disagree"));
    Param::from_data(TensorData::new(values, shape), device)
}

pub(crate) use flat_params::extend_f32;
pub use flat_params::{get_flat, set_flat};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_the_documented_sizes_and_names() {
        let mlp = ModelKind::Mlp.layout();
        assert_eq!(mlp.num_params(), 101_770);
        let names: Vec<&str> = mlp.0.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
        assert_eq!(ModelKind::Cnn.layout().num_params(), 5_258);
    }

    #[test]
    fn the_model_holds_its_layout_in_order() {
        // Visiting burn's module must meet the tensors in layout order with layout shapes,
        // or get_flat/set_flat would scramble parameters.
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            let layout = kind.layout();
            let params = layout.initial_params(5);
            let model = Model::from_flat(kind, &params, &crate::Backend::Flex.device()).unwrap();
            assert_eq!(get_flat(&model), params, "{kind}");
            let mut shapes = Shapes(Vec::new());
            burn::module::Module::visit(&model, &mut shapes);
            let want: Vec<Vec<usize>> = layout.0.iter().map(|s| s.shape.clone()).collect();
            assert_eq!(shapes.0, want, "{kind}");
        }
    }

    struct Shapes(Vec<Vec<usize>>);

    impl burn::module::ModuleVisitor for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
}
