use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::{CLASSES, ParamLayout, ParamSpec, next_linear, next_param};

const C1: usize = 8;
const C2: usize = 16;
/// 28 -conv3-> 26 -pool2-> 13 -conv3-> 11 -pool2-> 5.
const FLAT: usize = C2 * 5 * 5;

/// A small convolutional net for 28 x 28 digits.
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc: Linear,
}

impl Cnn {
    /// `conv1.weight [8,1,3,3]`, `conv1.bias [8]`, `conv2.weight [16,8,3,3]`,
    /// `conv2.bias [16]`, `fc.weight [400,10]`, `fc.bias [10]`.
    pub fn layout() -> ParamLayout {
        let [c1w, c1b] = ParamSpec::layer("conv1", &[C1, 1, 3, 3], C1, 9);
        let [c2w, c2b] = ParamSpec::layer("conv2", &[C2, C1, 3, 3], C2, C1 * 9);
        let [fw, fb] = ParamSpec::layer("fc", &[FLAT, CLASSES], CLASSES, FLAT);
        ParamLayout(vec![c1w, c1b, c2w, c2b, fw, fb])
    }

    pub(super) fn from_tensors(
        pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
        device: &Device,
    ) -> Self {
        let conv = |pieces: &mut std::vec::IntoIter<(Vec<f32>, Vec<usize>)>,
                    channels: [usize; 2]| {
            let mut c = burn::nn::conv::Conv2dConfig::new(channels, [3, 3])
                .with_padding(PaddingConfig2d::Valid)
                .init(device);
            c.weight = next_param(pieces, device);
            c.bias = Some(next_param(pieces, device));
            c
        };
        let conv1 = conv(pieces, [1, C1]);
        let conv2 = conv(pieces, [C1, C2]);
        let fc = next_linear(pieces, device);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        Self {
            conv1,
            conv2,
            pool,
            fc,
        }
    }

    /// # Shapes
    /// - images: `[batch, 784]`
    /// - output: `[batch, 10]`
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, 28, 28]);
        let x = self.pool.forward(relu(self.conv1.forward(x))); // [batch, 8, 13, 13]
        let x = self.pool.forward(relu(self.conv2.forward(x))); // [batch, 16, 5, 5]
        self.fc.forward(x.reshape([batch, FLAT])) // [batch, 10]
    }
}
