//! # tabswarm-peer
//!
//! The one implementation of tabswarm's peer protocol (DESIGN.md, "A round"): a deterministic
//! sans-IO state machine that every driver runs, the `tabswarm-node` server, the browser tab
//! and the simulator alike. It composes consensus's [`tabswarm_consensus::node::Node`], the
//! round application ([`round`], with its update [`pool`]), catch-up ([`sync`]), the chunk
//! fetch scheduler ([`fetch`]), held proposals, and the [`wire`] types (requests, responses,
//! topics).
//!
//! No sockets, no clock, no threads, no store: time comes in with every input, bytes and
//! requests go out as effects, heavy work goes out as [`jobs`]. It compiles to
//! `wasm32-unknown-unknown`.
//!
//! ## Usage
//!
//! A driver owns the network, a clock, a store and workers, and runs this loop:
//!
//! 1. Restore what the store holds ([`Restored`]) and create the [`Peer`].
//! 2. Feed every event as an [`Input`] with the current time in milliseconds:
//!    gossip ([`Input::Gossip`]), requests and responses, failures, peers up and down,
//!    finished jobs, and [`Input::Tick`] at least every [`TICK_MS`] and at
//!    [`Peer::next_deadline`].
//! 3. Carry out the returned [`Effect`]s **in order**: a [`Effect::Persist`] must be durable
//!    before anything after it happens (a vote never leaves before the signer state that
//!    allows it is on disk); [`Effect::Validated`] answers the gossip message just fed,
//!    [`Effect::Respond`] the request just fed; [`Effect::Run`] jobs go to a worker
//!    ([`jobs::run`]) and come back as [`Input::JobDone`].
//!
//! ```
//! use tabswarm_peer::{Effect, Input, Peer, Restored, Roles};
//! # let key = tabswarm_consensus::identity::Keypair::from_seed([1; 32]);
//! # let genesis = tabswarm_consensus::genesis::Genesis::from_json(
//! #     &tabswarm_consensus::testkit::genesis_json(&[(key.address(), 1)]))?;
//! let roles = Roles { train: false, validate: true, store: false, max_train_shards: 0 };
//! let mut peer: Peer<u32> = Peer::new(genesis, key, roles, Restored::default(), 0)?;
//! for effect in peer.handle(10, Input::Tick) {
//!     match effect {
//!         Effect::Persist(_) => { /* write, fsync */ }
//!         Effect::Publish { topic, data } => { /* gossip */ }
//!         Effect::Send { to, id, request } => { /* request-response */ }
//!         Effect::Run(job) => { /* worker: tabswarm_peer::jobs::run(&plan, job) */ }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod data;
pub mod fetch;
pub mod jobs;
pub mod parallel;
pub mod payload;
mod peer;
pub mod pool;
pub mod round;
pub mod sync;
pub mod wire;

pub use peer::{
    DataSnapshot, Effect, Event, HOLD_MS, Input, MAX_HELD, MAX_WAITING_JOBS, Peer, PeerError,
    Persist, Queue, Rejections, Restored, RestoredData, Roles, Snapshot, TICK_MS,
};

/// A request's id, chosen by the peer (not by the transport), carried back with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);
