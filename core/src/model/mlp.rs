use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::{CLASSES, INPUT_PIXELS, ParamLayout, ParamSpec, next_param};

const HIDDEN: usize = 128;

/// Multi-layer perceptron 784-128-10 with a ReLU between the layers.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// `fc1.weight [784,128]`, `fc1.bias [128]`, `fc2.weight [128,10]`, `fc2.bias [10]`.
    pub fn layout() -> ParamLayout {
        ParamLayout(vec![
            ParamSpec {
                name: "fc1.weight",
                shape: vec![INPUT_PIXELS, HIDDEN],
                fan_in: INPUT_PIXELS,
            },
            ParamSpec {
                name: "fc1.bias",
                shape: vec![HIDDEN],
                fan_in: INPUT_PIXELS,
            },
            ParamSpec {
                name: "fc2.weight",
                shape: vec![HIDDEN, CLASSES],
                fan_in: HIDDEN,
            },
            ParamSpec {
                name: "fc2.bias",
                shape: vec![CLASSES],
                fan_in: HIDDEN,
            },
        ])
    }

    pub(super) fn from_tensors(
        pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
        device: &Device,
    ) -> Self {
        let fc1 = Linear {
            weight: next_param(pieces, device),
            bias: Some(next_param(pieces, device)),
        };
        let fc2 = Linear {
            weight: next_param(pieces, device),
            bias: Some(next_param(pieces, device)),
        };
        Self { fc1, fc2 }
    }

    /// # Shapes
    /// - images: `[batch, 784]`
    /// - output: `[batch, 10]`
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let hidden = relu(self.fc1.forward(images)); // [batch, 128]
        self.fc2.forward(hidden) // [batch, 10]
    }
}
