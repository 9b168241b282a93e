//! The signer's crash-safe state: last signed (height, round, step), the lock, and what was
//! signed at this height.
//!
//! The host persists every [`SignerState`] it is handed (as [`crate::node::Record::Signer`])
//! before acting on any later output; a restarted node is given the last one back and will not
//! sign anything that conflicts with it, even if its write-ahead log was lost.

use std::cmp::Ordering;

use malachitebft_core_types::{NilOrVal, Round, VoteType};
use serde::{Deserialize, Serialize};

use crate::context::{Height, ProposalHeader, ValueId, Vote};

/// Steps in the order they happen inside a round.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Signing a proposal.
    Propose,
    /// Signing a prevote.
    Prevote,
    /// Signing a precommit.
    Precommit,
}

impl From<VoteType> for Step {
    fn from(t: VoteType) -> Self {
        match t {
            VoteType::Prevote => Step::Prevote,
            VoteType::Precommit => Step::Precommit,
        }
    }
}

/// Why the signer refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// A different message was already signed at this height, round and step.
    #[error("already signed a different message at this height, round and step")]
    Conflict,
    /// The height, round and step are behind the last signed ones.
    #[error("height/round/step is behind the last signed one")]
    Regression,
}

/// Persisted signer state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerState {
    /// Last signed (height, round, step).
    pub last: Option<(Height, Round, Step)>,
    /// Value we precommitted and the round: Tendermint's lock.
    pub locked: Option<(Round, ValueId)>,
    /// Votes signed at `last`'s height.
    pub votes: Vec<Vote>,
    /// Proposals signed at `last`'s height.
    pub proposals: Vec<ProposalHeader>,
}

impl SignerState {
    fn admit(&mut self, at: (Height, Round, Step)) -> Result<(), SignError> {
        if let Some(last) = self.last {
            if cmp_hrs(at, last) == Ordering::Less {
                return Err(SignError::Regression);
            }
            if at.0 != last.0 {
                self.votes.clear();
                self.proposals.clear();
                self.locked = None;
            }
        }
        self.last = Some(at);
        Ok(())
    }

    /// Records intent to sign `vote`; refuses conflicts and regressions. Returns whether this
    /// exact vote was signed before (so the state need not be persisted again).
    pub fn sign_vote(&mut self, vote: &Vote) -> Result<bool, SignError> {
        if let Some(old) = self.votes.iter().find(|v| {
            v.height == vote.height && v.round == vote.round && v.vote_type == vote.vote_type
        }) {
            return if old == vote {
                Ok(true)
            } else {
                Err(SignError::Conflict)
            };
        }
        let mut next = self.clone();
        next.admit((vote.height, vote.round, vote.vote_type.into()))?;
        next.votes.push(vote.clone());
        if let (VoteType::Precommit, NilOrVal::Val(id)) = (vote.vote_type, vote.value) {
            next.locked = Some((vote.round, id));
        }
        *self = next;
        Ok(false)
    }

    /// Records intent to sign a proposal; as [`Self::sign_vote`].
    pub fn sign_proposal(&mut self, header: &ProposalHeader) -> Result<bool, SignError> {
        if let Some(old) = self
            .proposals
            .iter()
            .find(|p| p.height == header.height && p.round == header.round)
        {
            return if old == header {
                Ok(true)
            } else {
                Err(SignError::Conflict)
            };
        }
        let mut next = self.clone();
        next.admit((header.height, header.round, Step::Propose))?;
        next.proposals.push(header.clone());
        *self = next;
        Ok(false)
    }
}

fn cmp_hrs(a: (Height, Round, Step), b: (Height, Round, Step)) -> Ordering {
    (a.0, a.1.as_i64(), a.2).cmp(&(b.0, b.1.as_i64(), b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Address;

    fn vote(h: u64, r: u32, t: VoteType, v: Option<u8>) -> Vote {
        Vote {
            height: Height(h),
            round: Round::new(r),
            vote_type: t,
            value: v.map_or(NilOrVal::Nil, |b| NilOrVal::Val(ValueId([b; 32]))),
            validator: Address([0; 32]),
        }
    }

    #[test]
    fn refuses_conflicts_and_regressions_but_allows_resigning_the_same() {
        let mut s = SignerState::default();
        assert_eq!(
            s.sign_vote(&vote(1, 0, VoteType::Prevote, Some(1))),
            Ok(false)
        );
        assert_eq!(
            s.sign_vote(&vote(1, 0, VoteType::Prevote, Some(1))),
            Ok(true)
        );
        assert_eq!(
            s.sign_vote(&vote(1, 0, VoteType::Prevote, Some(2))),
            Err(SignError::Conflict)
        );
        assert_eq!(
            s.sign_vote(&vote(1, 0, VoteType::Precommit, Some(1))),
            Ok(false)
        );
        assert_eq!(s.locked, Some((Round::new(0), ValueId([1; 32]))));
        assert_eq!(s.sign_vote(&vote(1, 1, VoteType::Prevote, None)), Ok(false));
        assert_eq!(
            s.sign_vote(&vote(1, 0, VoteType::Precommit, None)),
            Err(SignError::Conflict)
        );
        assert_eq!(s.sign_vote(&vote(2, 0, VoteType::Prevote, None)), Ok(false));
        assert_eq!(
            s.sign_vote(&vote(1, 5, VoteType::Prevote, None)),
            Err(SignError::Regression)
        );
        assert_eq!(s.locked, None, "a new height starts unlocked");
    }
}
