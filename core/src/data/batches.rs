use std::sync::Arc;

use super::Dataset;
use crate::rng::SeededRng;

/// MNIST's mean pixel intensity (of 1.0), used to centre inputs.
const PIXEL_MEAN: f32 = 0.1307;
/// MNIST's pixel standard deviation, used to scale inputs.
const PIXEL_STD: f32 = 0.3081;

/// A pixel (0 = black, 255 = white) as the models see it: centred and scaled by MNIST's
/// statistics.
pub fn normalise(pixel: u8) -> f32 {
    (f32::from(pixel) / 255.0 - PIXEL_MEAN) / PIXEL_STD
}

/// One mini-batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised pixels, `[len, image_len]` row-major: `(p / 255 - 0.1307) / 0.3081`.
    pub images: Vec<f32>,
    /// Class labels, one per example.
    pub labels: Vec<i64>,
    /// Pixels per example.
    pub image_len: usize,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Examples `range` of this batch (clamped to its length), as a batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        Batch {
            images: self.images[start * self.image_len..end * self.image_len].to_vec(),
            labels: self.labels[start..end].to_vec(),
            image_len: self.image_len,
        }
    }

    /// The examples `indices` of `dataset` as one batch.
    pub fn from_indices(dataset: &Dataset, indices: &[usize]) -> Batch {
        let image_len = dataset.image_len();
        let mut images = Vec::with_capacity(indices.len() * image_len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend(dataset.image(i).iter().map(|&p| normalise(p)));
            labels.push(i64::from(dataset.labels()[i]));
        }
        Batch {
            images,
            labels,
            image_len,
        }
    }
}

/// An endless, seeded stream of shuffled mini-batches over a dataset.
///
/// Each epoch is a fresh permutation; an epoch yields `len / batch_size` full batches and
/// leaves the remainder for later epochs' shuffles, so every batch has the same size.
#[derive(Debug)]
pub struct Batches {
    dataset: Arc<Dataset>,
    batch_size: usize,
    rng: SeededRng,
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
}

impl Batches {
    /// Batches of `batch_size` (clamped to 1..=len) drawn from `dataset` in an order fixed
    /// by `seed`.
    pub fn new(dataset: Arc<Dataset>, batch_size: usize, seed: u64) -> Self {
        let batch_size = batch_size.clamp(1, dataset.len().max(1));
        let len = dataset.len();
        Self {
            dataset,
            batch_size,
            rng: SeededRng::new(seed, "batches"),
            order: (0..len).collect(),
            cursor: usize::MAX,
            epoch: 0,
        }
    }

    /// Full batches per epoch.
    pub fn per_epoch(&self) -> usize {
        self.dataset.len() / self.batch_size
    }

    /// Completed epochs so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch, starting a new shuffled epoch when the current one is used up.
    pub fn next_batch(&mut self) -> Batch {
        if self.cursor.saturating_add(self.batch_size) > self.order.len() {
            if self.cursor != usize::MAX {
                self.epoch += 1;
            }
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let idx = &self.order[self.cursor..self.cursor + self.batch_size];
        self.cursor += self.batch_size;
        Batch::from_indices(&self.dataset, idx)
    }
}

/// Splits a dataset into consecutive batches of at most `batch_size` (for evaluation).
pub(crate) fn batches_in_order(
    dataset: &Dataset,
    batch_size: usize,
) -> impl Iterator<Item = Batch> + '_ {
    let batch_size = batch_size.max(1);
    (0..dataset.len()).step_by(batch_size).map(move |start| {
        let end = (start + batch_size).min(dataset.len());
        Batch::from_indices(dataset, &(start..end).collect::<Vec<_>>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_each_example_once() {
        let labels: Vec<u8> = (0..10).map(|i| i % 3).collect();
        let pixels: Vec<u8> = (0..10).collect();
        let d = Dataset::from_parts(1, 1, 3, labels, pixels).unwrap();
        let mut b = Batches::new(Arc::new(d), 3, 5);
        assert_eq!(b.per_epoch(), 3);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let batch = b.next_batch();
            assert_eq!(batch.len(), 3);
            seen.extend(
                batch
                    .images
                    .iter()
                    .map(|x| ((x * PIXEL_STD + PIXEL_MEAN) * 255.0).round() as i32),
            );
        }
        assert_eq!(b.epoch(), 0);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        b.next_batch();
        assert_eq!(b.epoch(), 1);
    }

    #[test]
    fn in_order_keeps_the_tail() {
        let d = Dataset::from_parts(1, 1, 2, vec![0; 7], vec![0; 7]).unwrap();
        let sizes: Vec<usize> = batches_in_order(&d, 3).map(|b| b.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }
}
