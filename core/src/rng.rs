//! Seeded randomness that gives the same numbers on every platform.
//!
//! Peers must build identical initial parameters and identical data orders from a seed,
//! natively and in wasm32 (where `usize` is 32 bits). So everything here works on `u32`/`u64`
//! and ChaCha8, never on `usize`-dependent or float-formatting code paths.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A deterministic generator; the same seed yields the same stream everywhere.
#[derive(Debug, Clone)]
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// A generator for `seed`, separated by `purpose` so that e.g. the model initialisation
    /// and the batch order drawn from one user seed are independent streams.
    pub fn new(seed: u64, purpose: &str) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        // FNV-1a of the purpose string fills the rest of the key: cheap, stable, no deps.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in purpose.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        key[8..16].copy_from_slice(&h.to_le_bytes());
        key[16..24].copy_from_slice(&(purpose.len() as u64).to_le_bytes());
        Self(ChaCha8Rng::from_seed(key))
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits (exactly representable).
    pub fn next_unit(&mut self) -> f32 {
        (self.0.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform `f32` in `[-bound, bound)`.
    pub fn uniform(&mut self, bound: f32) -> f32 {
        (self.next_unit() * 2.0 - 1.0) * bound
    }

    /// A uniform integer in `[0, n)` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift with rejection.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u64::from(self.0.next_u32()) * u64::from(n);
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates), identically on every platform.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_purposes_differ() {
        let a: Vec<f32> = (0..8).map(|_| SeededRng::new(1, "a").next_unit()).collect();
        let mut r1 = SeededRng::new(1, "a");
        let mut r2 = SeededRng::new(1, "a");
        let mut r3 = SeededRng::new(1, "b");
        let s1: Vec<u32> = (0..16).map(|_| r1.below(1000)).collect();
        let s2: Vec<u32> = (0..16).map(|_| r2.below(1000)).collect();
        let s3: Vec<u32> = (0..16).map(|_| r3.below(1000)).collect();
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        SeededRng::new(3, "shuffle").shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
