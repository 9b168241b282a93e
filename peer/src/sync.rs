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
///
/// Offers are claims: a peer may name a height far ahead that the ledger never reaches, or
/// bytes that are not that height's parameters. So a lower offer (still at or past the
/// ledger) replaces a higher one, which any honest offer near the head does to a far-fetched
/// claim; a wanted checkpoint not in hand after [`TARGET_TIMEOUT_MS`] can be replaced; and the
/// offerer is kept, so bytes that fail the block's hash convict it.
#[derive(Debug, Clone)]
pub struct Ahead<P> {
    wanted: Option<Wanted<P>>,
}

impl<P> Default for Ahead<P> {
    fn default() -> Self {
        Self { wanted: None }
    }
}

#[derive(Debug, Clone)]
struct Wanted<P> {
    height: u64,
    offerer: P,
    since_ms: u64,
    bytes: Option<Vec<u8>>,
}

/// What to do with a checkpoint's bytes that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrived<P> {
    /// For the ledger's height: adopt them now (the offerer answers for them).
    AdoptNow(P, Vec<u8>),
    /// For the height wanted, still ahead: held until the ledger gets there.
    Held,
    /// Not what is wanted, or the ledger has passed their height: useless.
    Useless,
}

impl<P: Clone + PartialEq> Ahead<P> {
    /// Whether to fetch the checkpoint `offerer` offers for `height` when our ledger is at
    /// `ours` (see the type's text for which offer wins).
    pub fn want(&mut self, ours: u64, height: u64, offerer: &P, now_ms: u64) -> bool {
        if height < ours {
            return false;
        }
        if let Some(w) = &self.wanted
            && w.height >= ours
            && w.height <= height
            && (w.bytes.is_some() || now_ms.saturating_sub(w.since_ms) <= TARGET_TIMEOUT_MS)
        {
            return false;
        }
        self.wanted = Some(Wanted {
            height,
            offerer: offerer.clone(),
            since_ms: now_ms,
            bytes: None,
        });
        true
    }

    /// The bytes of the checkpoint for `height` arrived while the ledger is at `ours`.
    pub fn arrived(&mut self, ours: u64, height: u64, bytes: Vec<u8>) -> Arrived<P> {
        let Some(w) = self.wanted.as_mut().filter(|w| w.height == height) else {
            return Arrived::Useless;
        };
        if height < ours {
            self.wanted = None;
            return Arrived::Useless;
        }
        if height == ours {
            let offerer = w.offerer.clone();
            self.wanted = None;
            return Arrived::AdoptNow(offerer, bytes);
        }
        w.bytes = Some(bytes);
        Arrived::Held
    }

    /// The ledger committed `height` without applying it: the held bytes for that height and
    /// their offerer, if any (a checkpoint the ledger has passed is dropped).
    pub fn take_at(&mut self, height: u64) -> Option<(P, Vec<u8>)> {
        match &self.wanted {
            Some(w) if w.height == height && w.bytes.is_some() => self
                .wanted
                .take()
                .and_then(|w| w.bytes.map(|b| (w.offerer, b))),
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
    #[cfg(test)]
    fn height(&self) -> Option<u64> {
        self.wanted.as_ref().map(|w| w.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_ahead_of_the_ledger_is_held_until_the_ledger_gets_there() {
        let mut a = Ahead::default();
        assert!(a.want(10, 12, &7, 0));
        assert_eq!(a.arrived(11, 12, vec![1]), Arrived::Held);
        assert_eq!(a.take_at(11), None, "not its height yet");
        assert_eq!(a.take_at(12), Some((7, vec![1])), "with who answers for it");
        assert_eq!(a.height(), None);
    }

    #[test]
    fn a_checkpoint_for_the_ledgers_height_is_adopted_and_one_passed_is_useless() {
        let mut a = Ahead::default();
        assert!(a.want(10, 10, &7, 0));
        assert_eq!(a.arrived(10, 10, vec![1]), Arrived::AdoptNow(7, vec![1]));
        assert!(a.want(10, 11, &7, 0));
        assert_eq!(a.arrived(12, 11, vec![2]), Arrived::Useless);
        assert_eq!(
            a.height(),
            None,
            "a checkpoint the ledger passed is dropped"
        );
        assert!(a.want(12, 13, &7, 0));
        assert_eq!(
            a.arrived(12, 14, vec![3]),
            Arrived::Useless,
            "not the one wanted"
        );
    }

    #[test]
    fn a_far_fetched_offer_gives_way_to_a_lower_one_and_a_stalled_one_to_any() {
        let mut a = Ahead::default();
        assert!(!a.want(10, 9, &1, 0), "behind the ledger");
        assert!(a.want(10, 1_000_000, &1, 0), "a liar's claim, first");
        assert!(
            a.want(10, 11, &2, 100),
            "an offer nearer the head replaces it"
        );
        assert!(!a.want(10, 12, &3, 200), "one fetch at a time otherwise");
        assert!(!a.want(10, 12, &3, 100 + TARGET_TIMEOUT_MS));
        assert!(
            a.want(10, 12, &3, 101 + TARGET_TIMEOUT_MS),
            "an offer never served costs one timeout"
        );
        assert_eq!(a.arrived(10, 12, vec![1]), Arrived::Held);
        assert!(
            !a.want(10, 12, &4, 200 + 2 * TARGET_TIMEOUT_MS),
            "bytes in hand are kept"
        );
        assert!(a.want(13, 14, &4, 0), "passed: any new offer");
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
