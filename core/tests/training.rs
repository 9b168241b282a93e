//! Training on the real MNIST digits (`data/mnist.tsd`, made by `cargo xtask data`).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::path::PathBuf;
use std::sync::Arc;

use tabswarm_core::Backend;
use tabswarm_core::data::{Batches, Dataset, Split};
use tabswarm_core::flat;
use tabswarm_core::model::{self, Model, ModelKind};
use tabswarm_core::train::{Config, Optimizer, Trainer};

fn mnist() -> Split {
    let path = std::env::var_os("TABSWARM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist.tsd"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask data` (or `cargo xtask test`) first",
            path.display()
        )
    });
    let dataset = Dataset::decode(&bytes).expect("data/mnist.tsd is valid");
    assert_eq!(
        dataset.len(),
        10_000,
        "the mnist package ships 10,000 digits"
    );
    Split::mnist(&dataset)
}

fn config(backend: Backend, optimizer: Optimizer) -> Config {
    Config {
        backend,
        optimizer,
        lr: optimizer.default_lr(),
        ..Config::default()
    }
}

/// The largest element-wise difference between two equally long vectors.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn train_epochs(trainer: &mut Trainer, split: &Split, epochs: usize) {
    let cfg = trainer.config().clone();
    let mut batches = Batches::new(Arc::clone(&split.train), cfg.batch_size, cfg.seed);
    for _ in 0..epochs * batches.per_epoch() {
        let loss = trainer.step(&batches.next_batch()).unwrap();
        assert!(loss.is_finite());
    }
}

#[test]
fn the_documented_split_is_9000_train_1000_test() {
    let split = mnist();
    assert_eq!(split.train.len(), 9_000);
    assert_eq!(split.test.len(), 1_000);
    for (c, n) in split.test.class_counts().into_iter().enumerate() {
        assert!((85..=115).contains(&n), "class {c} has {n} test digits");
    }
}

#[test]
fn mlp_reaches_94_percent_with_each_backend_and_optimizer() {
    let split = mnist();
    for backend in Backend::ALL {
        for optimizer in [Optimizer::Adam, Optimizer::Sgd] {
            let mut t = Trainer::new(&config(backend, optimizer)).unwrap();
            let before = t.evaluate(&split.test).unwrap();
            train_epochs(&mut t, &split, 4);
            let after = t.evaluate(&split.test).unwrap();
            assert_eq!(after.examples, 1_000);
            assert!(
                before.accuracy < 0.3,
                "an untrained model should be near chance"
            );
            assert!(
                after.accuracy >= 0.94,
                "{backend}/{optimizer}: test accuracy {:.3} < 0.94 (loss {:.3})",
                after.accuracy,
                after.loss
            );
        }
    }
}

#[test]
fn params_round_trip_exactly_and_keep_the_model() {
    let split = mnist();
    let mut t = Trainer::new(&Config::default()).unwrap();
    train_epochs(&mut t, &split, 1);
    let trained = t.params().to_vec();
    assert_eq!(trained.len(), ModelKind::Mlp.layout().num_params());
    assert_eq!(trained.len(), 101_770);

    // A fresh model built from the flat vector predicts exactly like the trained one.
    let rebuilt = Model::from_flat(ModelKind::Mlp, &trained, &Backend::Flex.device()).unwrap();
    assert_eq!(model::get_flat(&rebuilt), trained);
    let a = tabswarm_core::train::evaluate(t.model(), &split.test).unwrap();
    let b = tabswarm_core::train::evaluate(&rebuilt, &split.test).unwrap();
    assert_eq!(a, b);

    // set_params replaces every value, in order.
    let shifted: Vec<f32> = trained
        .iter()
        .enumerate()
        .map(|(i, p)| p + i as f32 * 1e-6)
        .collect();
    t.set_params(&shifted).unwrap();
    assert_eq!(t.params(), &shifted[..]);
    assert_eq!(t.param_hash(), flat::param_hash(&shifted));

    // A wrong length is refused and leaves a usable trainer.
    assert!(t.set_params(&shifted[1..]).is_err());
    assert_eq!(t.params().len(), trained.len());
}

#[test]
fn the_flat_gradient_is_in_layout_order() {
    // One SGD step equals params - lr * gradient, index by index: this fails if the
    // gradient's order differed from the parameters'.
    let split = mnist();
    let cfg = config(Backend::Flex, Optimizer::Sgd);
    let mut t = Trainer::new(&cfg).unwrap();
    let batch = Batches::new(Arc::clone(&split.train), 64, 3).next_batch();
    let before = t.params().to_vec();
    let (loss, grad) = t.gradient(&batch).unwrap();
    assert!(loss.is_finite());
    assert_eq!(grad.len(), before.len());
    assert!(grad.iter().any(|g| *g != 0.0));
    t.step(&batch).unwrap();
    let mut expected = before.clone();
    flat::apply_delta(&mut expected, &grad, -(cfg.lr as f32)).unwrap();
    let worst = max_abs_diff(t.params(), &expected);
    assert!(
        worst < 1e-5,
        "SGD step differs from params - lr * grad by {worst}"
    );
}

#[test]
fn a_local_update_is_the_difference_it_claims() {
    let split = mnist();
    let mut t = Trainer::new(&Config::default()).unwrap();
    let base = t.params().to_vec();
    let mut batches = Batches::new(Arc::clone(&split.train), 64, 9);
    let update = t.local_update(&mut batches, 25).unwrap();
    assert_eq!(update.base, flat::param_hash(&base));
    assert_eq!(update.samples, 25 * 64);
    assert!(update.loss_after < update.loss_before);
    let mut applied = base;
    flat::apply_delta(&mut applied, &update.delta, 1.0).unwrap();
    let worst = max_abs_diff(&applied, t.params());
    assert!(
        worst < 1e-6,
        "base + delta differs from the trained params by {worst}"
    );
}

#[test]
fn every_backend_starts_from_identical_parameters() {
    for kind in [ModelKind::Mlp, ModelKind::Cnn] {
        let hashes: Vec<_> = Backend::ALL
            .iter()
            .map(|&backend| {
                let t = Trainer::new(&Config {
                    model: kind,
                    backend,
                    ..Config::default()
                })
                .unwrap();
                t.param_hash()
            })
            .collect();
        assert_eq!(hashes[0], hashes[1], "{kind}");
        assert_eq!(
            hashes[0],
            flat::param_hash(&kind.layout().initial_params(0))
        );
    }
}

#[test]
fn the_cnn_learns() {
    let split = mnist();
    let cfg = Config {
        model: ModelKind::Cnn,
        lr: 3e-3,
        batch_size: 32,
        ..Config::default()
    };
    let mut t = Trainer::new(&cfg).unwrap();
    assert_eq!(t.params().len(), ModelKind::Cnn.layout().num_params());
    let mut batches = Batches::new(Arc::clone(&split.train), 32, 0);
    for _ in 0..150 {
        t.step(&batches.next_batch()).unwrap();
    }
    let eval = t.evaluate(&split.test).unwrap();
    assert!(
        eval.accuracy > 0.6,
        "cnn accuracy after 150 steps: {}",
        eval.accuracy
    );
}

#[test]
fn the_fused_optimizers_match_burns() {
    use burn::module::Module;
    use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
    use burn::tensor::{Int, Tensor, TensorData};

    let split = mnist();
    for optimizer in [Optimizer::Adam, Optimizer::Sgd] {
        let cfg = config(Backend::Flex, optimizer);
        let mut ours = Trainer::new(&cfg).unwrap();
        let device = cfg.backend.autodiff_device();
        let mut reference = Model::init(cfg.model, cfg.seed, &device);
        let mut burn_optim = match optimizer {
            Optimizer::Adam => AdamConfig::new().init(),
            Optimizer::Sgd => SgdConfig::new().init(),
        };
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let mut batches = Batches::new(Arc::clone(&split.train), 64, 11);
        for _ in 0..5 {
            let batch = batches.next_batch();
            ours.step(&batch).unwrap();
            let x =
                Tensor::<2>::from_data(TensorData::new(batch.images.clone(), [64, 784]), &device);
            let y =
                Tensor::<1, Int>::from_data(TensorData::new(batch.labels.clone(), [64]), &device);
            let grads = loss_fn.forward(reference.forward(x), y).backward();
            let grads = GradientsParams::from_grads(grads, &reference);
            reference = burn_optim.step(cfg.lr, reference, grads);
        }
        let theirs = model::get_flat(&reference.valid());
        let worst = max_abs_diff(ours.params(), &theirs);
        assert!(
            worst < 1e-5,
            "{optimizer}: fused update differs from burn's by {worst}"
        );
    }
}
