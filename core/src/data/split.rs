use std::sync::Arc;

use super::Dataset;
use crate::rng::SeededRng;

/// A dataset divided into examples to train on and held-out examples to test on.
#[derive(Debug, Clone)]
pub struct Split {
    /// Examples for training.
    pub train: Arc<Dataset>,
    /// Held-out examples, never trained on.
    pub test: Arc<Dataset>,
}

impl Split {
    /// The fraction of MNIST held out for testing: 1,000 of the 10,000 digits.
    pub const MNIST_TEST_FRACTION: f64 = 0.1;
    /// The seed of the documented MNIST split; every peer and every test uses it.
    pub const MNIST_SEED: u64 = 2026;

    /// The fixed MNIST split every tabswarm peer uses: 9,000 train / 1,000 test.
    pub fn mnist(dataset: &Dataset) -> Split {
        Split::stratified(dataset, Self::MNIST_TEST_FRACTION, Self::MNIST_SEED)
    }

    /// A stratified split: each class contributes test examples in proportion to its size.
    ///
    /// The test set has `round(len * test_fraction)` examples. Per class the share is
    /// `count * test_fraction`, rounded down, and the examples still missing go to the
    /// classes with the largest remainders (ties to the lower class), so the total is exact.
    /// Which examples of a class are held out is a seeded shuffle of that class. Both halves
    /// keep the original file order.
    pub fn stratified(dataset: &Dataset, test_fraction: f64, seed: u64) -> Split {
        let fraction = test_fraction.clamp(0.0, 1.0);
        let counts = dataset.class_counts();
        let target = (dataset.len() as f64 * fraction).round() as usize;

        let mut quota: Vec<usize> = counts
            .iter()
            .map(|&c| (c as f64 * fraction).floor() as usize)
            .collect();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        let remainder = |c: usize| counts[c] as f64 * fraction - quota[c] as f64;
        order.sort_by(|&a, &b| remainder(b).total_cmp(&remainder(a)).then(a.cmp(&b)));
        let missing = target.saturating_sub(quota.iter().sum());
        for &c in order.iter().take(missing) {
            quota[c] += 1;
        }

        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); counts.len()];
        for (i, &l) in dataset.labels().iter().enumerate() {
            by_class[usize::from(l)].push(i);
        }
        let mut is_test = vec![false; dataset.len()];
        for (class, members) in by_class.iter_mut().enumerate() {
            let mut rng = SeededRng::new(seed, &format!("split/class-{class}"));
            rng.shuffle(members);
            for &i in members.iter().take(quota[class]) {
                is_test[i] = true;
            }
        }
        let (test, train): (Vec<usize>, Vec<usize>) = (0..dataset.len()).partition(|&i| is_test[i]);
        Split {
            train: Arc::new(dataset.subset(&train)),
            test: Arc::new(dataset.subset(&test)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skewed() -> Dataset {
        // Class sizes like the mnist package's: uneven.
        let sizes = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];
        let mut labels = Vec::new();
        for (c, &n) in sizes.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c as u8, n));
        }
        let pixels = (0..labels.len()).map(|i| (i % 251) as u8).collect();
        Dataset::from_parts(1, 1, 10, labels, pixels).unwrap()
    }

    #[test]
    fn exact_totals_and_proportional_classes() {
        let d = skewed();
        let s = Split::mnist(&d);
        assert_eq!(s.test.len(), 1000);
        assert_eq!(s.train.len(), 9000);
        for (c, (&t, &all)) in s
            .test
            .class_counts()
            .iter()
            .zip(&d.class_counts())
            .enumerate()
        {
            let ideal = all as f64 * 0.1;
            assert!((t as f64 - ideal).abs() < 1.0, "class {c}: {t} vs {ideal}");
        }
    }

    #[test]
    fn seeded_and_disjoint() {
        let d = skewed();
        let a = Split::stratified(&d, 0.1, 1);
        let b = Split::stratified(&d, 0.1, 1);
        let c = Split::stratified(&d, 0.1, 2);
        assert_eq!(a.test, b.test);
        assert_ne!(a.test, c.test);
        // Pixels encode the original index mod 251 here, so overlap would show up as
        // the combined multiset differing from the original's.
        let mut all: Vec<u8> = (0..a.train.len()).map(|i| a.train.image(i)[0]).collect();
        all.extend((0..a.test.len()).map(|i| a.test.image(i)[0]));
        all.sort_unstable();
        let mut orig: Vec<u8> = (0..d.len()).map(|i| d.image(i)[0]).collect();
        orig.sort_unstable();
        assert_eq!(all, orig);
    }
}
