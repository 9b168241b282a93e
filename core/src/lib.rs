//! # tabswarm-core
//!
//! Everything a tabswarm peer does that is the same in a browser tab and on a server:
//! the models and their training (burn), the MNIST data format, the encrypted data layer
//! ([`vault`]: shards, manifests, grants), and the plain scalar maths on flat parameter
//! vectors that every peer must reproduce bit for bit.
//!
//! This crate does no I/O, reads no clock and starts no runtime: callers hand it bytes,
//! seeds and batches, and it hands back numbers. It compiles to `wasm32-unknown-unknown`.
//!
//! ## Usage
//!
//! ```no_run
//! use tabswarm_core::{data, train};
//! # fn bytes_of_mnist_tsd() -> Vec<u8> { unimplemented!() }
//! let dataset = data::Dataset::decode(&bytes_of_mnist_tsd())?;
//! let split = data::Split::stratified(&dataset, data::Split::MNIST_TEST_FRACTION, 7);
//! let config = train::Config::default(); // MLP 784-128-10, Adam, batch 64, flex backend
//! let mut trainer = train::Trainer::new(&config)?;
//! let mut batches = data::Batches::new(split.train.clone(), config.batch_size, config.seed);
//! for _ in 0..100 {
//!     let loss = trainer.step(&batches.next_batch())?;
//!     assert!(loss.is_finite());
//! }
//! let eval = trainer.evaluate(&split.test)?;
//! println!("test accuracy {:.3}", eval.accuracy);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The model's parameters travel between peers as one flat `f32` vector; its order is
//! fixed by [`model::ParamLayout`]. Anything other peers must reproduce exactly (sums of
//! updates, applying a delta, parameter hashes) goes through [`flat`], never through burn.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod backend;
pub mod chunks;
pub mod compress;
pub mod conformance;
pub mod data;
pub mod flat;
pub mod model;
pub mod optim;
pub mod perf;
pub mod rng;
pub mod robust;
pub mod train;
pub mod vault;

pub use backend::Backend;
