//! The byte form of manifests and grants: a version byte, then postcard.
//!
//! postcard is deterministic for these types (structs, arrays, vectors, options; no maps),
//! so a value has exactly one encoding; decoding re-encodes and refuses anything else, so
//! no two byte strings carry one signature.

use serde::{Serialize, de::DeserializeOwned};

/// The encoding version every manifest and grant starts with.
pub const VERSION: u8 = 1;

/// Why bytes were not read as a manifest or grant. `kind` names which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty {kind}: the download or file was cut off; fetch it again")]
    Empty {
        /// What was being decoded.
        kind: &'static str,
    },
    /// More bytes than any valid value of this kind can have, refused before parsing.
    #[error("{kind} of {len} bytes exceeds the limit of {limit}: it is not a tabswarm {kind}")]
    TooLarge {
        /// What was being decoded.
        kind: &'static str,
        /// Input length.
        len: usize,
        /// The kind's limit.
        limit: usize,
    },
    /// A version this build does not read.
    #[error(
        "{kind} encoding version {version} is not supported (this build reads version {VERSION}): upgrade tabswarm, or ask the data owner for a version-{VERSION} {kind}"
    )]
    UnknownVersion {
        /// What was being decoded.
        kind: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// postcard refused the body.
    #[error("malformed {kind}: {reason}; the bytes are corrupt, fetch them again")]
    Malformed {
        /// What was being decoded.
        kind: &'static str,
        /// postcard's reason.
        reason: String,
    },
    /// Bytes left after a complete value.
    #[error("{count} bytes after the end of the {kind}: the bytes are corrupt, fetch them again")]
    TrailingBytes {
        /// What was being decoded.
        kind: &'static str,
        /// How many.
        count: usize,
    },
    /// The value decoded but is not in its one canonical encoding.
    #[error("{kind} is not canonically encoded: it was altered; fetch it again from the owner")]
    NotCanonical {
        /// What was being decoded.
        kind: &'static str,
    },
    /// The value decoded but a field is out of range.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// What was being decoded.
        kind: &'static str,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// Why a value could not be signed and encoded: no peer would accept it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field is out of range.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// What was being encoded.
        kind: &'static str,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The encoding exceeds the kind's limit, so decoders would refuse it.
    #[error("{kind} would be {len} bytes, over the limit of {limit}: use fewer, larger shards")]
    TooLarge {
        /// What was being encoded.
        kind: &'static str,
        /// Encoded length.
        len: usize,
        /// The kind's limit.
        limit: usize,
    },
}

/// The canonical body bytes (no version byte): what gets signed.
pub(super) fn body<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types are plain structs, arrays, vectors and options: postcard cannot fail on them.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Version byte followed by the canonical body.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = body(value);
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(VERSION);
    out.extend_from_slice(&body);
    out
}

/// Inverse of [`encode`]; the length is checked before anything is parsed.
pub(super) fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    kind: &'static str,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            kind,
            len: bytes.len(),
            limit,
        });
    }
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty { kind })?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion { kind, version });
    }
    let (value, tail): (T, _) =
        postcard::take_from_bytes(rest).map_err(|e| DecodeError::Malformed {
            kind,
            reason: e.to_string(),
        })?;
    if !tail.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind,
            count: tail.len(),
        });
    }
    // Overlong varints decode to the same value; refusing them keeps one encoding per value.
    if body(&value) != rest {
        return Err(DecodeError::NotCanonical { kind });
    }
    Ok(value)
}

/// The first bytes of an id in hex, for messages.
pub(super) fn short_hex(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_each_rejection() {
        let v: (u64, Vec<u8>) = (300, vec![1, 2, 3]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<(u64, Vec<u8>)>(&bytes, 100, "t"), Ok(v));
        assert!(matches!(
            decode::<(u64, Vec<u8>)>(&bytes, 3, "t"),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(
            decode::<u8>(&[], 10, "t"),
            Err(DecodeError::Empty { kind: "t" })
        );
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode::<(u64, Vec<u8>)>(&other, 100, "t"),
            Err(DecodeError::UnknownVersion { version: 9, .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<(u64, Vec<u8>)>(&long, 100, "t"),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn an_overlong_varint_is_not_canonical() {
        // 5 as a two-byte varint (0x85 0x00) decodes to 5 but is not its encoding.
        let bytes = [VERSION, 0x85, 0x00];
        assert_eq!(
            decode::<u64>(&bytes, 10, "t"),
            Err(DecodeError::NotCanonical { kind: "t" })
        );
    }
}
