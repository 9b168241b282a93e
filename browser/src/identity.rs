//! A tab's identity: one 32-byte secret the page keeps in IndexedDB (so credit survives
//! reloads), from which the two keys a peer needs are derived with separate labels: the
//! consensus key that signs updates (its address is what blocks credit) and the libp2p key
//! that names the tab on the network. Separate keys keep a signature made for one protocol
//! from ever being replayed in the other.

use sha2::{Digest, Sha256};
use tabswarm_consensus::identity::Keypair;

/// Bytes of the secret.
pub const SECRET_BYTES: usize = 32;

/// Why a secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSecret(pub usize);

impl std::fmt::Display for BadSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the stored identity has {} bytes, not {SECRET_BYTES}: clear this site's data to make a new one",
            self.0
        )
    }
}

impl std::error::Error for BadSecret {}

fn derive(label: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tabswarm/tab/v1/");
    h.update(label.as_bytes());
    h.update([0]);
    h.update(secret);
    h.finalize().into()
}

/// The keys of a tab.
#[derive(Debug)]
pub struct TabKeys {
    /// Signs updates; its address earns credit.
    pub consensus: Keypair,
    /// The libp2p key's 32-byte ed25519 secret.
    pub libp2p_secret: [u8; 32],
}

impl TabKeys {
    /// The keys of `secret` (32 bytes from `crypto.getRandomValues`, kept by the page).
    pub fn from_secret(secret: &[u8]) -> Result<Self, BadSecret> {
        if secret.len() != SECRET_BYTES {
            return Err(BadSecret(secret.len()));
        }
        Ok(Self {
            consensus: Keypair::from_seed(derive("consensus", secret)),
            libp2p_secret: derive("libp2p", secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_secret_gives_the_same_keys_and_the_two_keys_differ() {
        let a = TabKeys::from_secret(&[7; 32]).unwrap();
        let b = TabKeys::from_secret(&[7; 32]).unwrap();
        assert_eq!(a.consensus.address(), b.consensus.address());
        assert_eq!(a.libp2p_secret, b.libp2p_secret);
        assert_ne!(derive("consensus", &[7; 32]), a.libp2p_secret);
        let c = TabKeys::from_secret(&[8; 32]).unwrap();
        assert_ne!(a.consensus.address(), c.consensus.address());
    }

    #[test]
    fn a_secret_of_the_wrong_length_is_refused_with_what_to_do() {
        let e = TabKeys::from_secret(&[1; 16]).unwrap_err();
        assert_eq!(e, BadSecret(16));
        assert!(e.to_string().contains("clear this site's data"));
    }
}
