//! One image at a time: what a volunteer's drawing looks like to the model.

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};

use burn::module::Module;

use super::{CLASSES, INPUT_PIXELS, Model, extend_f32};
use crate::data::normalise;

/// An image the model cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an image for the model has {INPUT_PIXELS} pixels (28 x 28), got {0}")]
pub struct PredictError(pub usize);

impl Model {
    /// Each class's probability for one image: `pixels` row-major 28 x 28, 0 = black
    /// background, 255 = white stroke, as in the dataset.
    pub fn predict(&self, pixels: &[u8]) -> Result<[f32; CLASSES], PredictError> {
        if pixels.len() != INPUT_PIXELS {
            return Err(PredictError(pixels.len()));
        }
        let device = self
            .devices()
            .into_iter()
            .next()
            .unwrap_or_else(|| crate::Backend::Flex.device());
        let input: Vec<f32> = pixels.iter().map(|&p| normalise(p)).collect();
        let images = Tensor::<2>::from_data(TensorData::new(input, [1, INPUT_PIXELS]), &device);
        let mut out = Vec::with_capacity(CLASSES);
        extend_f32(&mut out, softmax(self.forward(images), 1).into_data());
        let mut probs = [0.0; CLASSES];
        probs.copy_from_slice(&out[..CLASSES]);
        Ok(probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use crate::model::ModelKind;

    #[test]
    fn probabilities_sum_to_one_and_a_wrong_size_is_refused() {
        let device = Backend::Flex.device();
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            let model = Model::init(kind, 7, &device);
            let mut digit = [0u8; INPUT_PIXELS];
            for row in 6..22 {
                digit[row * 28 + 14] = 255; // a "1"
            }
            let p = model.predict(&digit).unwrap();
            assert!(
                (p.iter().sum::<f32>() - 1.0).abs() < 1e-4,
                "{kind:?}: {p:?}"
            );
            assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
            assert_eq!(model.predict(&digit[..100]), Err(PredictError(100)));
        }
    }
}
