//! Validator identities: ed25519 keys, the address derived from them, and signatures.

use core::fmt;

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A validator's address: its ed25519 public key bytes.
///
/// Using the key itself (not a hash of it) lets anyone verify a vote from the address alone,
/// which is what a late joiner checking commit certificates needs.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The address of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// The public key this address names, if its bytes are a valid curve point.
    pub fn public_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl malachitebft_core_types::Address for Address {}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// An ed25519 signature, kept as two 32-byte halves so serde can derive it and Malachite can
/// order it (its `SigningScheme::Signature` must be `Ord`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl Signature {
    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    /// A signature from its 64 bytes (any bytes are accepted; verification judges them).
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&bytes[..32]);
        s.copy_from_slice(&bytes[32..]);
        Self { r, s }
    }

    /// Whether this signs `message` under the key named by `address`.
    ///
    /// Uses strict verification, so malleated signatures and small-order keys are refused.
    pub fn verify(&self, address: &Address, message: &[u8]) -> bool {
        let Some(key) = address.public_key() else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&self.to_bytes());
        key.verify_strict(message, &sig).is_ok() && key.verify(message, &sig).is_ok()
    }
}

/// A validator's signing key.
#[derive(Clone)]
pub struct Keypair {
    key: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl Keypair {
    /// A key from its 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// This key's address.
    pub fn address(&self) -> Address {
        Address::of(&self.key.verifying_key())
    }

    /// Sign raw bytes. Callers pass bytes built by [`crate::sign::signing_bytes`].
    pub fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(&self.key.sign(message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_its_message_and_key() {
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let sig = a.sign_raw(b"hello");
        assert!(sig.verify(&a.address(), b"hello"));
        assert!(!sig.verify(&a.address(), b"hellp"));
        assert!(!sig.verify(&b.address(), b"hello"));
        let mut bytes = sig.to_bytes();
        bytes[10] ^= 1;
        assert!(!Signature::from_bytes(&bytes).verify(&a.address(), b"hello"));
    }
}
