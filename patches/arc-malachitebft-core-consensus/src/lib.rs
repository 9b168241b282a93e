#![doc = include_str!("../README.md")]
#![allow(rustdoc::private_intra_doc_links)]

mod prelude;

mod input;
pub use input::Input;

mod state;
pub use state::{ProposalPersistence, State};

pub mod wal_replay_index;
pub use wal_replay_index::{RecordKind, ReplayIndex};

mod error;
pub use error::Error;

mod params;
pub use params::{Params, ThresholdParams};

#[doc(hidden)]
pub use params::{HIDDEN_LOCK_ROUND, MAX_FUTURE_ROUND_LOOKAHEAD};

mod effect;
pub use effect::{Effect, Resumable, Resume};

mod types;
pub use types::*;

pub mod full_proposal;
pub mod util;

mod macros;
mod ser;

// Only used in macros
#[doc(hidden)]
pub mod gen;

// Only used in macros
mod handle;
#[doc(hidden)]
pub use handle::handle;

// Used in macros
#[doc(hidden)]
pub use tracing;
