//! A trainer's signed update announcement (DESIGN.md, "A round", step 2).
//!
//! The announcement is small and gossiped; the payload it names (the flat delta) is fetched
//! separately in hashed chunks. Its id, which proposals list, is the hash of the whole signed
//! announcement, so a proposal pins the exact payload, base and trainer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, DecodeError, EncodeError};
use crate::context::IncludedUpdate;
use crate::genesis::RunId;
use crate::identity::{Address, Keypair, Signature};
use crate::sign::{Domain, signing_bytes};

/// Largest encoded announcement; the real ones are ~200 bytes.
pub const UPDATE_LIMIT: usize = 512;

/// What a trainer announces after its local steps.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateHeader {
    /// Height the update is for (the base is the parameters after height - 1).
    pub height: u64,
    /// Hash of the parameters the local steps started from.
    pub base_param_hash: [u8; 32],
    /// Who trained (credited if included).
    pub trainer: Address,
    /// Examples seen (the update's weight in the mean).
    pub samples: u32,
    /// Loss of the first local step.
    pub loss_before: f32,
    /// Loss of the last local step.
    pub loss_after: f32,
    /// Hash of the payload's chunk manifest (see `tabswarm_core::chunks`).
    pub payload_hash: [u8; 32],
    /// Payload length in bytes.
    pub payload_len: u32,
}

/// An announcement with the trainer's signature over `Domain::Update || run || header`.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// What is announced.
    pub header: UpdateHeader,
    /// The trainer's signature.
    pub signature: Signature,
}

impl SignedUpdate {
    /// Signs `header` for `run`; `header.trainer` must be `key`'s address.
    pub fn sign(header: UpdateHeader, key: &Keypair, run: &RunId) -> Self {
        let bytes = signing_bytes(Domain::Update, run, &codec::canonical(&header));
        Self {
            header,
            signature: key.sign_raw(&bytes),
        }
    }

    /// Whether the signature is the trainer's, for this run.
    pub fn verify(&self, run: &RunId) -> bool {
        let bytes = signing_bytes(Domain::Update, run, &codec::canonical(&self.header));
        self.signature.verify(&self.header.trainer, &bytes)
    }

    /// The id proposals list: hash of the canonical signed announcement.
    pub fn id(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tabswarm/update-id/v1\0");
        h.update(codec::canonical(self));
        h.finalize().into()
    }

    /// The entry a proposal carries for this update.
    pub fn included(&self) -> IncludedUpdate {
        IncludedUpdate {
            id: self.id(),
            trainer: self.header.trainer.0,
        }
    }

    /// Versioned, size-limited bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode(self, UPDATE_LIMIT)
    }

    /// Inverse of [`SignedUpdate::encode`]; does not check the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, UPDATE_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(trainer: Address) -> UpdateHeader {
        UpdateHeader {
            height: 3,
            base_param_hash: [7; 32],
            trainer,
            samples: 1600,
            loss_before: 2.3,
            loss_after: 0.9,
            payload_hash: [9; 32],
            payload_len: 407_080,
        }
    }

    #[test]
    fn round_trips_and_verifies_only_in_its_run() {
        let key = Keypair::from_seed([4; 32]);
        let run = RunId([1; 32]);
        let u = SignedUpdate::sign(header(key.address()), &key, &run);
        let bytes = u.encode().unwrap();
        assert!(bytes.len() < UPDATE_LIMIT);
        let back = SignedUpdate::decode(&bytes).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.id(), u.id());
        assert!(back.verify(&run));
        assert!(!back.verify(&RunId([2; 32])), "cross-run replay must fail");
    }

    #[test]
    fn tampering_or_a_forged_trainer_fails() {
        let key = Keypair::from_seed([4; 32]);
        let other = Keypair::from_seed([5; 32]);
        let run = RunId([1; 32]);
        let mut u = SignedUpdate::sign(header(key.address()), &key, &run);
        u.header.samples += 1;
        assert!(!u.verify(&run));
        let forged = SignedUpdate::sign(header(key.address()), &other, &run);
        assert!(!forged.verify(&run));
    }

    #[test]
    fn garbage_and_oversize_are_refused() {
        assert!(SignedUpdate::decode(&[]).is_err());
        assert!(SignedUpdate::decode(&[1, 2, 3]).is_err());
        assert!(matches!(
            SignedUpdate::decode(&vec![1u8; UPDATE_LIMIT + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
