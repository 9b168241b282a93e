//! An update's payload bytes: a version byte, the trainer's address, then the delta as
//! little-endian f32s. The announcement names the payload by the hash of these bytes.
//!
//! The trainer's address inside the bytes gives every trainer's payload an address of its own:
//! a peer that copies someone else's announcement under its own key names a payload that
//! does not exist, and to claim the same delta it must first fetch it and re-wrap it, so the
//! original reaches the pool first and the copy is refused as a duplicate
//! ([`crate::pool::Pool::add_payload`]).

use tabswarm_consensus::identity::Address;
use tabswarm_core::chunks::{bytes_to_f32s, f32s_to_bytes};

/// Version of the payload format.
pub const VERSION: u8 = 1;
/// Bytes before the delta.
pub const HEADER_LEN: usize = 1 + 32;

/// Why payload bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Shorter than its header, or a delta that is not whole f32s.
    #[error("an update payload of {0} bytes is not a header and whole f32 values")]
    Length(usize),
    /// Another format version.
    #[error("update payload version {0} is not supported (expected {VERSION})")]
    Version(u8),
    /// Wrapped for another trainer than the announcement names.
    #[error("the update payload names another trainer than its announcement")]
    Trainer,
}

/// The payload bytes of `delta` by `trainer`.
pub fn encode(trainer: &Address, delta: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + delta.len() * 4);
    bytes.push(VERSION);
    bytes.extend_from_slice(&trainer.0);
    bytes.extend_from_slice(&f32s_to_bytes(delta));
    bytes
}

/// The delta in `bytes`, which must be wrapped for `trainer`.
pub fn decode(bytes: &[u8], trainer: &Address) -> Result<Vec<f32>, PayloadError> {
    if bytes.len() < HEADER_LEN {
        return Err(PayloadError::Length(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(PayloadError::Version(bytes[0]));
    }
    if bytes[1..HEADER_LEN] != trainer.0 {
        return Err(PayloadError::Trainer);
    }
    bytes_to_f32s(&bytes[HEADER_LEN..]).ok_or(PayloadError::Length(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_decodes_only_for_its_trainer_and_version() {
        let (me, other) = (Address([1; 32]), Address([2; 32]));
        let delta = [0.5f32, -1.25, 3.0];
        let bytes = encode(&me, &delta);
        assert_eq!(decode(&bytes, &me), Ok(delta.to_vec()));
        assert_eq!(decode(&bytes, &other), Err(PayloadError::Trainer));
        assert_ne!(bytes, encode(&other, &delta), "two trainers, one address");
        let mut newer = bytes.clone();
        newer[0] = VERSION + 1;
        assert_eq!(decode(&newer, &me), Err(PayloadError::Version(VERSION + 1)));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1], &me),
            Err(PayloadError::Length(bytes.len() - 1))
        );
        assert_eq!(decode(&bytes[..5], &me), Err(PayloadError::Length(5)));
    }
}
