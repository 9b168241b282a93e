//! Owner signatures: `ed25519(domain || run id || canonical body)` (DESIGN.md, "Signing").
//!
//! Each kind has its own domain string, so a manifest signature can never pass as a grant's;
//! the run id keeps a signature from one run out of every other.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::RunId;
use super::codec::{self, short_hex};

/// Domain of the data owner's manifest signature.
pub const MANIFEST_DOMAIN: &[u8] = b"tabswarm/manifest/v1\0";
/// Domain of the data owner's grant signature.
pub const GRANT_DOMAIN: &[u8] = b"tabswarm/grant/v1\0";

/// An ed25519 signature, as two 32-byte halves because serde derives arrays only up to 32.
#[derive(Copy, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}..)", short_hex(&self.r))
    }
}

impl Signature {
    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    fn from_dalek(sig: &ed25519_dalek::Signature) -> Self {
        Self {
            r: *sig.r_bytes(),
            s: *sig.s_bytes(),
        }
    }
}

/// Why a signed manifest or grant was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// It names another run than the one it is checked for.
    #[error(
        "this {kind} is for run {found}.., not run {expected}..: it cannot be used in this run"
    )]
    WrongRun {
        /// What was checked.
        kind: &'static str,
        /// First bytes of the run it was checked for, in hex.
        expected: String,
        /// First bytes of the run it names, in hex.
        found: String,
    },
    /// The signature is not the owner's over these exact bytes.
    #[error(
        "the {kind}'s signature does not verify under the data owner's key: it was altered or signed by someone else; fetch it again from the owner"
    )]
    BadSignature {
        /// What was checked.
        kind: &'static str,
    },
}

fn signed_bytes(domain: &[u8], run_id: &RunId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 32 + body.len());
    out.extend_from_slice(domain);
    out.extend_from_slice(run_id);
    out.extend_from_slice(body);
    out
}

pub(super) fn sign<T: Serialize>(
    domain: &[u8],
    run_id: &RunId,
    body: &T,
    owner: &SigningKey,
) -> Signature {
    let message = signed_bytes(domain, run_id, &codec::body(body));
    Signature::from_dalek(&owner.sign(&message))
}

/// Checks the run first (a clearer error than a bad signature), then the signature.
pub(super) fn verify<T: Serialize>(
    kind: &'static str,
    domain: &[u8],
    expected_run: &RunId,
    body_run: &RunId,
    body: &T,
    signature: &Signature,
    owner: &VerifyingKey,
) -> Result<(), VerifyError> {
    if body_run != expected_run {
        return Err(VerifyError::WrongRun {
            kind,
            expected: short_hex(expected_run),
            found: short_hex(body_run),
        });
    }
    let message = signed_bytes(domain, expected_run, &codec::body(body));
    let sig = ed25519_dalek::Signature::from_bytes(&signature.to_bytes());
    // Strict: refuses small-order keys and malleated signatures, as consensus does.
    owner
        .verify_strict(&message, &sig)
        .map_err(|_| VerifyError::BadSignature { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_distinct_and_prefix_free() {
        let all = [MANIFEST_DOMAIN, GRANT_DOMAIN];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
    }

    #[test]
    fn a_signature_is_bound_to_domain_run_and_body() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let key = owner.verifying_key();
        let run = [7; 32];
        let sig = sign(MANIFEST_DOMAIN, &run, &5u64, &owner);
        let check =
            |domain, run: &RunId, body: u64| verify("t", domain, run, run, &body, &sig, &key);
        assert_eq!(check(MANIFEST_DOMAIN, &run, 5), Ok(()));
        assert!(check(GRANT_DOMAIN, &run, 5).is_err());
        assert!(check(MANIFEST_DOMAIN, &[8; 32], 5).is_err());
        assert!(check(MANIFEST_DOMAIN, &run, 6).is_err());
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert!(verify("t", MANIFEST_DOMAIN, &run, &run, &5u64, &sig, &other).is_err());
    }
}
