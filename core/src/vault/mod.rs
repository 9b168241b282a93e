//! The encrypted data layer: shards, manifests and grants (a grant is also the member's proof
//! of membership in a closed run: DESIGN.md, "Members").
//!
//! A data owner seals a dataset into shards ([`seal_dataset`]): each is a `.tsd` file of a
//! fixed number of samples, encrypted with AES-256-GCM under the epoch's [`DatasetKey`] and
//! named by its content address (a chunked blob's, so it is fetched and checked in chunks).
//! The owner signs the [`Manifest`] listing them
//! ([`SignedManifest`]) and, for each member, a [`Grant`] that seals the dataset key to the
//! member's X25519 key with HPKE (RFC 9180). Anyone with the owner's public key can check
//! shards they store against the manifest; only members with a grant can read them.
//! Revoking a member is a new epoch: a fresh key, shards sealed again, grants for the
//! members who stay. In a closed run the holders of an epoch's grants are its members.
//!
//! Pure formats and crypto, no I/O: randomness (nonces, keys, HPKE ephemerals) comes from a
//! `rand_core` 0.9 [`CryptoRng`](rand_core::CryptoRng) the caller passes in. Formats and
//! limits are tabulated in DESIGN.md, "Data".
//!
//! ## Usage
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use tabswarm_core::{data::Dataset, vault};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = ChaCha20Rng::seed_from_u64(1); // a real owner seeds from the OS
//! let run_id = [7u8; 32];
//! let owner = SigningKey::from_bytes(&[1; 32]);
//! let dataset = Dataset::from_parts(2, 2, 2, vec![0, 1, 1], vec![0; 12])?;
//!
//! // The owner: seal, sign, grant.
//! let key = vault::DatasetKey::generate(run_id, 1, &mut rng);
//! let sealed = vault::seal_dataset(&dataset, 2, &key, &mut rng)?;
//! let manifest = vault::SignedManifest::sign(sealed.manifest, &owner)?.encode();
//! let member_id = SigningKey::from_bytes(&[2; 32]).verifying_key();
//! let member = vault::MemberSecret::derive(&[2; 32]); // from the member's identity secret
//! let grant = vault::Grant::seal(&owner, &key, &member_id, member.public(), &mut rng)?.encode();
//!
//! // The member: check the manifest, open the grant, read a shard.
//! let owner_key = owner.verifying_key();
//! let manifest = vault::SignedManifest::decode(&manifest)?;
//! let manifest = manifest.verify(&owner_key, &run_id)?;
//! let key = vault::Grant::decode(&grant)?.open(&owner_key, &run_id, &member)?;
//! let first = manifest.open_shard(0, sealed.shards[0].as_bytes(), &key)?;
//! assert_eq!(first.labels(), &[0, 1]);
//! # Ok(())
//! # }
//! ```

mod codec;
mod grant;
mod key;
mod manifest;
mod member;
mod rng;
mod shard;
mod signature;
mod split;

pub use codec::{DecodeError, EncodeError, VERSION};
pub use grant::{Grant, GrantBody, GrantError, MAX_GRANT_BYTES, SEALED_KEY_LEN};
pub use key::DatasetKey;
pub use manifest::{
    Layout, MAX_MANIFEST_BYTES, MAX_SHARDS, Manifest, Part, Schema, ShardEntry, SignedManifest,
};
pub use member::{MemberKey, MemberSecret};
pub use shard::{
    MAX_SHARD_BYTES, NONCE_LEN, SHARD_OVERHEAD, SHARD_VERSION, Shard, ShardAddress, ShardError,
    TAG_LEN, address_of,
};
pub use signature::{GRANT_DOMAIN, MANIFEST_DOMAIN, Signature, VerifyError};
pub use split::{SealError, Sealed, seal_dataset, seal_shards};

/// A run's id: the SHA-256 of its genesis (consensus's `RunId` holds the same bytes).
pub type RunId = [u8; 32];
