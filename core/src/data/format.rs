//! The `.tsd` ("tabswarm dataset") file format, version 1.
//!
//! All integers little-endian. Sizes are checked before anything is allocated.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `TSDS` |
//! | 4 | 1 | format version, `1` |
//! | 5 | 1 | sample kind: `0` = 8-bit grayscale image |
//! | 6 | 1 | number of classes (1..=255) |
//! | 7 | 1 | reserved, `0` |
//! | 8 | 4 | example count `n` (1..=[`MAX_EXAMPLES`]) |
//! | 12 | 2 | rows |
//! | 14 | 2 | cols (rows x cols <= [`MAX_IMAGE_PIXELS`]) |
//! | 16 | n | labels, one byte each, each below the class count |
//! | 16+n | n x rows x cols | pixels, row-major, example after example |
//! | end-32 | 32 | SHA-256 of every byte before it |
//!
//! MNIST's 10,000 digits take 7.9 MB.

use sha2::{Digest, Sha256};

use super::Dataset;

/// First four bytes of every `.tsd` file.
pub const MAGIC: [u8; 4] = *b"TSDS";
/// The only version this build reads and writes.
pub const VERSION: u8 = 1;
/// Sample kind byte for 8-bit grayscale images.
pub const KIND_GRAY8: u8 = 0;
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// Trailer (checksum) length in bytes.
pub const CHECKSUM_LEN: usize = 32;
/// Largest example count accepted.
pub const MAX_EXAMPLES: usize = 1_000_000;
/// Largest image accepted (64 x 64).
pub const MAX_IMAGE_PIXELS: usize = 64 * 64;

/// Why bytes could not be read as a dataset. Every message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header and checksum.
    #[error("not a tabswarm dataset: {0} bytes is shorter than the 48-byte minimum")]
    TooShort(usize),
    /// The magic bytes are wrong.
    #[error("not a tabswarm dataset: magic bytes are {0:02x?}, expected \"TSDS\"")]
    BadMagic([u8; 4]),
    /// A version this build does not read.
    #[error(
        "dataset format version {0} is not supported (this build reads version 1); re-create the file with this version of tabswarm"
    )]
    UnsupportedVersion(u8),
    /// A sample kind this build does not read.
    #[error("dataset sample kind {0} is not supported (only 0, 8-bit grayscale images)")]
    UnsupportedKind(u8),
    /// Header fields out of range.
    #[error("bad dataset header: {0}")]
    BadHeader(&'static str),
    /// The file is shorter or longer than its header says.
    #[error(
        "dataset is {found} bytes but its header describes {expected}: the file is truncated or has trailing data; re-create it"
    )]
    WrongLength {
        /// Length implied by the header.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// The SHA-256 trailer does not match the content.
    #[error("dataset checksum mismatch: the file is corrupt; re-create it")]
    ChecksumMismatch,
    /// A label is not below the class count.
    #[error("example {index} has label {label}, but the dataset has only {classes} classes")]
    LabelOutOfRange {
        /// Example index.
        index: usize,
        /// Its label.
        label: u8,
        /// Class count from the header.
        classes: u8,
    },
    /// Pixel buffer of the wrong size (when building from parts).
    #[error("expected {expected} pixel bytes, found {found}")]
    PixelCount {
        /// Pixels implied by the dimensions.
        expected: usize,
        /// Pixels given.
        found: usize,
    },
}

pub(super) fn check_dims(rows: u16, cols: u16, classes: u8, n: usize) -> Result<(), DecodeError> {
    if classes == 0 {
        return Err(DecodeError::BadHeader("class count is 0"));
    }
    if n == 0 || n > MAX_EXAMPLES {
        return Err(DecodeError::BadHeader(
            "example count must be between 1 and 1,000,000",
        ));
    }
    let pixels = usize::from(rows) * usize::from(cols);
    if pixels == 0 || pixels > MAX_IMAGE_PIXELS {
        return Err(DecodeError::BadHeader(
            "image size must be between 1 and 64x64 pixels",
        ));
    }
    Ok(())
}

pub(super) fn check_labels(labels: &[u8], classes: u8) -> Result<(), DecodeError> {
    match labels.iter().position(|&l| l >= classes) {
        Some(index) => Err(DecodeError::LabelOutOfRange {
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

impl Dataset {
    /// Encodes the dataset as a version-1 `.tsd` file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_LEN + self.labels.len() + self.pixels.len() + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, KIND_GRAY8, self.classes, 0]);
        // from_parts/decode bound the count to MAX_EXAMPLES, so it fits in u32.
        out.extend_from_slice(&(self.labels.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.cols.to_le_bytes());
        out.extend_from_slice(&self.labels);
        out.extend_from_slice(&self.pixels);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Decodes a `.tsd` file, checking every field, the length and the checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion(bytes[4]));
        }
        if bytes[5] != KIND_GRAY8 {
            return Err(DecodeError::UnsupportedKind(bytes[5]));
        }
        let classes = bytes[6];
        if bytes[7] != 0 {
            return Err(DecodeError::BadHeader("reserved byte is not 0"));
        }
        let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let rows = u16::from_le_bytes([bytes[12], bytes[13]]);
        let cols = u16::from_le_bytes([bytes[14], bytes[15]]);
        check_dims(rows, cols, classes, n)?;
        let image_len = usize::from(rows) * usize::from(cols);
        // Bounded by the checks above: at most 1e6 * (1 + 4096) + 48 bytes, no overflow.
        let expected = HEADER_LEN + n + n * image_len + CHECKSUM_LEN;
        if bytes.len() != expected {
            return Err(DecodeError::WrongLength {
                expected,
                found: bytes.len(),
            });
        }
        let (content, checksum) = bytes.split_at(expected - CHECKSUM_LEN);
        if Sha256::digest(content).as_slice() != checksum {
            return Err(DecodeError::ChecksumMismatch);
        }
        let labels = content[HEADER_LEN..HEADER_LEN + n].to_vec();
        check_labels(&labels, classes)?;
        let pixels = content[HEADER_LEN + n..].to_vec();
        Ok(Dataset {
            rows,
            cols,
            classes,
            labels,
            pixels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tiny() -> Dataset {
        let labels = vec![0, 1, 2, 1];
        let pixels = (0..4 * 6).map(|i| i as u8 * 10).collect();
        Dataset::from_parts(2, 3, 3, labels, pixels).unwrap()
    }

    #[test]
    fn roundtrip_and_exact_length() {
        let d = tiny();
        let bytes = d.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 4 + 24 + CHECKSUM_LEN);
        assert_eq!(Dataset::decode(&bytes).unwrap(), d);
    }

    #[test]
    fn every_damage_is_named() {
        let good = tiny().encode();
        type Expect = fn(&DecodeError) -> bool;
        let cases: Vec<(Vec<u8>, Expect)> = vec![
            (good[..10].to_vec(), |e| {
                matches!(e, DecodeError::TooShort(10))
            }),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                |e| matches!(e, DecodeError::BadMagic(_)),
            ),
            (
                {
                    let mut b = good.clone();
                    b[4] = 2;
                    b
                },
                |e| matches!(e, DecodeError::UnsupportedVersion(2)),
            ),
            (good[..good.len() - 1].to_vec(), |e| {
                matches!(e, DecodeError::WrongLength { .. })
            }),
            (
                {
                    let mut b = good.clone();
                    b.push(0);
                    b
                },
                |e| matches!(e, DecodeError::WrongLength { .. }),
            ),
            (
                {
                    let mut b = good.clone();
                    b[HEADER_LEN + 5] ^= 0xff;
                    b
                },
                |e| matches!(e, DecodeError::ChecksumMismatch),
            ),
            (
                {
                    // A huge count must be refused before any allocation.
                    let mut b = good.clone();
                    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                    b
                },
                |e| matches!(e, DecodeError::BadHeader(_)),
            ),
        ];
        for (i, (bytes, check)) in cases.iter().enumerate() {
            let err = Dataset::decode(bytes).unwrap_err();
            assert!(check(&err), "case {i}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn labels_beyond_classes_are_refused_even_with_a_valid_checksum() {
        let d = tiny();
        let mut bytes = d.encode();
        bytes[HEADER_LEN] = 7;
        let n = bytes.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum);
        assert!(matches!(
            Dataset::decode(&bytes),
            Err(DecodeError::LabelOutOfRange {
                index: 0,
                label: 7,
                classes: 3
            })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Dataset::decode(&bytes);
        }

        #[test]
        fn flipped_bytes_are_always_detected(pos in 0usize..76, bit in 0u8..8) {
            let good = tiny().encode();
            let mut bad = good.clone();
            bad[pos % good.len()] ^= 1 << bit;
            prop_assert!(Dataset::decode(&bad).is_err());
        }
    }
}
