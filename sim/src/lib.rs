//! # tabswarm-sim
//!
//! Deterministic network simulator for tabswarm consensus (in progress).

#![deny(missing_docs)]
