//! What a tab keeps across loads besides its identity: the chain it verified and the newest
//! committed parameters, so a reload resumes at that height in seconds instead of catching
//! up from genesis. The page keeps the encoded cache in IndexedDB. Nothing in it is trusted:
//! on load the peer verifies the chain from genesis and the parameters against the ledger's
//! hash, exactly as it checks a node's store, and a cache that fails is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tabswarm_consensus::genesis::RunId;
use tabswarm_consensus::node::{Persisted, Record};
use tabswarm_peer::{Persist, Restored};

/// Version of the cache encoding.
pub const CACHE_FORMAT: u8 = 1;

/// The largest cache a tab reads back (a long chain and the CNN's parameters fit many times).
pub const MAX_CACHE_BYTES: usize = 512 << 20;

/// Why a stored cache is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Longer than the cache's limit ([`MAX_CACHE_BYTES`] for the chain).
    #[error("{0} bytes is more than this cache may have ({1})")]
    TooLarge(usize, usize),
    /// Written by another version of the page.
    #[error("cache format {0} is not this page's")]
    Version(u8),
    /// Of another run (the page now joins a different network).
    #[error("the cache is of another run")]
    OtherRun,
    /// Not a cache, or damaged.
    #[error("damaged cache: {0}")]
    Damaged(String),
}

/// Reads what a cache wrote: within `max` bytes, the `format` byte, then postcard.
pub(crate) fn unframe<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    format: u8,
    max: usize,
) -> Result<T, CacheError> {
    if bytes.len() > max {
        return Err(CacheError::TooLarge(bytes.len(), max));
    }
    match bytes.split_first() {
        Some((&v, rest)) if v == format => {
            postcard::from_bytes(rest).map_err(|e| CacheError::Damaged(e.to_string()))
        }
        Some((&v, _)) => Err(CacheError::Version(v)),
        None => Err(CacheError::Damaged("empty".into())),
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    run: [u8; 32],
    height: u64,
    /// Encoded `Record::Block`s of heights `1..=height`.
    blocks: Vec<Vec<u8>>,
    /// Little-endian f32 parameters committed at `height`.
    params: Vec<u8>,
}

/// The chain and parameters a tab has, kept from the peer's persist effects.
#[derive(Debug)]
pub struct ChainCache {
    run: RunId,
    blocks: BTreeMap<u64, Vec<u8>>,
    params: Option<(u64, Arc<Vec<u8>>)>,
    saved_height: u64,
}

impl ChainCache {
    /// An empty cache for `run`, or one that restarts from `restored_height` (nothing new to
    /// save until the chain moves past it).
    pub fn new(run: RunId, restored_height: u64) -> Self {
        Self {
            run,
            blocks: BTreeMap::new(),
            params: None,
            saved_height: restored_height,
        }
    }

    /// Takes in what the peer asked to make durable.
    pub fn on_persist(&mut self, p: &Persist) {
        match p {
            Persist::Consensus(record @ Record::Block(block)) => {
                if let Ok(bytes) = record.encode() {
                    self.blocks.insert(block.height.0, bytes);
                }
            }
            Persist::Params { height, bytes, .. } => self.params = Some((*height, bytes.clone())),
            _ => {}
        }
    }

    /// Takes in the blocks a cache restored (so the next save includes them).
    pub fn keep_restored(&mut self, restored: &Restored) {
        for block in &restored.persisted.blocks {
            if let Ok(bytes) = Record::Block(Box::new(block.clone())).encode() {
                self.blocks.insert(block.height.0, bytes);
            }
        }
    }

    /// The encoded cache, when the chain moved since the last save and every block up to the
    /// parameters' height is held; `None` otherwise.
    pub fn take_new(&mut self) -> Option<Vec<u8>> {
        let (height, params) = self.params.as_ref()?;
        if *height <= self.saved_height {
            return None;
        }
        let blocks: Vec<Vec<u8>> = (1..=*height)
            .map(|h| self.blocks.get(&h).cloned())
            .collect::<Option<_>>()?;
        let stored = Stored {
            run: self.run.0,
            height: *height,
            blocks,
            params: params.to_vec(),
        };
        let mut out = vec![CACHE_FORMAT];
        out.extend(postcard::to_allocvec(&stored).ok()?);
        self.saved_height = *height;
        Some(out)
    }

    /// A stored cache of `run` as what the peer restarts from (the peer still verifies it).
    pub fn decode(bytes: &[u8], run: RunId) -> Result<Restored, CacheError> {
        let stored: Stored = unframe(bytes, CACHE_FORMAT, MAX_CACHE_BYTES)?;
        if stored.run != run.0 {
            return Err(CacheError::OtherRun);
        }
        let mut persisted = Persisted::default();
        for (i, bytes) in stored.blocks.iter().enumerate() {
            let record = Record::decode(bytes).map_err(|e| CacheError::Damaged(e.to_string()))?;
            match &record {
                Record::Block(b) if b.height.0 == i as u64 + 1 => persisted.apply(&record),
                _ => {
                    return Err(CacheError::Damaged(format!(
                        "entry {} is not block {}",
                        i,
                        i + 1
                    )));
                }
            }
        }
        Ok(Restored {
            persisted,
            params: vec![(stored.height, stored.params)],
            updates: Vec::new(),
            data: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use tabswarm_consensus::genesis::hex;
    use tabswarm_peer::{Peer, Persist};
    use tabswarm_sim::peers::{ALL, JobModel, PeerConfig, PeerSim, TRAINER};

    use super::*;

    /// A cache fed from `peer`'s chain and parameters, as the tab's persist effects feed it.
    fn cache_of(peer: &Peer<u32>) -> ChainCache {
        let mut cache = ChainCache::new(peer.run_id(), 0);
        for block in peer.ledger().blocks() {
            cache.on_persist(&Persist::Consensus(Record::Block(Box::new(block.clone()))));
        }
        let params: Vec<u8> = peer
            .app()
            .params()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        cache.on_persist(&Persist::Params {
            height: peer.app().height(),
            bytes: Arc::new(params),
            checkpoint: false,
        });
        cache
    }

    /// A trainer of `sim`'s run (key 4) restarting from `restored`.
    fn tab(sim: &PeerSim, restored: Restored) -> Result<Peer<u32>, tabswarm_peer::PeerError> {
        Peer::new(
            sim.genesis().clone(),
            sim.key(4).clone(),
            TRAINER,
            restored,
            0,
        )
    }

    /// Four validators that committed a few heights, and a cache fed from validator 0's chain.
    fn chain() -> (PeerSim, ChainCache) {
        let config = PeerConfig::new(5, 5, &[100, 100, 100, 100]);
        let model = JobModel::quadratic(&config.rules, 5).unwrap();
        let mut sim = PeerSim::new(config, model).unwrap();
        for i in 0..4 {
            sim.start(i, ALL).unwrap();
        }
        assert!(sim.run_until(60_000, |s| s.height(0) >= 6).unwrap());
        let cache = cache_of(sim.peer(0));
        (sim, cache)
    }

    #[test]
    fn a_reload_restarts_at_the_cached_height_with_the_same_parameters() {
        let (sim, mut cache) = chain();
        let bytes = cache.take_new().expect("a cache to save");
        assert_eq!(cache.take_new(), None, "nothing new since the last save");
        let held = sim.peer(0);
        let restored = ChainCache::decode(&bytes, held.run_id()).unwrap();
        let resumed = tab(&sim, restored).unwrap();
        assert_eq!(resumed.app().height(), held.app().height());
        assert_eq!(
            hex(&resumed.app().param_hash()),
            hex(&held.app().param_hash())
        );
        assert_eq!(resumed.ledger().credits(), held.ledger().credits());
    }

    #[test]
    fn a_cache_with_a_gap_is_not_saved() {
        let (_, mut cache) = chain();
        cache.blocks.remove(&2);
        assert_eq!(cache.take_new(), None);
    }

    #[test]
    fn another_run_version_or_damage_is_refused_without_panic() {
        let (sim, mut cache) = chain();
        let run = sim.peer(0).run_id();
        let bytes = cache.take_new().unwrap();
        assert_eq!(
            ChainCache::decode(&bytes, RunId([9; 32])).err(),
            Some(CacheError::OtherRun)
        );
        let mut other = bytes.clone();
        other[0] = 7;
        assert_eq!(
            ChainCache::decode(&other, run).err(),
            Some(CacheError::Version(7))
        );
        assert!(matches!(
            ChainCache::decode(&[], run),
            Err(CacheError::Damaged(_))
        ));
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                ChainCache::decode(&bytes[..cut], run).is_err(),
                "cut at {cut}"
            );
        }
        let big = vec![CACHE_FORMAT; MAX_CACHE_BYTES + 1];
        assert!(matches!(
            ChainCache::decode(&big, run),
            Err(CacheError::TooLarge(..))
        ));
    }

    #[test]
    fn a_tampered_chain_or_parameters_do_not_pass_the_peer() {
        let (sim, mut cache) = chain();
        let held = sim.peer(0);
        let height = held.app().height();
        // Parameters that do not hash to the ledger's: the peer starts over (catch-up).
        let (h, params) = cache.params.clone().unwrap();
        let mut bad = params.to_vec();
        bad[0] ^= 1;
        cache.params = Some((h, Arc::new(bad)));
        let restored = ChainCache::decode(&cache.take_new().unwrap(), held.run_id()).unwrap();
        let resumed = tab(&sim, restored).unwrap();
        assert_ne!(
            resumed.app().height(),
            height,
            "tampered parameters were taken"
        );
        // A block that does not verify: the peer refuses the whole chain.
        let mut restored =
            ChainCache::decode(&cache_of(held).take_new().unwrap(), held.run_id()).unwrap();
        restored.persisted.blocks[2].parent = [7; 32];
        assert!(tab(&sim, restored).is_err());
    }
}
