//! A proposer's signed proposal for a round.

use malachitebft_core_types::Round;
use serde::{Deserialize, Serialize};

use malachitebft_core_types::Value as _;

use super::{Height, TabswarmContext, Value, ValueId};
use crate::identity::Address;

/// A proposal; it carries the whole value (our values are small), so no parts are streamed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The proposed value.
    pub value: Value,
    /// Round of the polka this re-proposes, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

/// What a proposal signature covers: the proposal with its value replaced by the value's hash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalHeader {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// Hash of the value.
    pub value_id: ValueId,
    /// Round of the polka this re-proposes, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl Proposal {
    /// The signed header of this proposal.
    pub fn header(&self) -> ProposalHeader {
        ProposalHeader {
            height: self.height,
            round: self.round,
            value_id: self.value.id(),
            pol_round: self.pol_round,
            proposer: self.proposer,
        }
    }
}

impl malachitebft_core_types::Proposal<TabswarmContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &Value {
        &self.value
    }

    fn take_value(self) -> Value {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Malachite requires a part type; proposals are never split, so it is never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoParts;

impl malachitebft_core_types::ProposalPart<TabswarmContext> for NoParts {
    fn is_first(&self) -> bool {
        true
    }

    fn is_last(&self) -> bool {
        true
    }
}
