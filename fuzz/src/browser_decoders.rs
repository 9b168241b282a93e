//! The tab's caches: what IndexedDB gives back at a reload (it may be damaged, or written by
//! an older page).

use tabswarm_browser::{ChainCache, DataCache};
use tabswarm_consensus::genesis::RunId;

/// The run the seeds' caches belong to.
pub const RUN: RunId = RunId([9; 32]);

/// `ChainCache::decode`: never panics, and the blocks it restores are consecutive from 1.
pub fn chain_cache(data: &[u8]) {
    if let Ok(restored) = ChainCache::decode(data, RUN) {
        for (i, block) in restored.persisted.blocks.iter().enumerate() {
            assert_eq!(block.height.0, i as u64 + 1, "restored blocks out of order");
        }
    }
}

/// `DataCache::decode`: never panics.
pub fn data_cache(data: &[u8]) {
    let _ = DataCache::decode(data, RUN);
}
