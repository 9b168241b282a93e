//! A member's encryption key pair (X25519), derived from its 32-byte identity secret.
//!
//! The label differs from every label the signing keys are derived under (the tab derives
//! its consensus and libp2p keys under `tabswarm/tab/v1/…`), so one stored secret gives both
//! kinds of key and neither reveals the other.

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::codec::short_hex;

const LABEL: &[u8] = b"tabswarm/vault/member-x25519/v1\0";

pub(super) type HpkeKem = X25519HkdfSha256;

/// A member's X25519 public key, to which grants seal the dataset key.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberKey(pub [u8; 32]);

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemberKey({}..)", short_hex(&self.0))
    }
}

impl MemberKey {
    pub(super) fn to_hpke(self) -> Option<<HpkeKem as Kem>::PublicKey> {
        <HpkeKem as Kem>::PublicKey::from_bytes(&self.0).ok()
    }
}

/// A member's X25519 private key. Wiped on drop (hpke keeps it in a zeroizing
/// `x25519_dalek::StaticSecret`); Debug shows only the public key.
#[derive(Clone)]
pub struct MemberSecret {
    secret: <HpkeKem as Kem>::PrivateKey,
    public: MemberKey,
}

impl std::fmt::Debug for MemberSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl MemberSecret {
    /// The encryption key pair of the member whose identity secret is `identity`.
    ///
    /// RFC 9180's DeriveKeyPair over `SHA-256(label || identity)`: the same secret always
    /// gives the same pair, on every platform.
    pub fn derive(identity: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(LABEL);
        h.update(identity);
        let ikm = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        let (secret, public) = HpkeKem::derive_keypair(&ikm[..]);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            secret,
            public: MemberKey(bytes),
        }
    }

    /// The public key to give the data owner.
    pub fn public(&self) -> MemberKey {
        self.public
    }

    pub(super) fn hpke_secret(&self) -> &<HpkeKem as Kem>::PrivateKey {
        &self.secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_secret_gives_one_key_and_other_secrets_other_keys() {
        let a = MemberSecret::derive(&[7; 32]);
        assert_eq!(a.public(), MemberSecret::derive(&[7; 32]).public());
        assert_ne!(a.public(), MemberSecret::derive(&[8; 32]).public());
        // Not the identity secret itself, nor the hash the tab's consensus key uses.
        assert_ne!(a.public().0, [7; 32]);
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_ne!(a.public().0, ed.to_bytes());
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let a = MemberSecret::derive(&[7; 32]);
        let shown = format!("{a:?}");
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&a.hpke_secret().to_bytes());
        assert!(!shown.contains(&short_hex(&secret)), "{shown}");
        assert!(shown.contains(&short_hex(&a.public().0)), "{shown}");
    }
}
