//! The run's data a tab keeps across loads: the owner-signed manifest, the tab's grant and
//! the sealed shards it fetched, so a reload trains at once instead of downloading its
//! shards again. Kept apart from the chain cache because it changes rarely (a new epoch, a
//! first fetch) while the chain moves every round, and is megabytes where the chain is not.
//! Nothing in it is trusted: the peer checks the manifest's signature, the grant, and every
//! shard against its address before use, exactly as it checks a node's files.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tabswarm_consensus::genesis::RunId;
use tabswarm_peer::data::DataRecord;
use tabswarm_peer::{Persist, RestoredData};

use crate::cache::{CacheError, unframe};

/// Version of the data cache encoding.
pub const DATA_CACHE_FORMAT: u8 = 1;

/// The largest data cache a tab reads back (a tab reads two training shards, the validation
/// and the test shards of one epoch: MNIST's come to about 9 MB).
pub const MAX_DATA_CACHE_BYTES: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Stored {
    run: [u8; 32],
    manifest: Option<Vec<u8>>,
    grants: Vec<Vec<u8>>,
    shards: Vec<([u8; 32], Vec<u8>)>,
}

/// The newest epoch's data a tab holds, kept from the peer's persist effects.
#[derive(Debug)]
pub struct DataCache {
    run: RunId,
    manifest: Option<Vec<u8>>,
    /// Grants by epoch.
    grants: Vec<(u64, Vec<u8>)>,
    /// Shard bytes by address, with their epoch.
    shards: BTreeMap<[u8; 32], (u64, Arc<Vec<u8>>)>,
    dirty: bool,
}

impl DataCache {
    /// An empty cache for `run`.
    pub fn new(run: RunId) -> Self {
        Self {
            run,
            manifest: None,
            grants: Vec::new(),
            shards: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Takes in what the peer asked to make durable; what restored records it was given
    /// come back through [`DataCache::keep_restored`].
    pub fn on_persist(&mut self, p: &Persist) {
        let Persist::Data(record) = p else { return };
        match record {
            DataRecord::Manifest(bytes) => self.manifest = Some(bytes.clone()),
            DataRecord::Grant { epoch, bytes } => self.grants.push((*epoch, bytes.clone())),
            DataRecord::Shard {
                epoch,
                address,
                bytes,
            } => {
                self.shards.insert(*address, (*epoch, bytes.clone()));
            }
            DataRecord::Forget { address, .. } => {
                self.shards.remove(address);
            }
            DataRecord::Prune { epoch } => {
                self.grants.retain(|(e, _)| e >= epoch);
                self.shards.retain(|_, (e, _)| *e >= *epoch);
            }
        }
        self.dirty = true;
    }

    /// Takes in the records a stored cache gave (so the next save keeps them). Their epoch
    /// is unknown here; the peer's next `Prune` after a new manifest drops them with
    /// everything else of an older epoch (epoch 0 sorts first).
    pub fn keep_restored(&mut self, restored: &RestoredData) {
        self.manifest = restored.manifests.last().cloned();
        self.grants = restored.grants.iter().map(|g| (0, g.clone())).collect();
        self.shards = restored
            .shards
            .iter()
            .map(|(a, b)| (*a, (0, Arc::new(b.clone()))))
            .collect();
    }

    /// The encoded cache when it changed since the last call; `None` otherwise.
    pub fn take_new(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let stored = Stored {
            run: self.run.0,
            manifest: self.manifest.clone(),
            grants: self.grants.iter().map(|(_, g)| g.clone()).collect(),
            shards: self
                .shards
                .iter()
                .map(|(a, (_, b))| (*a, b.to_vec()))
                .collect(),
        };
        let mut out = vec![DATA_CACHE_FORMAT];
        out.extend(postcard::to_allocvec(&stored).ok()?);
        Some(out)
    }

    /// A stored cache of `run` as the records the peer restarts from (it checks them).
    pub fn decode(bytes: &[u8], run: RunId) -> Result<RestoredData, CacheError> {
        let stored: Stored = unframe(bytes, DATA_CACHE_FORMAT, MAX_DATA_CACHE_BYTES)?;
        if stored.run != run.0 {
            return Err(CacheError::OtherRun);
        }
        Ok(RestoredData {
            manifests: stored.manifest.into_iter().collect(),
            grants: stored.grants,
            shards: stored.shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: RunId = RunId([3; 32]);

    fn shard(epoch: u64, address: u8, len: usize) -> Persist {
        Persist::Data(DataRecord::Shard {
            epoch,
            address: [address; 32],
            bytes: Arc::new(vec![address; len]),
        })
    }

    fn grant(epoch: u64) -> Persist {
        Persist::Data(DataRecord::Grant {
            epoch,
            bytes: vec![epoch as u8; 5],
        })
    }

    fn restored(cache: &mut DataCache) -> RestoredData {
        DataCache::decode(&cache.take_new().expect("something to save"), RUN).unwrap()
    }

    #[test]
    fn the_newest_epoch_is_kept_and_saved_only_when_it_changed() {
        let mut cache = DataCache::new(RUN);
        assert_eq!(cache.take_new(), None, "nothing held");
        cache.on_persist(&Persist::Data(DataRecord::Manifest(vec![1])));
        cache.on_persist(&grant(1));
        cache.on_persist(&shard(1, 7, 100));
        cache.on_persist(&shard(1, 8, 50));
        let r = restored(&mut cache);
        assert_eq!(r.manifests, vec![vec![1]]);
        assert_eq!(r.grants, vec![vec![1; 5]]);
        assert_eq!(
            r.shards,
            vec![([7; 32], vec![7; 100]), ([8; 32], vec![8; 50])]
        );
        assert_eq!(cache.take_new(), None, "nothing new since the last save");
        // The chain's records do not touch it.
        cache.on_persist(&Persist::Params {
            height: 3,
            bytes: Arc::new(vec![0; 8]),
            checkpoint: false,
        });
        assert_eq!(cache.take_new(), None);

        // A new epoch: its manifest replaces the old, the prune drops the old grants and
        // shards, a forgotten shard goes.
        cache.on_persist(&Persist::Data(DataRecord::Manifest(vec![2])));
        cache.on_persist(&Persist::Data(DataRecord::Prune { epoch: 2 }));
        cache.on_persist(&grant(2));
        cache.on_persist(&shard(2, 9, 10));
        cache.on_persist(&shard(2, 10, 10));
        cache.on_persist(&Persist::Data(DataRecord::Forget {
            epoch: 2,
            address: [10; 32],
        }));
        let r = restored(&mut cache);
        assert_eq!(r.manifests, vec![vec![2]]);
        assert_eq!(r.grants, vec![vec![2; 5]]);
        assert_eq!(r.shards, vec![([9; 32], vec![9; 10])]);
    }

    #[test]
    fn restored_records_are_saved_again_until_a_newer_epoch_prunes_them() {
        let mut first = DataCache::new(RUN);
        first.on_persist(&Persist::Data(DataRecord::Manifest(vec![1])));
        first.on_persist(&grant(1));
        first.on_persist(&shard(1, 7, 20));
        let r = restored(&mut first);

        let mut next = DataCache::new(RUN);
        next.keep_restored(&r);
        next.on_persist(&shard(1, 8, 20));
        let again = restored(&mut next);
        assert_eq!(again.shards.len(), 2, "the restored shard is kept");
        assert_eq!(again.manifests, r.manifests);
        next.on_persist(&Persist::Data(DataRecord::Manifest(vec![2])));
        next.on_persist(&Persist::Data(DataRecord::Prune { epoch: 2 }));
        let pruned = restored(&mut next);
        assert!(pruned.shards.is_empty() && pruned.grants.is_empty());
    }

    #[test]
    fn another_run_version_damage_or_oversize_is_refused_without_panic() {
        let mut cache = DataCache::new(RUN);
        cache.on_persist(&shard(1, 7, 300));
        let bytes = cache.take_new().unwrap();
        assert_eq!(
            DataCache::decode(&bytes, RunId([9; 32])).err(),
            Some(CacheError::OtherRun)
        );
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            DataCache::decode(&other, RUN).err(),
            Some(CacheError::Version(9))
        );
        for cut in [0, 1, 2, 33, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                DataCache::decode(&bytes[..cut], RUN).is_err(),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            DataCache::decode(&vec![DATA_CACHE_FORMAT; MAX_DATA_CACHE_BYTES + 1], RUN),
            Err(CacheError::TooLarge(..))
        ));
    }
}
