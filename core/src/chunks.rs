//! Content-addressed blobs moved in hashed chunks (update payloads, parameter checkpoints).
//!
//! A blob is cut into [`CHUNK_SIZE`] pieces; its [`Manifest`] lists each piece's SHA-256, and
//! the blob's address is the hash of the manifest. A receiver fetches the manifest first,
//! checks it against the address, then checks every chunk as it arrives, so one bad peer
//! costs one chunk, never a corrupted model. 64 KiB keeps a chunk inside a browser's WebRTC
//! message and gossip budgets with room to spare.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes per chunk (the last one may be shorter).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Largest blob: 64 MiB (a model far larger than ours would need a streaming format anyway).
pub const MAX_BLOB: u64 = 64 * 1024 * 1024;

/// The chunk hashes of a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Blob length in bytes.
    pub len: u64,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

/// Why a manifest or chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The manifest does not hash to the address asked for.
    #[error("manifest does not match its address")]
    WrongManifest,
    /// The manifest's chunk count does not fit its length, or the blob is too large.
    #[error("manifest is inconsistent: {len} bytes in {chunks} chunks (limit {MAX_BLOB} bytes)")]
    BadManifest {
        /// Claimed length.
        len: u64,
        /// Chunks listed.
        chunks: usize,
    },
    /// A chunk index past the end.
    #[error("chunk {0} does not exist")]
    NoSuchChunk(usize),
    /// A chunk's bytes do not hash to the manifest's entry.
    #[error("chunk {0} does not match its hash")]
    WrongChunk(usize),
}

fn chunk_hash(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tabswarm/chunk/v1\0");
    h.update(bytes);
    h.finalize().into()
}

impl Manifest {
    /// The manifest of `blob`.
    pub fn of(blob: &[u8]) -> Self {
        Self {
            len: blob.len() as u64,
            chunks: blob.chunks(CHUNK_SIZE).map(chunk_hash).collect(),
        }
    }

    /// The blob's address.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tabswarm/manifest/v1\0");
        h.update(self.len.to_le_bytes());
        for c in &self.chunks {
            h.update(c);
        }
        h.finalize().into()
    }

    /// Checks a manifest received for `address`.
    pub fn check(&self, address: &[u8; 32]) -> Result<(), ChunkError> {
        let expected = self.len.div_ceil(CHUNK_SIZE as u64);
        if self.len > MAX_BLOB || self.chunks.len() as u64 != expected {
            return Err(ChunkError::BadManifest {
                len: self.len,
                chunks: self.chunks.len(),
            });
        }
        if &self.hash() != address {
            return Err(ChunkError::WrongManifest);
        }
        Ok(())
    }

    /// Byte range of chunk `index` within the blob.
    pub fn range(&self, index: usize) -> Result<std::ops::Range<usize>, ChunkError> {
        if index >= self.chunks.len() {
            return Err(ChunkError::NoSuchChunk(index));
        }
        let start = index * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(self.len as usize);
        Ok(start..end)
    }

    /// Checks chunk `index`'s bytes.
    pub fn check_chunk(&self, index: usize, bytes: &[u8]) -> Result<(), ChunkError> {
        let range = self.range(index)?;
        if bytes.len() != range.len() || chunk_hash(bytes) != self.chunks[index] {
            return Err(ChunkError::WrongChunk(index));
        }
        Ok(())
    }
}

/// Reassembles a blob from verified chunks, in any arrival order.
#[derive(Debug, Clone)]
pub struct Assembly {
    manifest: Manifest,
    bytes: Vec<u8>,
    have: Vec<bool>,
    missing: usize,
}

impl Assembly {
    /// Starts a blob whose manifest was checked against its address.
    pub fn new(manifest: Manifest, address: &[u8; 32]) -> Result<Self, ChunkError> {
        manifest.check(address)?;
        let n = manifest.chunks.len();
        Ok(Self {
            bytes: vec![0; manifest.len as usize],
            have: vec![false; n],
            missing: n,
            manifest,
        })
    }

    /// Indices still missing.
    pub fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        self.have
            .iter()
            .enumerate()
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i)
    }

    /// Adds chunk `index` if its hash matches.
    pub fn add(&mut self, index: usize, bytes: &[u8]) -> Result<(), ChunkError> {
        self.manifest.check_chunk(index, bytes)?;
        let range = self.manifest.range(index)?;
        if !self.have[index] {
            self.bytes[range].copy_from_slice(bytes);
            self.have[index] = true;
            self.missing -= 1;
        }
        Ok(())
    }

    /// The blob and its (checked) manifest, once every chunk is in.
    pub fn finish(self) -> Result<(Manifest, Vec<u8>), Self> {
        if self.missing == 0 {
            Ok((self.manifest, self.bytes))
        } else {
            Err(self)
        }
    }
}

/// Little-endian bytes of a flat f32 vector (the payload of an update or checkpoint).
pub fn f32s_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Inverse of [`f32s_to_bytes`]; `None` if the length is not a multiple of 4.
pub fn bytes_to_f32s(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blob_round_trips_in_any_order_and_refuses_bad_chunks() {
        let blob: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let m = Manifest::of(&blob);
        assert_eq!(m.chunks.len(), 4);
        let address = m.hash();
        let mut a = Assembly::new(m.clone(), &address).unwrap();
        for i in [3, 1, 0, 2] {
            let r = m.range(i).unwrap();
            let mut bad = blob[r.clone()].to_vec();
            bad[0] ^= 1;
            assert_eq!(a.add(i, &bad), Err(ChunkError::WrongChunk(i)));
            a.add(i, &blob[r]).unwrap();
        }
        let (manifest, bytes) = a.finish().unwrap();
        assert_eq!(bytes, blob);
        assert_eq!(manifest, m);
    }

    #[test]
    fn manifests_are_checked_against_their_address() {
        let m = Manifest::of(b"hello");
        let mut other = m.clone();
        other.len = 6;
        assert_eq!(other.check(&m.hash()), Err(ChunkError::WrongManifest));
        let mut inconsistent = m.clone();
        inconsistent.chunks.push([0; 32]);
        assert!(matches!(
            inconsistent.check(&inconsistent.hash()),
            Err(ChunkError::BadManifest { .. })
        ));
        let huge = Manifest {
            len: MAX_BLOB + 1,
            chunks: vec![],
        };
        assert!(huge.check(&huge.hash()).is_err());
        assert_eq!(m.range(1), Err(ChunkError::NoSuchChunk(1)));
    }

    proptest! {
        #[test]
        fn f32_bytes_round_trip(v in proptest::collection::vec(any::<f32>(), 0..100)) {
            let back = bytes_to_f32s(&f32s_to_bytes(&v)).unwrap();
            prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }
}
