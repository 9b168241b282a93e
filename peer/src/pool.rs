//! The update pool: announcements for the next height and, once fetched, their payloads.
//!
//! Trainer keys are free, so the pool must hold against a crowd of fresh keys announcing
//! updates they never serve (or serve junk). The rules (DESIGN.md, threat model):
//! - **Keyed by update id**, so every variant a proposal may name can be fetched and judged;
//!   a trainer announcing two different updates for one height is recorded as a double
//!   announcer and none of its updates is proposed by us.
//! - **Weight comes from the run's rules** (local steps x batch size), never from the
//!   announcement: an announcement claiming another sample count is refused.
//! - **Trainers with credit come first.** A trainer credited in a committed block is always
//!   admitted (one variant slot each, bounded by the chain's credit table). Uncredited
//!   trainers share [`MAX_PENDING_NEW`] slots for announcements not yet fetched, at most
//!   [`MAX_PENDING_PER_PUBLISHER`] per gossip publisher, and a fetch that fails frees the slot.
//! - **Fetched payloads are bounded** by [`MAX_READY`]; when full, the worst-scored update of
//!   an uncredited trainer makes room, so junk cannot keep honest updates out.
//! - Only fetched updates make a trainer count as active (what a proposer waits for), so
//!   announcements without payloads cannot make proposers wait.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tabswarm_consensus::identity::Address;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_core::chunks::f32s_to_bytes;

/// Announcements from uncredited trainers waiting for their payload.
pub const MAX_PENDING_NEW: usize = 64;
/// Of those, most from one gossip publisher.
pub const MAX_PENDING_PER_PUBLISHER: usize = 8;
/// Fetched payloads held (each ~0.4 MB for the MLP).
pub const MAX_READY: usize = 128;
/// Variants kept per trainer and height (two are enough to prove double announcing).
const VARIANTS: usize = 2;

/// One announcement and what we learned about it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The signed announcement.
    pub update: SignedUpdate,
    /// Its payload, once fetched and hash-checked.
    pub delta: Option<Arc<Vec<f32>>>,
    /// Validation loss with this update applied alone (scored once, by a job).
    pub score: Option<f32>,
    /// Whether the trainer had credit when this was admitted.
    pub credited: bool,
    /// Hash of the delta, and the order payloads arrived in here: of two trainers naming one
    /// delta, the one here first is the original (a copier must fetch it before re-wrapping
    /// it as its own; see [`crate::payload`]).
    pub delta_hash: [u8; 32],
    /// See [`Entry::delta_hash`].
    pub arrived: u64,
    publisher: u64,
}

/// Why an announcement was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Already in the pool.
    Duplicate,
    /// Not for the next height on our parameters.
    NotNext,
    /// Claims a sample count other than the run's rules give every update.
    WrongWeight,
    /// No room for another uncredited announcement (or from this publisher).
    Full,
    /// The trainer already has its variants here.
    TooManyVariants,
    /// A closed run, and the trainer is not a member.
    NotMember,
}

/// What admitting an announcement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A new announcement; fetch its payload.
    New,
    /// A second, different announcement by the same trainer for the same height: kept (a
    /// proposal may name it) and recorded against the trainer.
    DoubleAnnouncement,
}

/// The pool of one height's updates.
#[derive(Debug, Default)]
pub struct Pool {
    entries: BTreeMap<[u8; 32], Entry>,
    by_trainer: BTreeMap<(Address, u64), Vec<[u8; 32]>>,
    double: BTreeSet<(Address, u64)>,
    pending_by_publisher: HashMap<u64, usize>,
    arrivals: u64,
}

/// Hash of a delta's values (what two trainers' payloads share when one copied the other).
pub fn delta_hash(delta: &[f32]) -> [u8; 32] {
    Sha256::digest(f32s_to_bytes(delta)).into()
}

impl Pool {
    /// Admits an already signature-checked announcement for `next` (the height being decided)
    /// on `base`, whose weight the rules fix at `weight`. `publisher` identifies the gossip
    /// source (any stable hash of its peer id); `credited` whether the trainer has credit.
    pub fn admit(
        &mut self,
        update: SignedUpdate,
        next: u64,
        base: &[u8; 32],
        weight: u32,
        publisher: u64,
        credited: bool,
    ) -> Result<Admitted, Refusal> {
        let h = &update.header;
        if h.height != next || &h.base_param_hash != base {
            return Err(Refusal::NotNext);
        }
        if h.samples != weight {
            return Err(Refusal::WrongWeight);
        }
        let id = update.id();
        if self.entries.contains_key(&id) {
            return Err(Refusal::Duplicate);
        }
        let key = (h.trainer, h.height);
        let variants = self.by_trainer.get(&key).map_or(0, Vec::len);
        if variants >= VARIANTS {
            return Err(Refusal::TooManyVariants);
        }
        if !credited {
            let pending_new = self
                .entries
                .values()
                .filter(|e| !e.credited && e.delta.is_none())
                .count();
            let mine = self
                .pending_by_publisher
                .get(&publisher)
                .copied()
                .unwrap_or(0);
            if pending_new >= MAX_PENDING_NEW || mine >= MAX_PENDING_PER_PUBLISHER {
                return Err(Refusal::Full);
            }
            *self.pending_by_publisher.entry(publisher).or_default() += 1;
        }
        self.by_trainer.entry(key).or_default().push(id);
        self.entries.insert(
            id,
            Entry {
                update,
                delta: None,
                score: None,
                credited,
                delta_hash: [0; 32],
                arrived: 0,
                publisher,
            },
        );
        if variants > 0 {
            self.double.insert(key);
            Ok(Admitted::DoubleAnnouncement)
        } else {
            Ok(Admitted::New)
        }
    }

    /// Attaches a fetched payload. Refuses one of the wrong length, and one that finds the
    /// pool full of better updates; either way the entry is gone afterwards.
    pub fn add_payload(&mut self, id: &[u8; 32], delta: Vec<f32>, expected_len: usize) -> bool {
        let Some(entry) = self.entries.get(id) else {
            return false;
        };
        if delta.len() != expected_len {
            self.remove(id);
            return false;
        }
        if entry.delta.is_some() {
            return true;
        }

        let credited = entry.credited;
        if self.ready() >= MAX_READY {
            // Make room by dropping the worst uncredited update (unscored counts as worst).
            let victim = self
                .entries
                .iter()
                .filter(|(other, e)| *other != id && e.delta.is_some() && !e.credited)
                .max_by(|a, b| {
                    let key = |e: &Entry| e.score.unwrap_or(f32::INFINITY);
                    key(a.1).total_cmp(&key(b.1))
                })
                .map(|(k, _)| *k);
            match victim {
                Some(v) if credited || self.entries.get(&v).is_some_and(|e| e.score.is_some()) => {
                    self.remove(&v);
                }
                _ => {
                    self.remove(id);
                    return false;
                }
            }
        }
        self.release_pending(id);
        self.arrivals += 1;
        let (arrived, delta_hash) = (self.arrivals, delta_hash(&delta));
        if let Some(e) = self.entries.get_mut(id) {
            e.delta = Some(Arc::new(delta));
            e.delta_hash = delta_hash;
            e.arrived = arrived;
        }
        true
    }

    fn release_pending(&mut self, id: &[u8; 32]) {
        if let Some(e) = self.entries.get(id)
            && !e.credited
            && e.delta.is_none()
            && let Some(n) = self.pending_by_publisher.get_mut(&e.publisher)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Forgets an update (its payload could not be fetched, or it was judged harmful).
    pub fn remove(&mut self, id: &[u8; 32]) {
        self.release_pending(id);
        if let Some(e) = self.entries.remove(id) {
            let key = (e.update.header.trainer, e.update.header.height);
            if let Some(ids) = self.by_trainer.get_mut(&key) {
                ids.retain(|x| x != id);
            }
        }
    }

    /// Records a score.
    pub fn set_score(&mut self, id: &[u8; 32], loss: f32) {
        if let Some(e) = self.entries.get_mut(id) {
            e.score = Some(loss);
        }
    }

    /// The entry with this id.
    pub fn get(&self, id: &[u8; 32]) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Every entry, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &Entry)> {
        self.entries.iter()
    }

    /// Entries with their payload.
    pub fn ready(&self) -> usize {
        self.entries.values().filter(|e| e.delta.is_some()).count()
    }

    /// Entries in all.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `trainer` announced two different updates for `height`.
    pub fn double_announced(&self, trainer: &Address, height: u64) -> bool {
        self.double.contains(&(*trainer, height))
    }

    /// Double announcers recorded so far, with the height.
    pub fn double_announcers(&self) -> impl Iterator<Item = &(Address, u64)> {
        self.double.iter()
    }

    /// Keeps only what is for heights after `height`.
    pub fn retain_after(&mut self, height: u64) {
        let old: Vec<[u8; 32]> = self
            .entries
            .iter()
            .filter(|(_, e)| e.update.header.height <= height)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.remove(&id);
        }
        self.by_trainer
            .retain(|(_, h), ids| *h > height && !ids.is_empty());
        self.double.retain(|(_, h)| *h > height);
        self.pending_by_publisher.retain(|_, n| *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabswarm_consensus::genesis::RunId;
    use tabswarm_consensus::identity::Keypair;
    use tabswarm_consensus::update::UpdateHeader;

    const BASE: [u8; 32] = [1; 32];
    const W: u32 = 1600;

    fn update(seed: u32, height: u64, samples: u32, payload: u8) -> SignedUpdate {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&seed.to_le_bytes());
        s[31] = 9;
        let key = Keypair::from_seed(s);
        SignedUpdate::sign(
            UpdateHeader {
                height,
                base_param_hash: BASE,
                trainer: key.address(),
                samples,
                loss_before: 2.0,
                loss_after: 1.0,
                payload_hash: [payload; 32],
                payload_len: 8,
            },
            &key,
            &RunId([3; 32]),
        )
    }

    #[test]
    fn weight_is_the_runs_not_the_trainers() {
        let mut p = Pool::default();
        assert_eq!(
            p.admit(update(1, 2, W * 100, 0), 2, &BASE, W, 0, false),
            Err(Refusal::WrongWeight)
        );
        assert_eq!(
            p.admit(update(1, 2, W, 0), 2, &BASE, W, 0, false),
            Ok(Admitted::New)
        );
        assert_eq!(
            p.admit(update(2, 3, W, 0), 2, &BASE, W, 0, false),
            Err(Refusal::NotNext)
        );
    }

    #[test]
    fn fresh_keys_cannot_crowd_out_credited_trainers() {
        let mut p = Pool::default();
        let mut admitted = 0;
        // 500 fresh keys from 100 publishers, none ever serving a payload.
        for i in 0..500u32 {
            if p.admit(
                update(1000 + i, 2, W, 0),
                2,
                &BASE,
                W,
                u64::from(i % 100),
                false,
            )
            .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, MAX_PENDING_NEW);
        // One publisher alone gets no more than its share.
        let mut q = Pool::default();
        let one: usize = (0..50u32)
            .filter(|i| {
                q.admit(update(5000 + i, 2, W, 0), 2, &BASE, W, 7, false)
                    .is_ok()
            })
            .count();
        assert_eq!(one, MAX_PENDING_PER_PUBLISHER);
        // A credited trainer still gets in, and its payload is accepted.
        let honest = update(1, 2, W, 0);
        assert_eq!(p.admit(honest, 2, &BASE, W, 999, true), Ok(Admitted::New));
        assert!(p.add_payload(&honest.id(), vec![0.0; 4], 4));
        // A failed fetch frees a slot for an uncredited newcomer.
        let first = *p.iter().find(|(_, e)| !e.credited).unwrap().0;
        p.remove(&first);
        assert!(
            p.admit(update(9999, 2, W, 0), 2, &BASE, W, 5, false)
                .is_ok()
        );
    }

    #[test]
    fn payloads_are_numbered_as_they_arrive_and_a_copy_shares_the_originals_delta_hash() {
        let mut p = Pool::default();
        let (original, copy, own) = (update(1, 2, W, 1), update(2, 2, W, 2), update(3, 2, W, 3));
        for u in [original, copy, own] {
            p.admit(u, 2, &BASE, W, 0, false).unwrap();
        }
        for (u, delta) in [
            (original, [0.25, -0.5]),
            (own, [0.25, -0.75]),
            (copy, [0.25, -0.5]),
        ] {
            assert!(p.add_payload(&u.id(), delta.to_vec(), 2));
        }
        let e = |u: SignedUpdate| p.get(&u.id()).unwrap().clone();
        assert_eq!(e(original).delta_hash, e(copy).delta_hash);
        assert_ne!(e(original).delta_hash, e(own).delta_hash);
        assert!(e(original).arrived < e(own).arrived && e(own).arrived < e(copy).arrived);
    }

    #[test]
    fn both_variants_of_a_double_announcement_are_kept_and_recorded() {
        let mut p = Pool::default();
        let a = update(1, 2, W, 1);
        let b = update(1, 2, W, 2);
        assert_ne!(a.id(), b.id());
        assert_eq!(p.admit(a, 2, &BASE, W, 0, false), Ok(Admitted::New));
        assert_eq!(
            p.admit(b, 2, &BASE, W, 0, false),
            Ok(Admitted::DoubleAnnouncement)
        );
        assert!(p.get(&a.id()).is_some() && p.get(&b.id()).is_some());
        assert!(p.double_announced(&a.header.trainer, 2));
        assert_eq!(
            p.admit(update(1, 2, W, 3), 2, &BASE, W, 0, false),
            Err(Refusal::TooManyVariants)
        );
        p.retain_after(2);
        assert!(p.is_empty());
        assert!(!p.double_announced(&a.header.trainer, 2));
    }

    #[test]
    fn a_full_pool_drops_the_worst_uncredited_update_for_a_better_one() {
        let mut p = Pool::default();
        for i in 0..MAX_READY as u32 {
            let u = update(i, 2, W, 0);
            p.admit(u, 2, &BASE, W, u64::from(i), false).ok();
            if p.get(&u.id()).is_some() {
                assert!(p.add_payload(&u.id(), vec![0.0; 4], 4));
                p.set_score(&u.id(), 1.0 + i as f32);
            }
        }
        assert!(p.ready() <= MAX_READY);
        let worst = p
            .iter()
            .max_by(|a, b| a.1.score.unwrap().total_cmp(&b.1.score.unwrap()))
            .map(|(k, _)| *k)
            .unwrap();
        let credited = update(100_000, 2, W, 0);
        p.admit(credited, 2, &BASE, W, 1, true).unwrap();
        assert!(p.add_payload(&credited.id(), vec![0.0; 4], 4));
        assert!(p.get(&worst).is_none(), "the worst made room");
        assert!(p.ready() <= MAX_READY);
        // A payload of the wrong length removes its entry.
        let odd = update(200_000, 2, W, 0);
        p.admit(odd, 2, &BASE, W, 1, true).unwrap();
        assert!(!p.add_payload(&odd.id(), vec![0.0; 3], 4));
        assert!(p.get(&odd.id()).is_none());
    }
}
