//! Votes one node has already verified, so it never runs ed25519 twice on the same vote.
//!
//! A precommit is checked when it arrives (Malachite's `VerifySignature`), then again inside
//! the commit certificate Malachite builds from it (`VerifyCommitCertificate` in `decide`),
//! then a third time when the ledger appends the block. Polka and round certificates repeat
//! votes seen one by one. This memo remembers (vote, signature) pairs this node verified or
//! signed itself; a pair is the exact signed content, so a hit is the answer ed25519 gave.
//! It is per node (unlike the simulator's shared `identity::VerifyCache`), bounded, and
//! cleared at every new height.

use std::collections::HashSet;

use ed25519_dalek::VerifyingKey;

use crate::context::{SignedVote, TabswarmContext, Vote};
use crate::identity::Signature;

/// Bound on remembered votes: more than 2 votes x 1,000 validators x 2 rounds.
const CAPACITY: usize = 4096;

/// Verified (vote, signature) pairs of the current height.
#[derive(Clone, Debug, Default)]
pub(crate) struct VerifiedVotes {
    set: HashSet<(Vote, Signature)>,
}

impl VerifiedVotes {
    /// Whether `vote` is validly signed, from memory or by checking (with `key` if the caller
    /// has it decompressed); a valid one is remembered.
    pub(crate) fn verify(
        &mut self,
        ctx: &TabswarmContext,
        key: Option<&VerifyingKey>,
        vote: &SignedVote,
    ) -> bool {
        let entry = (vote.message.clone(), vote.signature);
        if self.set.contains(&entry) {
            return true;
        }
        let ok = match key {
            Some(k) => ctx.verify_vote_with_key(k, vote),
            None => ctx.verify_vote(vote),
        };
        if ok {
            self.insert(entry);
        }
        ok
    }

    /// Remembers a vote known to be validly signed (e.g. our own).
    pub(crate) fn remember(&mut self, vote: &SignedVote) {
        self.insert((vote.message.clone(), vote.signature));
    }

    fn insert(&mut self, entry: (Vote, Signature)) {
        if self.set.len() >= CAPACITY {
            self.set.clear();
        }
        self.set.insert(entry);
    }

    /// Forgets everything (a new height started).
    pub(crate) fn clear(&mut self) {
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use malachitebft_core_types::{NilOrVal, Round, VoteType};

    use super::*;
    use crate::context::{Height, ValueId};
    use crate::genesis::RunId;
    use crate::testkit::key;

    #[test]
    fn remembers_only_exact_valid_pairs() {
        let ctx = TabswarmContext::new(RunId([3; 32]));
        let vote = Vote {
            height: Height(1),
            round: Round::new(0),
            vote_type: VoteType::Precommit,
            value: NilOrVal::Val(ValueId([1; 32])),
            validator: key(0).address(),
        };
        let good = ctx.sign_vote(&key(0), vote.clone());
        let mut memo = VerifiedVotes::default();
        assert!(memo.verify(&ctx, None, &good));
        assert!(memo.verify(&ctx, None, &good), "answered from memory");
        // Another signature on the same vote, or the same signature on another vote, is
        // checked afresh and refused.
        let forged = SignedVote::new(vote.clone(), key(1).sign_raw(b"x"));
        assert!(!memo.verify(&ctx, None, &forged));
        let moved = SignedVote::new(
            Vote {
                value: NilOrVal::Nil,
                ..vote
            },
            good.signature,
        );
        assert!(!memo.verify(&ctx, None, &moved));
        memo.clear();
        assert!(memo.set.is_empty());
    }
}
