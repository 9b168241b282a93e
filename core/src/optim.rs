//! Optimizers over the flat parameter vector, each step one fused pass.
//!
//! burn's optimizers update each tensor with a chain of tensor operations (Adam: about a
//! dozen passes over the parameters, each allocating), which for the MLP cost as much as
//! its smaller matmuls. Working on the flat vector the trainer keeps anyway, one loop reads
//! gradient, moments and parameter once and writes them once. The arithmetic is burn's
//! (`AdamConfig` defaults: beta1 0.9, beta2 0.999, epsilon 1e-5), and a test checks that
//! both give the same parameters.

use crate::train::Optimizer;

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// An optimizer's state for one flat parameter vector.
#[derive(Debug, Clone)]
pub struct FlatOptimizer {
    kind: Optimizer,
    lr: f32,
    adam: Option<AdamState>,
}

#[derive(Debug, Clone)]
struct AdamState {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl FlatOptimizer {
    /// A fresh optimizer (Adam's moments start at zero on the first step).
    pub fn new(kind: Optimizer, lr: f64) -> Self {
        Self {
            kind,
            lr: lr as f32,
            adam: None,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.adam.as_ref().map_or(0, |s| s.t as u64)
    }

    /// Updates `params` in place from `grads` (same length, layout order).
    ///
    /// # Panics
    /// If the lengths differ (the trainer always passes matching vectors).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "parameter and gradient lengths differ"
        );
        match self.kind {
            Optimizer::Sgd => {
                let lr = self.lr;
                for (p, g) in params.iter_mut().zip(grads) {
                    *p -= lr * g;
                }
            }
            Optimizer::Adam => {
                let n = params.len();
                let s = self.adam.get_or_insert_with(|| AdamState {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                    t: 0,
                });
                s.t += 1;
                // burn's formulation: p -= lr * m * c / (sqrt(v) + eps * sqrt(1 - b2^t)),
                // with c = sqrt(1 - b2^t) / (1 - b1^t).
                let bc2_sqrt = (1.0 - BETA2.powi(s.t)).sqrt();
                let factor = bc2_sqrt / (1.0 - BETA1.powi(s.t));
                let eps = EPSILON * bc2_sqrt;
                let lr = self.lr;
                for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut s.m).zip(&mut s.v) {
                    *m = *m * BETA1 + *g * (1.0 - BETA1);
                    *v = *v * BETA2 + *g * *g * (1.0 - BETA2);
                    *p -= lr * (*m * factor / (v.sqrt() + eps));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_is_p_minus_lr_g() {
        let mut p = vec![1.0, 2.0];
        FlatOptimizer::new(Optimizer::Sgd, 0.5).step(&mut p, &[2.0, -2.0]);
        assert_eq!(p, vec![0.0, 3.0]);
    }

    #[test]
    fn adam_first_step_moves_each_param_by_about_lr() {
        // With bias correction, Adam's first step is lr * g / (|g| + eps'): about lr.
        let mut p = vec![0.0f32; 3];
        let mut o = FlatOptimizer::new(Optimizer::Adam, 0.01);
        o.step(&mut p, &[5.0, -0.3, 0.0]);
        assert!((p[0] + 0.01).abs() < 1e-5, "{p:?}");
        assert!((p[1] - 0.01).abs() < 1e-4, "{p:?}");
        assert_eq!(p[2], 0.0);
        assert_eq!(o.steps(), 1);
    }
}
