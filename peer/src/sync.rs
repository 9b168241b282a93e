//! Catch-up: how a peer behind its peers (or without the parameters of its stored height)
//! reaches the head before it takes part. One state, in [`Sync`]:
//!
//! 1. [`Sync::Probing`]: ask every peer for its height ([`crate::wire::Request::Status`]).
//! 2. A block or two behind with current parameters: [`Sync::Blocks`], fetch those blocks
//!    and apply them with the updates kept on disk.
//! 3. Further behind (or parameters missing): ask the best peer for its checkpoint, then
//!    [`Sync::Target`]: fetch and verify the blocks up to the checkpoint's height, fetch the
//!    checkpoint, adopt it once its hash matches the block at that height. Fixing the target
//!    first is what lets a joiner finish while the chain keeps growing.
//!
//! Claimed heights are not trusted: answers must match questions ([`Claims`]), a peer whose
//! claim does not pan out (no blocks, blocks that do not verify, a target not reached in
//! time) gets a strike, and after [`MAX_DOUBTS`] it is never asked again; a block that does
//! not verify is proof of lying and bans at once. One lying peer therefore costs a joiner one
//! target timeout, not its life.

use std::collections::BTreeMap;

/// Strikes before a peer's claims are ignored.
pub const MAX_DOUBTS: u32 = 2;
/// Longest a catch-up target may take before it is dropped and its peer doubted.
pub const TARGET_TIMEOUT_MS: u64 = 20_000;
/// How long a fresh peer looks for peers ahead of it before starting alone.
pub const SYNC_GRACE_MS: u64 = 3_000;
/// Pause between rounds of height probes.
pub const PROBE_EVERY_MS: u64 = 500;
/// Pause between checkpoint questions.
pub const CHECKPOINT_ASK_EVERY_MS: u64 = 2_000;

/// Where catch-up stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync<P> {
    /// Learning peers' heights; `best` is the highest credible claim so far.
    Probing {
        /// When catch-up (re)started.
        since_ms: u64,
        /// Highest claim: peer and height.
        best: Option<(P, u64)>,
        /// Last round of probes.
        probed_ms: Option<u64>,
        /// Last checkpoint question.
        asked_checkpoint_ms: Option<u64>,
    },
    /// Fetching blocks up to a peer's checkpoint height, and the checkpoint itself.
    Target {
        /// Who offered the checkpoint.
        peer: P,
        /// Its height.
        height: u64,
        /// When it was chosen.
        chosen_ms: u64,
        /// The checkpoint's bytes, once fetched, waiting for the blocks up to `height`.
        checkpoint: Option<Vec<u8>>,
    },
}

impl<P> Sync<P> {
    /// Catch-up starting at `now_ms`.
    pub fn start(now_ms: u64) -> Self {
        Sync::Probing {
            since_ms: now_ms,
            best: None,
            probed_ms: None,
            asked_checkpoint_ms: None,
        }
    }
}

/// What peers claimed and how their claims fared.
#[derive(Debug, Clone)]
pub struct Claims<P> {
    doubts: BTreeMap<P, u32>,
}

impl<P> Default for Claims<P> {
    fn default() -> Self {
        Self {
            doubts: BTreeMap::new(),
        }
    }
}

impl<P: Ord + Clone> Claims<P> {
    /// A claim that did not pan out.
    pub fn doubt(&mut self, peer: &P) {
        *self.doubts.entry(peer.clone()).or_default() += 1;
    }

    /// Proof of lying (a block that does not verify).
    pub fn convict(&mut self, peer: &P) {
        self.doubts.insert(peer.clone(), MAX_DOUBTS);
    }

    /// Whether `peer`'s claims still count.
    pub fn credible(&self, peer: &P) -> bool {
        self.doubts.get(peer).copied().unwrap_or(0) < MAX_DOUBTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_doubts_or_one_conviction_discredit_a_peer() {
        let mut c = Claims::default();
        assert!(c.credible(&1));
        c.doubt(&1);
        assert!(c.credible(&1));
        c.doubt(&1);
        assert!(!c.credible(&1));
        c.convict(&2);
        assert!(!c.credible(&2));
        assert!(c.credible(&3));
    }
}
