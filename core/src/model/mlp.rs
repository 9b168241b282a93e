use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::{CLASSES, INPUT_PIXELS, ParamLayout, ParamSpec, next_linear};

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
        let [w1, b1] = ParamSpec::layer("fc1", &[INPUT_PIXELS, HIDDEN], HIDDEN, INPUT_PIXELS);
        let [w2, b2] = ParamSpec::layer("fc2", &[HIDDEN, CLASSES], CLASSES, HIDDEN);
        ParamLayout(vec![w1, b1, w2, b2])
    }

    pub(super) fn from_tensors(
        pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
        device: &Device,
    ) -> Self {
        let fc1 = next_linear(pieces, device);
        let fc2 = next_linear(pieces, device);
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
