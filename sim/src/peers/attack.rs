//! Hostile trainers: a peer that trains honestly and then rewrites the update it signs and
//! serves. Validators see a correctly signed update from a trainer like any other; only the
//! numbers lie. These are the model-independent attacks of the robust-aggregation literature;
//! the round protocol and the genesis aggregation rule are what must withstand them.

use tabswarm_core::rng::SeededRng;

/// How a hostile trainer rewrites its delta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// `-scale` times the honest delta: pulls the model back the way it came.
    SignFlip {
        /// 1.0 is the plain flip; larger cancels more honest updates under the mean.
        scale: f32,
    },
    /// `factor` times the honest delta (x100 in the literature): overshoots.
    Scale {
        /// Multiplier.
        factor: f32,
    },
    /// Gaussian noise of standard deviation `sigma` per coordinate instead of the delta.
    Noise {
        /// Standard deviation.
        sigma: f32,
    },
}

impl Attack {
    /// Rewrites `delta` (the trainer's honest one); `seed` is the training job's, so the
    /// trace stays a function of the simulation seed.
    pub fn apply(self, delta: &mut [f32], seed: u64) {
        match self {
            Attack::SignFlip { scale } => delta.iter_mut().for_each(|d| *d *= -scale),
            Attack::Scale { factor } => delta.iter_mut().for_each(|d| *d *= factor),
            Attack::Noise { sigma } => {
                let mut rng = SeededRng::new(seed, "tabswarm-sim/attack-noise");
                for d in delta.iter_mut() {
                    // Box-Muller from two uniforms in (0, 1].
                    let u1 = 1.0 - rng.next_unit();
                    let u2 = rng.next_unit();
                    *d = sigma * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attack_rewrites_as_documented() {
        let mut d = vec![1.0, -2.0];
        Attack::SignFlip { scale: 3.0 }.apply(&mut d, 0);
        assert_eq!(d, vec![-3.0, 6.0]);
        Attack::Scale { factor: 0.5 }.apply(&mut d, 0);
        assert_eq!(d, vec![-1.5, 3.0]);
        let mut n = vec![0.0; 10_000];
        Attack::Noise { sigma: 2.0 }.apply(&mut n, 7);
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let sd = (n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.1 && (sd - 2.0).abs() < 0.1,
            "mean {mean}, sd {sd}"
        );
    }
}
