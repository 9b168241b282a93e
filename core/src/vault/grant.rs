//! Grants: the dataset key of one epoch sealed to one member with HPKE (RFC 9180), signed by
//! the data owner.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode (the owner's
//! ed25519 signature authenticates the sender). HPKE's `info` binds run id, epoch and both
//! member keys, so a sealed key lifted into another grant, even one the owner signed, does
//! not open. Revocation is a new epoch: a grant for epoch `e` opens only epoch `e`'s key,
//! and that key opens only epoch `e`'s shards.

use ed25519_dalek::{SigningKey, VerifyingKey};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::codec::{self, DecodeError};
use super::member::{HpkeKem, MemberKey, MemberSecret};
use super::rng::Lent;
use super::signature::{self, GRANT_DOMAIN, Signature, VerifyError};
use super::{DatasetKey, RunId};

/// Largest encoded grant (a valid one is at most 252 bytes).
pub const MAX_GRANT_BYTES: usize = 512;
/// Bytes of the sealed dataset key: 32 key bytes and a 16-byte tag.
pub const SEALED_KEY_LEN: usize = 48;

const KIND: &str = "grant";
const INFO_DOMAIN: &[u8] = b"tabswarm/grant-hpke/v1\0";

/// Why a grant was not made, found or opened. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The member has no grant for this epoch (never granted, or revoked by a rotation).
    #[error(
        "no grant for this member at dataset epoch {epoch}: ask the data owner for access (a grant for an earlier epoch does not open a later one)"
    )]
    NoGrant {
        /// The epoch looked for.
        epoch: u64,
    },
    /// The owner's signature or the run does not check out.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The grant is sealed to another member's key.
    #[error(
        "this grant is for member key {grant_key}.., not yours ({your_key}..): only the member it names can open it"
    )]
    NotForYou {
        /// First bytes of the key it is sealed to, in hex.
        grant_key: String,
        /// First bytes of the opener's key, in hex.
        your_key: String,
    },
    /// HPKE did not open the sealed key.
    #[error(
        "the sealed dataset key does not open for this member, run and epoch: the grant was altered; ask the data owner for a new one"
    )]
    Unseal,
    /// The member's key is not a usable X25519 public key.
    #[error(
        "the member's encryption key is not usable (a low-order point): ask the member for its key again"
    )]
    BadMemberKey,
}

/// What the owner signs in a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBody {
    /// The run.
    pub run_id: RunId,
    /// The dataset epoch whose key is sealed.
    pub epoch: u64,
    /// The member's ed25519 key: who the owner admitted.
    pub member: [u8; 32],
    /// The member's X25519 key the dataset key is sealed to.
    pub member_key: MemberKey,
    /// HPKE's encapsulated key.
    pub encapsulated: [u8; 32],
    /// The dataset key, HPKE-sealed ([`SEALED_KEY_LEN`] bytes).
    pub sealed_key: Vec<u8>,
}

impl GrantBody {
    fn check(&self) -> Result<(), &'static str> {
        if self.sealed_key.len() != SEALED_KEY_LEN {
            return Err("the sealed key is not 48 bytes");
        }
        if VerifyingKey::from_bytes(&self.member).is_err() {
            return Err("the member's ed25519 key is not a valid point");
        }
        Ok(())
    }
}

/// A signed grant of one epoch's dataset key to one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    body: GrantBody,
    signature: Signature,
}

/// HPKE's `info`: fixed-length fields, so the concatenation is unambiguous.
fn info(run_id: &RunId, epoch: u64, member: &[u8; 32], member_key: &MemberKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(INFO_DOMAIN.len() + 32 + 8 + 32 + 32);
    out.extend_from_slice(INFO_DOMAIN);
    out.extend_from_slice(run_id);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(member);
    out.extend_from_slice(&member_key.0);
    out
}

impl Grant {
    /// Seals `key` to the member with ed25519 key `member` and encryption key `member_key`,
    /// signed by the data `owner`.
    pub fn seal<R: rand_core::CryptoRng + ?Sized>(
        owner: &SigningKey,
        key: &DatasetKey,
        member: &VerifyingKey,
        member_key: MemberKey,
        rng: &mut R,
    ) -> Result<Self, GrantError> {
        let recipient = member_key.to_hpke().ok_or(GrantError::BadMemberKey)?;
        let member = member.to_bytes();
        let info = info(key.run_id(), key.epoch(), &member, &member_key);
        let (encapped, sealed_key) =
            hpke::single_shot_seal_with_rng::<AesGcm256, HkdfSha256, HpkeKem>(
                &OpModeS::Base,
                &recipient,
                &info,
                key.secret_bytes(),
                &[],
                &mut Lent(rng),
            )
            // Encapsulation fails only for a low-order recipient key (all-zero shared secret).
            .map_err(|_| GrantError::BadMemberKey)?;
        let mut encapsulated = [0u8; 32];
        encapsulated.copy_from_slice(&encapped.to_bytes());
        let body = GrantBody {
            run_id: *key.run_id(),
            epoch: key.epoch(),
            member,
            member_key,
            encapsulated,
            sealed_key,
        };
        let signature = signature::sign(GRANT_DOMAIN, &body.run_id, &body, owner);
        Ok(Self { body, signature })
    }

    /// The grant's terms, once the owner's signature for run `run_id` verifies.
    pub fn verify(&self, owner: &VerifyingKey, run_id: &RunId) -> Result<&GrantBody, VerifyError> {
        signature::verify(
            KIND,
            GRANT_DOMAIN,
            run_id,
            &self.body.run_id,
            &self.body,
            &self.signature,
            owner,
        )?;
        Ok(&self.body)
    }

    /// The dataset key, for the member holding `secret`: checks the owner's signature for
    /// `run_id`, that the grant names this member's key, then opens the HPKE seal.
    pub fn open(
        &self,
        owner: &VerifyingKey,
        run_id: &RunId,
        secret: &MemberSecret,
    ) -> Result<DatasetKey, GrantError> {
        let body = self.verify(owner, run_id)?;
        if body.member_key != secret.public() {
            return Err(GrantError::NotForYou {
                grant_key: codec::short_hex(&body.member_key.0),
                your_key: codec::short_hex(&secret.public().0),
            });
        }
        let encapped = <HpkeKem as Kem>::EncappedKey::from_bytes(&body.encapsulated)
            .map_err(|_| GrantError::Unseal)?;
        let info = info(&body.run_id, body.epoch, &body.member, &body.member_key);
        let plain = Zeroizing::new(
            hpke::single_shot_open::<AesGcm256, HkdfSha256, HpkeKem>(
                &OpModeR::Base,
                secret.hpke_secret(),
                &encapped,
                &info,
                &body.sealed_key,
                &[],
            )
            .map_err(|_| GrantError::Unseal)?,
        );
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| GrantError::Unseal)?;
        Ok(DatasetKey::from_bytes(body.run_id, body.epoch, bytes))
    }

    /// Among `grants`, the one sealed to `member_key` for `epoch` (not yet verified).
    pub fn find<'a>(
        grants: &'a [Grant],
        member_key: &MemberKey,
        epoch: u64,
    ) -> Result<&'a Grant, GrantError> {
        grants
            .iter()
            .find(|g| &g.body.member_key == member_key && g.body.epoch == epoch)
            .ok_or(GrantError::NoGrant { epoch })
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
    /// The signature is checked by [`Self::verify`] and [`Self::open`], not here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let grant: Self = codec::decode(bytes, MAX_GRANT_BYTES, KIND)?;
        grant
            .body
            .check()
            .map_err(|reason| DecodeError::Invalid { kind: KIND, reason })?;
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::manifest::tests::owner;
    use crate::vault::shard::tests::samples;
    use crate::vault::{ShardError, SignedManifest, seal_dataset};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const RUN: RunId = [5; 32];

    struct Member {
        id: VerifyingKey,
        secret: MemberSecret,
    }

    fn member(seed: u8) -> Member {
        Member {
            id: SigningKey::from_bytes(&[seed; 32]).verifying_key(),
            secret: MemberSecret::derive(&[seed; 32]),
        }
    }

    fn grant(key: &DatasetKey, m: &Member, rng: &mut ChaCha20Rng) -> Grant {
        Grant::seal(&owner(), key, &m.id, m.secret.public(), rng).unwrap()
    }

    fn setup() -> (DatasetKey, Member, Grant, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let key = DatasetKey::generate(RUN, 1, &mut rng);
        let alice = member(1);
        let g = grant(&key, &alice, &mut rng);
        (key, alice, g, rng)
    }

    fn open(g: &Grant, m: &Member) -> Result<DatasetKey, GrantError> {
        g.open(&owner().verifying_key(), &RUN, &m.secret)
    }

    #[test]
    fn the_member_opens_the_key_and_the_grant_round_trips() {
        let (key, alice, g, _) = setup();
        let bytes = g.encode();
        assert!(bytes.len() <= MAX_GRANT_BYTES, "{}", bytes.len());
        let back = Grant::decode(&bytes).unwrap();
        assert_eq!(back, g);
        let opened = open(&back, &alice).unwrap();
        assert_eq!(opened.secret_bytes(), key.secret_bytes());
        assert_eq!((opened.run_id(), opened.epoch()), (&RUN, 1));
    }

    #[test]
    fn another_member_cannot_open_it() {
        let (_, _, g, _) = setup();
        let err = open(&g, &member(2)).unwrap_err();
        assert!(matches!(err, GrantError::NotForYou { .. }));
        assert!(err.to_string().contains("only the member it names"));
    }

    #[test]
    fn another_member_who_rewrites_the_key_field_fails_the_signature() {
        let (_, _, g, _) = setup();
        let bob = member(2);
        let mut stolen = g.clone();
        stolen.body.member_key = bob.secret.public();
        assert!(matches!(
            open(&stolen, &bob),
            Err(GrantError::Verify(VerifyError::BadSignature { .. }))
        ));
    }

    #[test]
    fn every_tampered_field_fails_the_signature() {
        let (_, alice, g, _) = setup();
        let tampers: Vec<fn(&mut GrantBody)> = vec![
            |b| b.epoch += 1,
            |b| b.member = member(3).id.to_bytes(),
            |b| b.encapsulated[0] ^= 1,
            |b| b.sealed_key[0] ^= 1,
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            let mut bad = g.clone();
            tamper(&mut bad.body);
            assert_eq!(
                open(&bad, &alice).unwrap_err(),
                GrantError::Verify(VerifyError::BadSignature { kind: "grant" }),
                "tamper {i}"
            );
        }
        let mut bad = g.clone();
        bad.signature = grant(
            &DatasetKey::from_bytes(RUN, 1, [0; 32]),
            &alice,
            &mut ChaCha20Rng::seed_from_u64(1),
        )
        .signature;
        assert!(open(&bad, &alice).is_err());
    }

    #[test]
    fn a_low_order_member_key_is_refused_when_sealing() {
        let (key, alice, _, mut rng) = setup();
        assert_eq!(
            Grant::seal(&owner(), &key, &alice.id, MemberKey([0; 32]), &mut rng).unwrap_err(),
            GrantError::BadMemberKey
        );
    }

    #[test]
    fn a_grant_replayed_into_another_run_fails() {
        let (_, alice, g, _) = setup();
        let err = g
            .open(&owner().verifying_key(), &[6; 32], &alice.secret)
            .unwrap_err();
        assert!(matches!(
            err,
            GrantError::Verify(VerifyError::WrongRun { .. })
        ));
    }

    #[test]
    fn a_sealed_key_lifted_into_another_epoch_or_run_does_not_open_even_if_signed() {
        // The owner's tooling signing a wrong body must not hand out the key: HPKE's info
        // binds run, epoch and member, so only the body the key was sealed for opens it.
        let (_, alice, g, _) = setup();
        let lifts: Vec<fn(&mut GrantBody)> = vec![|b| b.epoch = 2, |b| b.run_id = [6; 32], |b| {
            b.member = member(3).id.to_bytes()
        }];
        for (i, lift) in lifts.iter().enumerate() {
            let mut body = g.body.clone();
            lift(&mut body);
            let signature = signature::sign(GRANT_DOMAIN, &body.run_id, &body, &owner());
            let run = body.run_id;
            let resigned = Grant { body, signature };
            assert_eq!(
                resigned
                    .open(&owner().verifying_key(), &run, &alice.secret)
                    .unwrap_err(),
                GrantError::Unseal,
                "lift {i}"
            );
        }
    }

    #[test]
    fn a_member_without_a_grant_is_told_to_ask_the_owner() {
        let (_, alice, g, _) = setup();
        let grants = [g];
        assert!(Grant::find(&grants, &alice.secret.public(), 1).is_ok());
        let err = Grant::find(&grants, &member(2).secret.public(), 1).unwrap_err();
        assert_eq!(err, GrantError::NoGrant { epoch: 1 });
        assert!(err.to_string().contains("ask the data owner"));
        assert_eq!(
            Grant::find(&grants, &alice.secret.public(), 2).unwrap_err(),
            GrantError::NoGrant { epoch: 2 }
        );
    }

    #[test]
    fn a_member_revoked_at_epoch_2_cannot_read_epoch_2_shards() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (alice, bob) = (member(1), member(2));
        let data = samples(8, 0);
        let key1 = DatasetKey::generate(RUN, 1, &mut rng);
        let grants = vec![grant(&key1, &alice, &mut rng), grant(&key1, &bob, &mut rng)];
        // Rotation: a fresh key, shards sealed again, and a grant for Alice only.
        let key2 = DatasetKey::generate(RUN, 2, &mut rng);
        let sealed = seal_dataset(&data, 4, &key2, &mut rng).unwrap();
        let manifest2 = SignedManifest::sign(sealed.manifest, &owner()).unwrap();
        let grants2 = [grant(&key2, &alice, &mut rng)];
        let m2 = manifest2.verify(&owner().verifying_key(), &RUN).unwrap();
        let shard = sealed.shards[0].as_bytes();

        let alice2 = open(
            Grant::find(&grants2, &alice.secret.public(), 2).unwrap(),
            &alice,
        );
        assert!(m2.open_shard(0, shard, &alice2.unwrap()).is_ok());

        assert_eq!(
            Grant::find(&grants2, &bob.secret.public(), 2).unwrap_err(),
            GrantError::NoGrant { epoch: 2 }
        );
        let bob1 = open(Grant::find(&grants, &bob.secret.public(), 1).unwrap(), &bob).unwrap();
        let err = m2.open_shard(0, shard, &bob1).unwrap_err();
        assert_eq!(
            err,
            ShardError::WrongEpoch {
                key_epoch: 1,
                manifest_epoch: 2
            }
        );
        assert!(err.to_string().contains("grant for epoch 2"));
        // Relabelling the old key as epoch 2 gets past the label, not past the AEAD.
        let relabelled = DatasetKey::from_bytes(RUN, 2, *bob1.secret_bytes());
        assert_eq!(
            m2.open_shard(0, shard, &relabelled),
            Err(ShardError::Decrypt { index: 0 })
        );
    }

    fn arb_grant() -> impl Strategy<Value = Grant> {
        (any::<[u8; 32]>(), any::<u64>(), 1u8..=255, any::<u64>()).prop_map(
            |(run, epoch, m, seed)| {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let key = DatasetKey::generate(run, epoch, &mut rng);
                grant(&key, &member(m), &mut rng)
            },
        )
    }

    proptest! {
        #[test]
        fn any_grant_round_trips_and_verifies(g in arb_grant()) {
            let back = Grant::decode(&g.encode()).unwrap();
            prop_assert_eq!(&back, &g);
            prop_assert!(back.verify(&owner().verifying_key(), &g.body.run_id).is_ok());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Grant::decode(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, codec::VERSION);
            let _ = Grant::decode(&versioned);
        }

        #[test]
        fn truncated_and_flipped_grants_never_panic_nor_open(
            g in arb_grant(), cut in any::<usize>(), pos in any::<usize>(), bit in 0u8..8,
        ) {
            let bytes = g.encode();
            prop_assert!(Grant::decode(&bytes[..cut % bytes.len()]).is_err());
            let mut flipped = bytes.clone();
            flipped[pos % bytes.len()] ^= 1 << bit;
            if let Ok(bad) = Grant::decode(&flipped) {
                prop_assert!(bad.verify(&owner().verifying_key(), &g.body.run_id).is_err());
            }
        }
    }
}
