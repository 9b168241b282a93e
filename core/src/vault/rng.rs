//! Lends the caller's RNG (rand_core 0.9, the workspace's) to hpke, which speaks rand_core 0.10.
//!
//! Plain forwarding: every byte hpke draws is a byte the caller's generator produced.

use std::convert::Infallible;

use hpke::rand_core as rand_core_010;

pub(super) struct Lent<'a, R: ?Sized>(pub(super) &'a mut R);

impl<R: rand_core::CryptoRng + ?Sized> rand_core_010::TryRng for Lent<'_, R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

// The bound is what makes this honest: only a CryptoRng is lent as one.
impl<R: rand_core::CryptoRng + ?Sized> rand_core_010::TryCryptoRng for Lent<'_, R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use rand_core_010::Rng as _;

    #[test]
    fn forwards_the_callers_stream_unchanged() {
        let mut a = ChaCha20Rng::seed_from_u64(3);
        let mut b = ChaCha20Rng::seed_from_u64(3);
        let mut lent = Lent(&mut a);
        let mut x = [0u8; 40];
        lent.fill_bytes(&mut x);
        let mut y = [0u8; 40];
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_eq!(lent.next_u64(), b.next_u64());
    }
}
