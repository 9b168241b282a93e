//! Labelled image datasets: the `.tsd` file format, the fixed train/test split, batches.
//!
//! The volunteer's tab and the operator's server read the very same bytes, so the format
//! is small, versioned, size-checked and checksummed; see [`format`] for its layout.

mod batches;
pub mod format;
mod split;

pub(crate) use batches::batches_in_order;
pub use batches::{Batch, Batches, normalise};
pub use format::DecodeError;
pub use split::Split;

/// Labelled grayscale images, stored compactly as bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    rows: u16,
    cols: u16,
    classes: u8,
    labels: Vec<u8>,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("classes", &self.classes)
            .finish()
    }
}

impl Dataset {
    /// Builds a dataset from its parts, checking that they fit together.
    pub fn from_parts(
        rows: u16,
        cols: u16,
        classes: u8,
        labels: Vec<u8>,
        pixels: Vec<u8>,
    ) -> Result<Self, DecodeError> {
        format::check_dims(rows, cols, classes, labels.len())?;
        let want = labels.len() * usize::from(rows) * usize::from(cols);
        if pixels.len() != want {
            return Err(DecodeError::PixelCount {
                expected: want,
                found: pixels.len(),
            });
        }
        format::check_labels(&labels, classes)?;
        Ok(Self {
            rows,
            cols,
            classes,
            labels,
            pixels,
        })
    }

    /// How many examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image height in pixels.
    pub fn rows(&self) -> usize {
        usize::from(self.rows)
    }

    /// Image width in pixels.
    pub fn cols(&self) -> usize {
        usize::from(self.cols)
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows() * self.cols()
    }

    /// Number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        usize::from(self.classes)
    }

    /// All labels, one per example.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The pixels (0 = black, 255 = white) of example `i`, row-major.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The examples at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut labels = Vec::with_capacity(indices.len());
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            labels.push(self.labels[i]);
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
            labels,
            pixels,
        }
    }

    /// The examples of `parts` in order, or `None` if there are none or their image sizes or
    /// class counts differ.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Dataset>) -> Option<Dataset> {
        let mut parts = parts.into_iter().peekable();
        let first = *parts.peek()?;
        let (rows, cols, classes) = (first.rows, first.cols, first.classes);
        let mut labels = Vec::new();
        let mut pixels = Vec::new();
        for p in parts {
            if (p.rows, p.cols, p.classes) != (rows, cols, classes) {
                return None;
            }
            labels.extend_from_slice(&p.labels);
            pixels.extend_from_slice(&p.pixels);
        }
        Some(Dataset {
            rows,
            cols,
            classes,
            labels,
            pixels,
        })
    }

    /// How many examples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes()];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }
}
