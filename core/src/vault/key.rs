//! The dataset key: one AES-256-GCM key per (run, epoch).

use zeroize::Zeroizing;

use super::RunId;
use super::codec::short_hex;

/// The symmetric key every shard of one dataset epoch is encrypted under.
///
/// It carries the run and epoch it belongs to, so it is refused for another epoch's
/// manifest with an error that says so. Revoking a member means a new epoch with a fresh key
/// ([`DatasetKey::generate`] with `epoch + 1`), shards sealed again, and grants only for the
/// members who stay. The bytes are wiped when the key is dropped and never printed.
#[derive(Clone)]
pub struct DatasetKey {
    run_id: RunId,
    epoch: u64,
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DatasetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetKey")
            .field("run_id", &short_hex(&self.run_id))
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl DatasetKey {
    /// A fresh random key for `epoch` of `run_id`'s dataset.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(
        run_id: RunId,
        epoch: u64,
        rng: &mut R,
    ) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self {
            run_id,
            epoch,
            bytes,
        }
    }

    /// A key from its bytes: a public run's key published in its genesis, or one a grant opened.
    pub fn from_bytes(run_id: RunId, epoch: u64, bytes: [u8; 32]) -> Self {
        Self {
            run_id,
            epoch,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The run whose dataset this key encrypts.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The dataset epoch this key belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The secret bytes, for a public run that publishes its key. Handle with care.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_key() {
        let key = DatasetKey::from_bytes([1; 32], 4, [0xab; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("epoch: 4"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("abab"),
            "{shown}"
        );
    }
}
