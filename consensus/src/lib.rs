//! # tabswarm-consensus
//!
//! Proof-of-stake agreement on model updates: a round's proposal (base parameters, included
//! updates, aggregation rule, resulting parameters) is applied only once validators holding
//! more than 2/3 of stake have signed precommits for it. Tendermint itself is Malachite's
//! sans-IO core; this crate is what surrounds it: identities and signed envelopes, the
//! canonical wire encoding, the genesis and stake table, the Malachite [`context`], the one
//! effect handler every host shares ([`node`]), the crash-safe [`signer`] state, equivocation
//! [`evidence`] and slashing, the [`ledger`], and the byte form of persisted records
//! ([`wal`]).
//!
//! No I/O, no clock, no threads, no async runtime: time arrives as timer callbacks, bytes as
//! arguments. It compiles to `wasm32-unknown-unknown`.
//!
//! ## Usage
//!
//! ```
//! use tabswarm_consensus::{genesis::Genesis, identity::Keypair, node::{Node, Output, Persisted}};
//! # use tabswarm_consensus::{context::{Height, RoundProposal}, node::Application};
//! # struct App;
//! # impl Application for App {
//! #     fn propose(&mut self, _: Height, _: malachitebft_core_types::Round, base: [u8; 32]) -> Option<RoundProposal> {
//! #         Some(RoundProposal { base_param_hash: base, updates: vec![], aggregation_rule: tabswarm_consensus::genesis::AggregationRule::Mean, result_param_hash: base })
//! #     }
//! #     fn validate(&mut self, _: Height, _: malachitebft_core_types::Round, _: &RoundProposal) -> bool { true }
//! # }
//! # let key = Keypair::from_seed([1; 32]);
//! # let genesis_json = tabswarm_consensus::testkit::genesis_json(&[(key.address(), 1)]);
//! let genesis = Genesis::from_json(&genesis_json)?;
//! let mut store = Persisted::default(); // the host's durable store
//! let mut node = Node::new(genesis, key, App)?;
//! // Host loop: carry out outputs front to back (a Persist must be durable before the
//! // Broadcast after it leaves), then feed back what arrives.
//! for output in node.start()? {
//!     match output {
//!         // Durable before what follows; on disk, keep `record.encode()?` and read it back
//!         // with `Record::decode`.
//!         Output::Persist(record) => store.apply(&record),
//!         Output::Broadcast(msg) => { let _bytes = msg.encode()?; /* send to peers */ }
//!         Output::ScheduleTimer(timeout, after) => { /* call node.on_timeout(timeout) later */ }
//!         Output::CancelTimer(_) | Output::CancelAllTimers => {}
//!         Output::Committed(block) => println!("committed height {}", block.height),
//!         Output::CallAgain => { /* call node.resume() soon (a lone validator gets here) */ }
//!         _ => {}
//!     }
//! }
//! // Incoming bytes: node.on_bytes(&bytes); timers: node.on_timeout(timeout);
//! // after a crash: Node::restart(genesis, key, app, store) then start().
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod codec;
pub mod context;
pub mod evidence;
pub mod gate;
pub mod genesis;
pub mod identity;
pub mod ledger;
pub mod node;
pub mod sign;
pub mod signer;
pub mod testkit;
pub mod update;
mod verified;
pub mod wal;
pub mod wire;
