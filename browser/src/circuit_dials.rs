//! Which gossip publishers a tab dials through its relays. Publisher ids are free to make,
//! so a hostile peer could otherwise make a tab dial without end: each publisher is tried at
//! most once per [`RETRY_MS`], at most [`REMEMBERED`] of them are remembered (the oldest are
//! forgotten), and at most [`DIALS_PER_MINUTE`] new dials start in any minute.

use std::collections::HashMap;
use std::hash::Hash;

/// A publisher we could not reach is tried again after this long.
pub const RETRY_MS: u64 = 60_000;

/// Publishers remembered.
pub const REMEMBERED: usize = 256;

/// New circuit dials in one minute, at most.
pub const DIALS_PER_MINUTE: usize = 32;

/// The dial budget, generic over the peer id so it is tested without a network.
#[derive(Debug)]
pub struct CircuitDials<P> {
    tried: HashMap<P, u64>,
    window_start: u64,
    in_window: usize,
}

impl<P> Default for CircuitDials<P> {
    fn default() -> Self {
        Self {
            tried: HashMap::new(),
            window_start: 0,
            in_window: 0,
        }
    }
}

impl<P: Hash + Eq + Clone> CircuitDials<P> {
    /// Whether to dial `publisher` now (recording the dial if so).
    pub fn allow(&mut self, publisher: &P, now_ms: u64) -> bool {
        if self
            .tried
            .get(publisher)
            .is_some_and(|at| now_ms.saturating_sub(*at) < RETRY_MS)
        {
            return false;
        }
        if now_ms.saturating_sub(self.window_start) >= 60_000 {
            self.window_start = now_ms;
            self.in_window = 0;
        }
        if self.in_window >= DIALS_PER_MINUTE {
            return false;
        }
        if self.tried.len() >= REMEMBERED
            && let Some(oldest) = self
                .tried
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(p, _)| p.clone())
        {
            self.tried.remove(&oldest);
        }
        self.tried.insert(publisher.clone(), now_ms);
        self.in_window += 1;
        true
    }

    /// Publishers remembered now.
    pub fn remembered(&self) -> usize {
        self.tried.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_is_dialled_once_per_retry_period() {
        let mut d = CircuitDials::default();
        assert!(d.allow(&1u32, 1_000));
        assert!(!d.allow(&1, 1_000 + RETRY_MS - 1));
        assert!(d.allow(&1, 1_000 + RETRY_MS));
    }

    #[test]
    fn a_flood_of_fresh_publishers_gets_a_bounded_number_of_dials_and_memory() {
        let mut d = CircuitDials::default();
        // A hostile peer publishes under 10,000 fresh ids within one minute.
        let dialled = (0..10_000u32)
            .filter(|p| d.allow(p, 5_000 + u64::from(*p)))
            .count();
        assert_eq!(dialled, DIALS_PER_MINUTE);
        // Minute after minute, the budget holds and memory stays bounded.
        let mut total = 0;
        for minute in 1..=20u64 {
            for p in 0..1_000u32 {
                if d.allow(&(minute as u32 * 1_000_000 + p), minute * 60_000 + 5_000) {
                    total += 1;
                }
            }
        }
        assert_eq!(total, 20 * DIALS_PER_MINUTE);
        assert!(d.remembered() <= REMEMBERED);
    }
}
