//! Canonical encoding: postcard behind a version byte, with a size limit per message kind.
//!
//! postcard is deterministic for our types (no maps, fixed field order, varints), so the
//! same value always has the same bytes and can be hashed and signed.

use serde::{Serialize, de::DeserializeOwned};

/// The encoding version every encoded message starts with.
pub const VERSION: u8 = 1;

/// Why bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty input")]
    Empty,
    /// Longer than the limit for this kind.
    #[error("{len} bytes exceed the limit of {limit} for this kind")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The kind's limit.
        limit: usize,
    },
    /// A version this build does not know.
    #[error("unknown encoding version {0} (this build speaks {VERSION})")]
    UnknownVersion(u8),
    /// postcard refused the body.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over, so it was not canonical.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The body decoded but is not canonical (e.g. unsorted ids).
    #[error("not canonical: {0}")]
    NotCanonical(&'static str),
    /// The bytes hold a valid value of another kind than the caller asked for.
    #[error("wrong kind: {0}")]
    WrongKind(&'static str),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoding is longer than the kind's limit, so no peer would accept it.
    #[error("{len} bytes exceed the limit of {limit} for this kind")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The kind's limit.
        limit: usize,
    },
    /// postcard failed (only for types serde cannot represent).
    #[error("serialisation failed: {0}")]
    Serde(String),
    /// This kind of value has no byte form (e.g. a Malachite input it never writes to its
    /// write-ahead log); names the kind.
    #[error("{0} is not a persisted kind")]
    NotPersisted(&'static str),
}

/// The canonical body bytes of `value`, without the version byte (what gets hashed and signed).
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types are plain structs, enums, arrays and vectors: postcard cannot fail on them.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Version byte followed by the canonical body, refused if over `limit`.
pub fn encode<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let body = postcard::to_allocvec(value).map_err(|e| EncodeError::Serde(e.to_string()))?;
    let len = body.len() + 1;
    if len > limit {
        return Err(EncodeError::TooLarge { len, limit });
    }
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Inverse of [`encode`]; the length check comes before any parsing.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let v: (u32, Vec<u8>) = (7, vec![1, 2, 3]);
        let bytes = encode(&v, 100).expect("fits");
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<(u32, Vec<u8>)>(&bytes, 100), Ok(v.clone()));
        assert!(matches!(encode(&v, 3), Err(EncodeError::TooLarge { .. })));
        assert!(matches!(
            decode::<(u32, Vec<u8>)>(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(decode::<u8>(&[], 10), Err(DecodeError::Empty));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            decode::<(u32, Vec<u8>)>(&other, 100),
            Err(DecodeError::UnknownVersion(9))
        );
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(
            decode::<(u32, Vec<u8>)>(&longer, 100),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}
