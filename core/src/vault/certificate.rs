//! Membership certificates: the data owner says which keys belong to the run and what they
//! may do, in a form any validator can check later with only the owner's public key.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::RunId;
use super::codec::{self, DecodeError, EncodeError};
use super::member::MemberKey;
use super::signature::{self, CERTIFICATE_DOMAIN, Signature, VerifyError};

/// Largest encoded certificate (a valid one is at most 173 bytes).
pub const MAX_CERTIFICATE_BYTES: usize = 256;

const KIND: &str = "certificate";

/// What the owner certifies about a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The run.
    pub run_id: RunId,
    /// The member's ed25519 key (its address in consensus).
    pub member: [u8; 32],
    /// The member's X25519 key, to which grants are sealed.
    pub member_key: MemberKey,
    /// The first height at which the certificate no longer counts; `None` never expires.
    pub expires_at: Option<u64>,
    /// Whether the member may submit training updates.
    pub may_submit_updates: bool,
}

impl Membership {
    fn check(&self) -> Result<(), &'static str> {
        if VerifyingKey::from_bytes(&self.member).is_err() {
            return Err("the member's ed25519 key is not a valid point");
        }
        Ok(())
    }
}

/// Why a certificate does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The owner's signature or the run does not check out.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Past its expiry height.
    #[error(
        "the membership certificate expired at height {expires_at} (now {height}): ask the data owner to renew it"
    )]
    Expired {
        /// Its expiry height.
        expires_at: u64,
        /// The height it was checked at.
        height: u64,
    },
}

/// A membership signed by the data owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    membership: Membership,
    signature: Signature,
}

impl Certificate {
    /// Certifies `membership` as the data `owner`.
    pub fn sign(membership: Membership, owner: &SigningKey) -> Result<Self, EncodeError> {
        membership
            .check()
            .map_err(|reason| EncodeError::Invalid { kind: KIND, reason })?;
        let signature = signature::sign(CERTIFICATE_DOMAIN, &membership.run_id, &membership, owner);
        Ok(Self {
            membership,
            signature,
        })
    }

    /// The membership, if the owner signed it for `run_id` and it has not expired at `height`.
    /// What the member may do is in the returned [`Membership`].
    pub fn verify(
        &self,
        owner: &VerifyingKey,
        run_id: &RunId,
        height: u64,
    ) -> Result<&Membership, CertificateError> {
        signature::verify(
            KIND,
            CERTIFICATE_DOMAIN,
            run_id,
            &self.membership.run_id,
            &self.membership,
            &self.signature,
            owner,
        )?;
        match self.membership.expires_at {
            Some(expires_at) if height >= expires_at => {
                Err(CertificateError::Expired { expires_at, height })
            }
            _ => Ok(&self.membership),
        }
    }

    /// The owner's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Version byte, then the canonical postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Inverse of [`Self::encode`]: size limit, version, canonical form, field ranges.
    /// The signature is checked by [`Self::verify`], not here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let cert: Self = codec::decode(bytes, MAX_CERTIFICATE_BYTES, KIND)?;
        cert.membership
            .check()
            .map_err(|reason| DecodeError::Invalid { kind: KIND, reason })?;
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::MemberSecret;
    use crate::vault::manifest::tests::owner;
    use proptest::prelude::*;

    fn membership(expires_at: Option<u64>, may_submit_updates: bool) -> Membership {
        Membership {
            run_id: [5; 32],
            member: SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes(),
            member_key: MemberSecret::derive(&[1; 32]).public(),
            expires_at,
            may_submit_updates,
        }
    }

    fn verify(c: &Certificate, height: u64) -> Result<&Membership, CertificateError> {
        c.verify(&owner().verifying_key(), &[5; 32], height)
    }

    #[test]
    fn round_trips_and_verifies_until_it_expires() {
        let cert = Certificate::sign(membership(Some(100), true), &owner()).unwrap();
        let bytes = cert.encode();
        assert!(bytes.len() <= MAX_CERTIFICATE_BYTES);
        let back = Certificate::decode(&bytes).unwrap();
        assert_eq!(back, cert);
        assert!(verify(&back, 99).unwrap().may_submit_updates);
        let err = verify(&back, 100).unwrap_err();
        assert_eq!(
            err,
            CertificateError::Expired {
                expires_at: 100,
                height: 100
            }
        );
        assert!(err.to_string().contains("renew"));
        let forever = Certificate::sign(membership(None, false), &owner()).unwrap();
        assert!(!verify(&forever, u64::MAX).unwrap().may_submit_updates);
    }

    #[test]
    fn every_tampered_field_fails_the_signature() {
        let cert = Certificate::sign(membership(Some(100), false), &owner()).unwrap();
        let tampers: Vec<fn(&mut Membership)> = vec![
            |m| m.may_submit_updates = true,
            |m| m.expires_at = None,
            |m| m.expires_at = Some(1000),
            |m| m.member = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
            |m| m.member_key = MemberSecret::derive(&[2; 32]).public(),
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            let mut bad = cert.clone();
            tamper(&mut bad.membership);
            assert_eq!(
                verify(&bad, 0),
                Err(CertificateError::Verify(VerifyError::BadSignature {
                    kind: "certificate"
                })),
                "tamper {i}"
            );
        }
    }

    #[test]
    fn a_certificate_for_another_run_or_from_another_owner_does_not_count() {
        let cert = Certificate::sign(membership(None, true), &owner()).unwrap();
        assert!(matches!(
            cert.verify(&owner().verifying_key(), &[6; 32], 0),
            Err(CertificateError::Verify(VerifyError::WrongRun { .. }))
        ));
        let stranger = SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert!(matches!(
            cert.verify(&stranger, &[5; 32], 0),
            Err(CertificateError::Verify(VerifyError::BadSignature { .. }))
        ));
    }

    fn arb_membership() -> impl Strategy<Value = Membership> {
        (
            any::<[u8; 32]>(),
            any::<u8>(),
            any::<[u8; 32]>(),
            any::<Option<u64>>(),
            any::<bool>(),
        )
            .prop_map(|(run_id, m, key, expires_at, may)| Membership {
                run_id,
                member: SigningKey::from_bytes(&[m; 32]).verifying_key().to_bytes(),
                member_key: MemberKey(key),
                expires_at,
                may_submit_updates: may,
            })
    }

    proptest! {
        #[test]
        fn any_certificate_round_trips_and_verifies(m in arb_membership()) {
            let cert = Certificate::sign(m.clone(), &owner()).unwrap();
            let bytes = cert.encode();
            prop_assert!(bytes.len() <= MAX_CERTIFICATE_BYTES);
            let back = Certificate::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &cert);
            prop_assert_eq!(back.verify(&owner().verifying_key(), &m.run_id, 0).map(|_| ()).or_else(|e| match e {
                CertificateError::Expired { .. } => Ok(()),
                e => Err(e),
            }), Ok(()));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Certificate::decode(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, codec::VERSION);
            let _ = Certificate::decode(&versioned);
        }

        #[test]
        fn truncated_and_flipped_certificates_never_panic_nor_verify(
            m in arb_membership(), cut in any::<usize>(), pos in any::<usize>(), bit in 0u8..8,
        ) {
            let bytes = Certificate::sign(m.clone(), &owner()).unwrap().encode();
            prop_assert!(Certificate::decode(&bytes[..cut % bytes.len()]).is_err());
            let mut flipped = bytes.clone();
            flipped[pos % bytes.len()] ^= 1 << bit;
            if let Ok(bad) = Certificate::decode(&flipped) {
                prop_assert!(bad.verify(&owner().verifying_key(), &m.run_id, 0).is_err());
            }
        }
    }
}
