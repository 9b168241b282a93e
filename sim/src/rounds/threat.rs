//! What hostile trainers do in [`super::run`]: the attacks of the robust-aggregation
//! literature, including the two that need the honest updates of the round (ALIE, IPM).
//!
//! The coalition is **omniscient**, the strongest attacker the literature assumes: it sees
//! every honest delta of the height before it sends its own. On the network a coalition sees
//! honest updates only once they are announced, so this bounds what a real one can do.

use tabswarm_core::data::Dataset;
use tabswarm_core::rng::SeededRng;

use crate::peers::Attack;

/// How the hostile trainers of a run behave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threat {
    /// Each trains honestly, then rewrites its own delta ([`Attack`]: sign flip, scaling,
    /// noise).
    Rewrite(Attack),
    /// Each sends the largest multiple `-s` of its honest delta that its own shard says
    /// stays under the validators' per-update harm line (with a margin, since validators
    /// score on a secret draw it does not see): the sign flip of an attacker who knows the
    /// protocol, found by doubling then bisecting `s` (the [`Probe`]).
    AdaptiveSignFlip,
    /// Each trains on its shard with every label `y` replaced by `classes - 1 - y`.
    LabelFlip,
    /// "A little is enough" (Baruch et al. 2019): every hostile trainer sends
    /// `mean - z * std` of the honest deltas, coordinate by coordinate, a shift inside the
    /// honest spread that robust rules take for honest variation. `z: None` takes the
    /// paper's largest `z` that keeps the coalition inside the majority ([`alie_z`]).
    Alie {
        /// Standard deviations to shift by.
        z: Option<f32>,
    },
    /// Inner-product manipulation (Xie et al. 2020): every hostile trainer sends
    /// `-epsilon` times the mean of the honest deltas, so the aggregate's inner product with
    /// the true direction shrinks, or turns negative once the coalition is large enough.
    Ipm {
        /// Share of the honest mean to send, negated.
        epsilon: f32,
    },
}

impl Threat {
    /// Leaves every update as trained: the threat of clean runs (where `hostile` is 0 anyway).
    pub const NONE: Threat = Threat::Rewrite(Attack::Scale { factor: 1.0 });

    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            Threat::Rewrite(Attack::SignFlip { scale }) if *scale == 1.0 => "sign_flip".into(),
            Threat::Rewrite(Attack::SignFlip { scale }) => format!("sign_flip_x{scale}"),
            Threat::Rewrite(Attack::Scale { factor }) => format!("scale_x{factor}"),
            Threat::Rewrite(Attack::Noise { sigma }) => format!("noise_sigma{sigma}"),
            Threat::AdaptiveSignFlip => "sign_flip_adaptive".into(),
            Threat::LabelFlip => "label_flip".into(),
            Threat::Alie { z: None } => "alie".into(),
            Threat::Alie { z: Some(z) } => format!("alie_z{z}"),
            Threat::Ipm { epsilon } => format!("ipm_eps{epsilon}"),
        }
    }

    /// The hostile delta of one coalition member: `own` is what it trained (on flipped
    /// labels under [`Threat::LabelFlip`]), `honest` the honest deltas of the height, `n` and
    /// `f` the trainers and the hostile ones among them, `probe` its loss estimate.
    pub fn craft(
        &self,
        own: &[f32],
        honest: &[&[f32]],
        (n, f): (usize, usize),
        seed: u64,
        probe: &mut dyn Probe,
    ) -> Vec<f32> {
        match *self {
            Threat::AdaptiveSignFlip => {
                let scale = largest_passing_flip(own, probe);
                own.iter().map(|d| -scale * d).collect()
            }
            Threat::Rewrite(attack) => {
                let mut d = own.to_vec();
                attack.apply(&mut d, seed);
                d
            }
            Threat::LabelFlip => own.to_vec(),
            Threat::Alie { z } => {
                let z = z.unwrap_or_else(|| alie_z(n, f));
                let (mean, sd) = mean_and_sd(honest, own.len());
                disguise(mean.iter().zip(&sd).map(|(m, s)| m - z * s).collect(), seed)
            }
            Threat::Ipm { epsilon } => {
                let (mean, _) = mean_and_sd(honest, own.len());
                disguise(mean.iter().map(|m| -epsilon * m).collect(), seed)
            }
        }
    }
}

/// Each coalition member's copy of a shared vector, scaled by its own factor within a part
/// in 10^4 of 1: validators count one delta once (a second trainer sending the same bytes is
/// a copier), so a coalition sending one vector would lose all but one of its votes. The
/// change is far below what any rule or score could notice.
fn disguise(mut v: Vec<f32>, seed: u64) -> Vec<f32> {
    let factor = 1.0 + SeededRng::new(seed, "tabswarm-sim/coalition").uniform(1e-4);
    v.iter_mut().for_each(|x| *x *= factor);
    v
}

/// What an attacker can measure: the loss, on its own data, of the base plus a delta.
pub trait Probe {
    /// The loss of `base + delta`, `None` if it cannot be computed.
    fn loss_with(&mut self, delta: &[f32]) -> Option<f32>;
}

/// Share of the way from the base loss to the validators' per-update line an adaptive
/// attacker allows itself: validators score on another draw than its own data.
pub const LINE_MARGIN: f32 = 0.8;
/// Most scale doublings and bisection steps of [`Threat::AdaptiveSignFlip`].
const SEARCH_STEPS: u32 = 8;

/// The largest `s` in `[0, 2^(SEARCH_STEPS - 1)]` with the flipped update `-s * own` under
/// [`LINE_MARGIN`] of the harm line, by the probe's estimate.
fn largest_passing_flip(own: &[f32], probe: &mut dyn Probe) -> f32 {
    let Some(base) = probe.loss_with(&vec![0.0; own.len()]) else {
        return 0.0;
    };
    let line = base * tabswarm_peer::round::HARM_FACTOR + tabswarm_peer::round::HARM_SLACK;
    let allowed = base + LINE_MARGIN * (line - base);
    let mut passes = |s: f32| {
        let flipped: Vec<f32> = own.iter().map(|d| -s * d).collect();
        probe.loss_with(&flipped).is_some_and(|l| l <= allowed)
    };
    let (mut lo, mut hi) = (0.0f32, 1.0f32);
    let mut bounded = false;
    for _ in 0..SEARCH_STEPS {
        if !passes(hi) {
            bounded = true;
            break;
        }
        lo = hi;
        hi *= 2.0;
    }
    if !bounded {
        return lo;
    }
    for _ in 0..SEARCH_STEPS {
        let mid = (lo + hi) / 2.0;
        if passes(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// ALIE's `z_max` for `n` trainers of which `f` are hostile: with `s = floor(n/2 + 1) - f`
/// honest trainers the coalition needs on its side to hold a majority, `z = Phi^-1((n - s) /
/// n)`, so that many honest values lie further from the mean than the attackers' (Baruch et
/// al. 2019, section 3). Small for small `n` (0.25 for 2 of 10): the attack is built for many
/// workers.
pub fn alie_z(n: usize, f: usize) -> f32 {
    let s = (n / 2 + 1).saturating_sub(f);
    let p = (n.saturating_sub(s)) as f64 / n.max(1) as f64;
    normal_quantile(p.clamp(1e-9, 1.0 - 1e-9)) as f32
}

/// Coordinate-wise mean and (population) standard deviation, in f64 sums.
fn mean_and_sd(vectors: &[&[f32]], len: usize) -> (Vec<f32>, Vec<f32>) {
    let n = vectors.len().max(1) as f64;
    let mut mean = vec![0f32; len];
    let mut sd = vec![0f32; len];
    for i in 0..len {
        let m = vectors.iter().map(|v| f64::from(v[i])).sum::<f64>() / n;
        let var = vectors
            .iter()
            .map(|v| (f64::from(v[i]) - m).powi(2))
            .sum::<f64>()
            / n;
        mean[i] = m as f32;
        sd[i] = var.sqrt() as f32;
    }
    (mean, sd)
}

/// The standard normal quantile (Acklam's rational approximation, relative error below
/// 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// `data` with every label `y` replaced by `classes - 1 - y` (the label-flip attack's
/// training set).
pub fn flip_labels(data: &Dataset) -> Dataset {
    let top = data.classes() as u8 - 1;
    let labels = data.labels().iter().map(|y| top - y).collect();
    let mut pixels = Vec::with_capacity(data.len() * data.image_len());
    for i in 0..data.len() {
        pixels.extend_from_slice(data.image(i));
    }
    Dataset::from_parts(
        data.rows() as u16,
        data.cols() as u16,
        data.classes() as u8,
        labels,
        pixels,
    )
    .expect("the same dimensions and classes as a valid dataset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alie_z_follows_the_paper() {
        // Baruch et al.: n = 50, f = 12 gives s = 14 and z = Phi^-1(0.72) = 0.58.
        assert!((alie_z(50, 12) - 0.583).abs() < 1e-3, "{}", alie_z(50, 12));
        assert!((alie_z(10, 2) - 0.253).abs() < 1e-3, "{}", alie_z(10, 2));
        assert_eq!(alie_z(10, 1), 0.0);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-6);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-6);
    }

    #[test]
    fn alie_and_ipm_are_built_from_the_honest_deltas() {
        let a = [1.0f32, 0.0];
        let b = [3.0f32, 2.0];
        let honest: Vec<&[f32]> = vec![&a, &b];
        let own = [100.0f32, 100.0];
        // mean (2, 1), population sd (1, 1).
        let craft = |t: Threat| t.craft(&own, &honest, (3, 1), 0, &mut Bowl(0.0));
        let near = |got: Vec<f32>, want: [f32; 2]| {
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() <= 1e-4 * w.abs()),
                "{got:?} against {want:?}"
            )
        };
        near(craft(Threat::Alie { z: Some(1.5) }), [0.5, -0.5]);
        near(craft(Threat::Ipm { epsilon: 0.5 }), [-1.0, -0.5]);
        // Two members of the coalition never send the same bytes (validators count a delta
        // once).
        let alie = Threat::Alie { z: Some(1.5) };
        let mut probe = Bowl(0.0);
        assert_ne!(
            alie.craft(&own, &honest, (3, 2), 1, &mut probe),
            alie.craft(&own, &honest, (3, 2), 2, &mut probe)
        );
        // The others ignore the honest deltas.
        let flip = craft(Threat::Rewrite(Attack::SignFlip { scale: 1.0 }));
        assert_eq!(flip, vec![-100.0, -100.0]);
        assert_eq!(craft(Threat::LabelFlip), own.to_vec());
    }

    /// A loss that grows as the square of the distance from the base: `base + |delta|^2`.
    struct Bowl(f32);

    impl Probe for Bowl {
        fn loss_with(&mut self, delta: &[f32]) -> Option<f32> {
            Some(self.0 + delta.iter().map(|d| d * d).sum::<f32>())
        }
    }

    #[test]
    fn the_adaptive_flip_goes_as_far_as_the_margin_under_the_harm_line_and_no_further() {
        // Base 1.0: the line is 2.0, the margin 1.8, so |s * own|^2 may reach 0.8.
        let own = [0.2f32, 0.0];
        let flipped = Threat::AdaptiveSignFlip.craft(&own, &[], (10, 2), 0, &mut Bowl(1.0));
        let s = -flipped[0] / 0.2;
        let expected = (0.8f32).sqrt() / 0.2; // 4.47
        assert!(
            (s - expected).abs() < 0.05,
            "scale {s}, expected {expected}"
        );
        assert_eq!(flipped[1], 0.0);
        // An attacker who cannot measure sends nothing.
        struct Blind;
        impl Probe for Blind {
            fn loss_with(&mut self, _: &[f32]) -> Option<f32> {
                None
            }
        }
        let nothing = Threat::AdaptiveSignFlip.craft(&own, &[], (10, 2), 0, &mut Blind);
        assert_eq!(nothing, vec![0.0, 0.0]);
    }

    #[test]
    fn flipped_labels_mirror_the_classes_and_keep_the_images() {
        let data = crate::peers::synthetic_dataset();
        let flipped = flip_labels(&data);
        assert_eq!(flipped.len(), data.len());
        for i in [0, 1, 9, 500] {
            assert_eq!(flipped.labels()[i], 9 - data.labels()[i]);
            assert_eq!(flipped.image(i), data.image(i));
        }
    }
}
