//! # tabswarm-sim
//!
//! Deterministic, seeded simulators:
//!
//! - [`peers::PeerSim`] runs real [`tabswarm_peer::Peer`]s, the protocol every driver ships
//!   (update pool, scoring jobs, aggregation, catch-up, fetching, consensus), with training
//!   either real or a cost model ([`peers::JobModel`]). Fault schedules (loss, jitter,
//!   partitions, crashes with restart, Byzantine validators, lying or flooding adversaries)
//!   run against the code that ships.
//! - [`rounds`] runs real trainers and one validator's round application height by height
//!   with no network: what an aggregation rule lets hostile trainers do to a real model.
//! - [`Sim`] runs bare consensus nodes with a trivial application, for consensus-only
//!   schedules and the light-peer scale model below: thousands of nodes in one process.
//!
//! [`Sim`] is a deterministic, seeded virtual network that runs real [`tabswarm_consensus::node::Node`]s
//! (real ed25519, real Malachite) on a virtual clock: per-link latency and jitter, message
//! loss, partitions, crashes with restart from what the node persisted, and Byzantine
//! validators (equivocation, silence, invalid proposals, replays across run/height/kind,
//! forged signatures). The same [`Config`] (seed included) always gives the same
//! [`Report::trace_hash`].
//!
//! Optionally ([`Config::light`], [`LightPeers`]) thousands of non-voting light peers run next
//! to the validators: each signs one update announcement per height for the height's
//! proposers and follows the chain through a gossipsub-like mesh of commit notices, with
//! churn; [`Report::light`] measures bytes per peer per height ([`LightReport`]).
//!
//! Many nodes share one thread, so the simulator memoises signature checks across them
//! (`tabswarm_consensus::identity::VerifyCache`; a pure function, so every node computes what
//! it would alone, and each distinct signed message is still verified once).
//!
//! ## Usage
//!
//! ```
//! use tabswarm_sim::{Config, Sim};
//! let mut sim = Sim::new(Config::new(7, vec![1, 1, 1, 1]))?;
//! let report = sim.run_until(10_000)?; // virtual milliseconds
//! assert!(report.agreement_violations == 0);
//! assert!(report.min_honest_height >= 3);
//! # Ok::<(), tabswarm_sim::SimError>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

mod byzantine;
mod config;
pub mod peers;
pub mod rounds;
mod sim;

pub use byzantine::Behaviour;
pub use config::{Config, Crash, LightPeers, Partition};
pub use sim::{LightReport, Report, Sim, SimError};
