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
//! A running peer can fall behind too: its ledger follows consensus, but when the payloads
//! of a committed block never reach it (it was cut off, or its link is slower than the
//! chain) its parameters stay at an older height and every later commit finds them stale.
//! It takes a peer's checkpoint then, and [`Ahead`] fixes the checkpoint's height when the
//! offer is taken and holds the bytes until the ledger reaches it. Adopting only a checkpoint
//! of exactly the ledger's height, as it did, loses the race whenever fetching one takes
//! longer than a height: a peer cut off for 20 s (simulated) kept stale parameters for good.
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

/// The checkpoint a running peer with stale parameters is fetching or holding: for a height
/// at or past its ledger's, adopted when the ledger is there (see the module's text).
#[derive(Debug, Clone, Default)]
pub struct Ahead {
    wanted: Option<Wanted>,
}

#[derive(Debug, Clone)]
struct Wanted {
    height: u64,
    since_ms: u64,
    bytes: Option<Vec<u8>>,
}

/// What to do with a checkpoint's bytes that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrived {
    /// For the ledger's height: adopt them now.
    AdoptNow(Vec<u8>),
    /// For a height still ahead: held until the ledger gets there.
    Held,
    /// The ledger has passed their height: useless.
    Passed,
}

impl Ahead {
    /// Whether to fetch the checkpoint a peer offers for `height` when our ledger is at
    /// `ours`. One at a time: a newer offer replaces the one wanted only once that one is
    /// passed or has taken longer than [`TARGET_TIMEOUT_MS`] (a peer that offers a height
    /// far ahead and never serves it costs that long, not the peer's recovery).
    pub fn want(&mut self, ours: u64, height: u64, now_ms: u64) -> bool {
        if height < ours {
            return false;
        }
        if let Some(w) = &self.wanted
            && w.height >= ours
            && now_ms.saturating_sub(w.since_ms) <= TARGET_TIMEOUT_MS
        {
            return false;
        }
        self.wanted = Some(Wanted {
            height,
            since_ms: now_ms,
            bytes: None,
        });
        true
    }

    /// The bytes of the checkpoint for `height` arrived while the ledger is at `ours`.
    pub fn arrived(&mut self, ours: u64, height: u64, bytes: Vec<u8>, now_ms: u64) -> Arrived {
        if height < ours {
            return Arrived::Passed;
        }
        if height == ours {
            self.wanted = None;
            return Arrived::AdoptNow(bytes);
        }
        match &mut self.wanted {
            Some(w) if w.height == height => w.bytes = Some(bytes),
            _ => {
                self.wanted = Some(Wanted {
                    height,
                    since_ms: now_ms,
                    bytes: Some(bytes),
                });
            }
        }
        Arrived::Held
    }

    /// The ledger committed `height` without applying it: the held bytes for that height,
    /// if any (a held checkpoint the ledger has passed is dropped).
    pub fn take_at(&mut self, height: u64) -> Option<Vec<u8>> {
        match &self.wanted {
            Some(w) if w.height == height && w.bytes.is_some() => {
                self.wanted.take().and_then(|w| w.bytes)
            }
            Some(w) if w.height < height => {
                self.wanted = None;
                None
            }
            _ => None,
        }
    }

    /// The parameters are current again: nothing is wanted.
    pub fn clear(&mut self) {
        self.wanted = None;
    }

    /// Height wanted or held, if any.
    pub fn height(&self) -> Option<u64> {
        self.wanted.as_ref().map(|w| w.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_ahead_of_the_ledger_is_held_until_the_ledger_gets_there() {
        let mut a = Ahead::default();
        assert!(a.want(10, 12, 0));
        assert_eq!(a.arrived(11, 12, vec![1], 0), Arrived::Held);
        assert_eq!(a.take_at(11), None, "not its height yet");
        assert_eq!(a.take_at(12), Some(vec![1]));
        assert_eq!(a.height(), None);
    }

    #[test]
    fn a_checkpoint_for_the_ledgers_height_is_adopted_and_one_passed_is_useless() {
        let mut a = Ahead::default();
        assert!(a.want(10, 10, 0));
        assert_eq!(a.arrived(10, 10, vec![1], 0), Arrived::AdoptNow(vec![1]));
        assert!(a.want(10, 11, 0));
        assert_eq!(a.arrived(12, 11, vec![2], 0), Arrived::Passed);
        assert_eq!(a.take_at(13), None);
        assert_eq!(
            a.height(),
            None,
            "a held height the ledger passed is dropped"
        );
    }

    #[test]
    fn one_checkpoint_is_wanted_at_a_time_until_it_is_passed_or_too_slow() {
        let mut a = Ahead::default();
        assert!(!a.want(10, 9, 0), "behind the ledger");
        assert!(a.want(10, 11, 0));
        assert!(!a.want(10, 12, 100), "one fetch at a time");
        assert!(a.want(12, 13, 200), "the wanted one is passed");
        assert!(!a.want(12, 14, 200 + TARGET_TIMEOUT_MS));
        assert!(
            a.want(12, 14, 201 + TARGET_TIMEOUT_MS),
            "a peer that offered and never served costs one timeout"
        );
        assert_eq!(a.height(), Some(14));
    }

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
