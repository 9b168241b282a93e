//! The ed25519 signing scheme as Malachite sees it.

use ed25519_dalek::VerifyingKey;

use crate::identity::{Keypair, Signature};

/// ed25519 over `domain || run id || canonical bytes` (see [`crate::sign`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

/// A signature or key of the wrong length or not on the curve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyDecodeError(&'static str);

impl malachitebft_core_types::SigningScheme for Ed25519 {
    type DecodingError = KeyDecodeError;
    type Signature = Signature;
    type PublicKey = VerifyingKey;
    type PrivateKey = Keypair;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, KeyDecodeError> {
        let arr: &[u8; 64] = bytes
            .try_into()
            .map_err(|_| KeyDecodeError("signature must be 64 bytes"))?;
        Ok(Signature::from_bytes(arr))
    }

    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.to_bytes().to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<VerifyingKey, KeyDecodeError> {
        let arr: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyDecodeError("public key must be 32 bytes"))?;
        VerifyingKey::from_bytes(arr).map_err(|_| KeyDecodeError("not an ed25519 point"))
    }

    fn encode_public_key(public_key: &VerifyingKey) -> Vec<u8> {
        public_key.to_bytes().to_vec()
    }
}
