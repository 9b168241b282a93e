//! Validator identities: ed25519 keys, the address derived from them, and signatures.

use core::fmt;
use std::cell::RefCell;
use std::collections::HashMap;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
        self.memoised(&address.0, message, || {
            address
                .public_key()
                .is_some_and(|key| self.check(&key, message))
        })
    }

    /// As [`Self::verify`], for a caller that already holds the decompressed key (e.g. from
    /// the validator set): saves decompressing the address's curve point again.
    pub fn verify_with_key(&self, key: &VerifyingKey, message: &[u8]) -> bool {
        self.memoised(key.as_bytes(), message, || self.check(key, message))
    }

    fn check(&self, key: &VerifyingKey, message: &[u8]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&self.to_bytes());
        // `verify_strict` (ed25519-dalek 2.2) parses the signature as `verify` does, refuses
        // small-order R and A, then makes the same cofactorless check `[s]B - [k]A == R`
        // `verify` makes; so a plain `verify` after it (which this used to do) can never
        // fail and only doubled the cost.
        key.verify_strict(message, &sig).is_ok()
    }

    /// Runs `check` unless the cache [`VerifyCache::scope`] installed already knows the answer.
    fn memoised(&self, key: &[u8; 32], message: &[u8], check: impl FnOnce() -> bool) -> bool {
        ACTIVE_CACHE.with(|c| match c.borrow_mut().as_mut() {
            Some(cache) => cache.get_or_check(self, key, message, check),
            None => check(),
        })
    }
}

thread_local! {
    /// The cache [`VerifyCache::scope`] installed on this thread, if any.
    static ACTIVE_CACHE: RefCell<Option<VerifyCache>> = const { RefCell::new(None) };
}

/// A bounded memo of signature checks, for a simulator that runs many nodes on one thread.
///
/// Verification is a pure function of (public key, signed bytes, signature), so a node that
/// gets its answer from this memo computes exactly what it would compute alone; the memo
/// only saves the 100th validator from re-checking the vote 99 others already checked. Every
/// distinct (key, message, signature) is still verified with ed25519 once. Entries are keyed
/// by SHA-256 of all three (a collision would need a SHA-256 collision).
///
/// Bounded: two generations of at most `capacity` entries each; when the newer one fills,
/// the older one is dropped. A real node never installs one: it has no one to share with.
#[derive(Debug, Default)]
pub struct VerifyCache {
    current: HashMap<[u8; 32], bool>,
    previous: HashMap<[u8; 32], bool>,
    capacity: usize,
    hits: u64,
    checks: u64,
}

impl VerifyCache {
    /// An empty cache keeping up to `2 * capacity` results.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ..Self::default()
        }
    }

    /// Runs `f` with this cache serving every [`Signature::verify`] on this thread.
    pub fn scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a mut VerifyCache);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(c) = ACTIVE_CACHE.with(|c| c.borrow_mut().take()) {
                    *self.0 = c;
                }
            }
        }
        let cache = std::mem::take(self);
        let previous = ACTIVE_CACHE.with(|c| c.borrow_mut().replace(cache));
        debug_assert!(previous.is_none(), "verify cache scopes do not nest");
        let _restore = Restore(self);
        f()
    }

    /// Answers served from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// ed25519 verifications actually performed.
    pub fn checks(&self) -> u64 {
        self.checks
    }

    fn get_or_check(
        &mut self,
        sig: &Signature,
        key: &[u8; 32],
        message: &[u8],
        check: impl FnOnce() -> bool,
    ) -> bool {
        let mut h = Sha256::new();
        h.update(b"tabswarm/verify-cache/v1\0");
        h.update(key);
        h.update(sig.to_bytes());
        h.update(message);
        let k: [u8; 32] = h.finalize().into();
        if let Some(&ok) = self.current.get(&k).or_else(|| self.previous.get(&k)) {
            self.hits += 1;
            return ok;
        }
        self.checks += 1;
        let ok = check();
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(k, ok);
        ok
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

    /// The 32-byte secret seed (what other keys of this identity derive from).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
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
        assert!(sig.verify_with_key(&a.public_key(), b"hello"));
        assert!(!sig.verify_with_key(&b.public_key(), b"hello"));
    }

    #[test]
    fn cache_gives_the_same_answers_and_checks_each_distinct_input_once() {
        let a = Keypair::from_seed([1; 32]);
        let sig = a.sign_raw(b"hello");
        let mut bytes = sig.to_bytes();
        bytes[3] ^= 1;
        let bad = Signature::from_bytes(&bytes);
        let mut cache = VerifyCache::new(2);
        let answers = cache.scope(|| {
            (0..3)
                .map(|_| {
                    (
                        sig.verify(&a.address(), b"hello"),
                        bad.verify(&a.address(), b"hello"),
                        sig.verify(&a.address(), b"hellp"),
                    )
                })
                .collect::<Vec<_>>()
        });
        assert!(answers.iter().all(|x| *x == (true, false, false)));
        // Capacity 2 per generation: the third distinct input rotates generations, and the
        // first is then still found in the older one.
        assert_eq!(cache.checks(), 3);
        assert_eq!(cache.hits(), 6);
        // Outside the scope nothing is cached.
        assert!(sig.verify(&a.address(), b"hello"));
        assert_eq!(cache.hits(), 6);
    }
}
