//! Prevotes and precommits.

use malachitebft_core_types::{NilOrVal, Round, SignedExtension, VoteType};
use serde::{Deserialize, Serialize};

use super::{Height, TabswarmContext, ValueId};
use crate::identity::Address;

/// A vote as signed: its canonical bytes are the signed body.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// Height voted at.
    pub height: Height,
    /// Round voted in.
    pub round: Round,
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// The value's id, or nil.
    pub value: NilOrVal<ValueId>,
    /// Who votes.
    pub validator: Address,
}

impl malachitebft_core_types::Vote<TabswarmContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<ValueId> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<ValueId> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.vote_type
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    // Vote extensions stay disabled: tabswarm carries nothing extra on precommits.
    fn extension(&self) -> Option<&SignedExtension<TabswarmContext>> {
        None
    }

    fn take_extension(&mut self) -> Option<SignedExtension<TabswarmContext>> {
        None
    }

    fn extend(self, _extension: SignedExtension<TabswarmContext>) -> Self {
        self
    }
}
