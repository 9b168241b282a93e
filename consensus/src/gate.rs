//! The gate every gossiped consensus message passes before a host relays it.
//!
//! A signature alone proves only that *someone* signed: anyone can make a key. So a message
//! counts only when it is signed by a member of the validator set, a proposal only by the
//! proposer the set chooses for its round, and a certificate only when its signers are members
//! holding the stake it claims (an empty certificate never does). Messages that fail are
//! [`Verdict::Reject`]: not relayed, and the sender pays in gossip score. Authentic messages
//! about heights already decided, or too far ahead to judge, are [`Verdict::Ignore`]: not
//! relayed, not punished (peers legitimately lag), but still fed to consensus where useful.
//!
//! Slashing only ever removes stake, so every later validator set is a subset of the current
//! one: membership in the current set is a necessary condition for any future height.

use malachitebft_core_types::{
    PolkaCertificate, RoundCertificate, RoundCertificateType, ValidatorSet as _,
};

use crate::context::{Height, SignedVote, TabswarmContext, ValidatorSet};
use crate::ledger::Ledger;
use crate::wire::Message;

/// Heights past the one being decided for which votes and proposals are still relayed.
/// Further ones cannot be judged (the proposer seed is the unknown block hash) and would only
/// fill buffers.
pub const FUTURE_HEIGHTS: u64 = 2;

/// What a host does with a gossiped message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid now: relay it and feed it to consensus.
    Accept,
    /// Authentic but not worth relaying (stale or beyond the window): feed it, do not relay.
    Ignore,
    /// Forged, from a non-member, or claiming stake it lacks: drop it and penalise the sender.
    Reject,
}

/// Judges `msg` against `ledger` (the committed chain; the height being decided is the next).
/// `verify` checks one vote signature (a host may answer from a memo of checked votes).
pub fn judge(
    ledger: &Ledger,
    ctx: &TabswarmContext,
    msg: &Message,
    mut verify: impl FnMut(&SignedVote) -> bool,
) -> Verdict {
    let next = ledger.height().0 + 1;
    let set = ledger.next_validator_set();
    let member_ever =
        |a: &crate::identity::Address| ledger.genesis().validators.iter().any(|(v, _)| v == a);
    // Where a message's height falls: decided, now, in the window, or beyond it.
    let place = |h: Height| -> Place {
        if h.0 < next {
            Place::Stale
        } else if h.0 == next {
            Place::Now
        } else if h.0 <= next + FUTURE_HEIGHTS {
            Place::Soon
        } else {
            Place::Beyond
        }
    };
    match msg {
        Message::Vote(v) => {
            let signed: SignedVote = v.clone().into();
            let place = place(v.vote.height);
            let member = match place {
                Place::Stale => member_ever(&v.vote.validator),
                _ => set.power_of(&v.vote.validator) > 0,
            };
            if !member || !verify(&signed) {
                return Verdict::Reject;
            }
            relay_if_current(place)
        }
        Message::Proposal(p) => {
            let h = p.proposal.height;
            let place = place(h);
            let allowed = match place {
                // The seed of the set at `next` is our tip: the proposer is known exactly.
                Place::Now => set
                    .proposer(h, p.proposal.round)
                    .is_some_and(|v| v.address == p.proposal.proposer),
                Place::Stale => member_ever(&p.proposal.proposer),
                Place::Soon | Place::Beyond => set.power_of(&p.proposal.proposer) > 0,
            };
            if !allowed || !ctx.verify_proposal(&p.clone().into()) {
                return Verdict::Reject;
            }
            relay_if_current(place)
        }
        Message::Polka(c) => {
            let place = place(c.height);
            if place == Place::Stale {
                return Verdict::Ignore;
            }
            let cert: PolkaCertificate<TabswarmContext> = c.clone().into();
            let votes: Vec<SignedVote> = cert.votes(ctx).collect();
            certificate(&set, &votes, Threshold::Quorum, place, &mut verify)
        }
        Message::RoundCert(c) => {
            let place = place(c.height);
            if place == Place::Stale {
                return Verdict::Ignore;
            }
            let threshold = match c.cert_type {
                RoundCertificateType::Skip => Threshold::OneThird,
                RoundCertificateType::Precommit => Threshold::Quorum,
            };
            let cert: RoundCertificate<TabswarmContext> = c.clone().into();
            let votes: Vec<SignedVote> = cert.votes(ctx).collect();
            certificate(&set, &votes, threshold, place, &mut verify)
        }
        Message::Block(b) => {
            let place = place(b.height);
            if place == Place::Stale {
                return Verdict::Ignore;
            }
            let votes = b.certificate.votes();
            // A block at the next height must carry a full quorum of the set we know; one
            // further ahead is checked against the set we know too, where a quorum of the
            // later (smaller) set holds more than a third of ours.
            let threshold = if place == Place::Now {
                Threshold::Quorum
            } else {
                Threshold::OneThird
            };
            match certificate(&set, &votes, threshold, Place::Now, &mut verify) {
                Verdict::Accept => Verdict::Accept,
                _ => Verdict::Reject,
            }
        }
        Message::Evidence(e) => {
            if e.verify(ctx).is_err() || !member_ever(&e.offender()) {
                Verdict::Reject
            } else if ledger.evidence_is_useful(e) {
                Verdict::Accept
            } else {
                // Already slashed: true, but nothing left to do.
                Verdict::Ignore
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Stale,
    Now,
    Soon,
    Beyond,
}

fn relay_if_current(place: Place) -> Verdict {
    match place {
        Place::Now | Place::Soon => Verdict::Accept,
        Place::Stale | Place::Beyond => Verdict::Ignore,
    }
}

#[derive(Clone, Copy, Debug)]
enum Threshold {
    /// More than 2/3 of stake.
    Quorum,
    /// More than 1/3 of stake (at least one honest signer).
    OneThird,
}

/// Signers must be distinct members with valid signatures holding more than the threshold of
/// `set`'s stake. Beyond the window a valid certificate is still not relayed.
fn certificate(
    set: &ValidatorSet,
    votes: &[SignedVote],
    threshold: Threshold,
    place: Place,
    verify: &mut impl FnMut(&SignedVote) -> bool,
) -> Verdict {
    let mut seen = std::collections::BTreeSet::new();
    let mut signed: u128 = 0;
    for v in votes {
        let power = set.power_of(&v.message.validator);
        if power == 0 || !seen.insert(v.message.validator) || !verify(v) {
            return Verdict::Reject;
        }
        signed += u128::from(power);
    }
    let total = u128::from(set.total_voting_power());
    let enough = match threshold {
        Threshold::Quorum => 3 * signed > 2 * total,
        Threshold::OneThird => 3 * signed > total,
    };
    if !enough {
        return Verdict::Reject;
    }
    relay_if_current(place)
}

#[cfg(test)]
mod tests {
    use malachitebft_core_types::{NilOrVal, Round, Value as _, VoteType};

    use super::*;
    use crate::context::{Proposal, RoundProposal, Value, ValueId, Vote};
    use crate::evidence::{Evidence, SignedVoteMsg};
    use crate::genesis::{AggregationRule, Genesis};
    use crate::identity::Keypair;
    use crate::ledger::CommitCert;
    use crate::testkit::{genesis, key};
    use crate::wire::{PolkaCert, RoundCert, SignedProposalMsg};

    struct World {
        ledger: Ledger,
        ctx: TabswarmContext,
    }

    fn world() -> World {
        let g: Genesis = genesis(&[100, 100, 100, 100]);
        let ctx = TabswarmContext::new(g.run_id());
        World {
            ledger: Ledger::new(g),
            ctx,
        }
    }

    fn vote(w: &World, k: &Keypair, height: u64, round: i64, t: VoteType) -> SignedVote {
        w.ctx.sign_vote(
            k,
            Vote {
                height: Height(height),
                round: Round::new(round as u32),
                vote_type: t,
                value: NilOrVal::Val(ValueId([5; 32])),
                validator: k.address(),
            },
        )
    }

    fn judge_plain(w: &World, msg: &Message) -> Verdict {
        judge(&w.ledger, &w.ctx, msg, |v| w.ctx.verify_vote(v))
    }

    /// A value with no updates on the ledger's parameters.
    fn empty_value(w: &World) -> Value {
        Value {
            proposal: RoundProposal {
                base_param_hash: w.ledger.param_hash(),
                updates: vec![],
                aggregation_rule: AggregationRule::Mean,
                result_param_hash: [1; 32],
            },
            evidence: vec![],
        }
    }

    fn proposal(w: &World, k: &Keypair, round: u32) -> Message {
        let value = empty_value(w);
        let p = Proposal {
            height: Height(1),
            round: Round::new(round),
            value,
            pol_round: Round::Nil,
            proposer: k.address(),
        };
        Message::Proposal(SignedProposalMsg::from(w.ctx.sign_proposal(k, p)))
    }

    #[test]
    fn a_vote_from_a_key_outside_the_validator_set_is_rejected() {
        let w = world();
        let member = vote(&w, &key(0), 1, 0, VoteType::Prevote);
        assert_eq!(
            judge_plain(&w, &Message::Vote(member.into())),
            Verdict::Accept
        );
        let outsider = Keypair::from_seed([99; 32]);
        let forged = vote(&w, &outsider, 1, 0, VoteType::Prevote);
        // It is correctly signed: the old check (signature only) let it through.
        assert!(Message::Vote(forged.clone().into()).verify(&w.ctx));
        assert_eq!(
            judge_plain(&w, &Message::Vote(forged.into())),
            Verdict::Reject
        );
    }

    #[test]
    fn votes_far_ahead_are_not_relayed() {
        let w = world();
        let far = vote(&w, &key(1), 1 + FUTURE_HEIGHTS + 1, 0, VoteType::Prevote);
        assert_eq!(judge_plain(&w, &Message::Vote(far.into())), Verdict::Ignore);
    }

    #[test]
    fn only_the_rounds_proposer_may_propose() {
        let w = world();
        let set = w.ledger.next_validator_set();
        let expected = set.proposer(Height(1), Round::new(0)).unwrap().address;
        let (proposer, other): (Vec<u32>, Vec<u32>) =
            (0..4).partition(|i| key(*i).address() == expected);
        assert_eq!(
            judge_plain(&w, &proposal(&w, &key(proposer[0]), 0)),
            Verdict::Accept
        );
        assert_eq!(
            judge_plain(&w, &proposal(&w, &key(other[0]), 0)),
            Verdict::Reject,
            "a member proposing out of turn"
        );
        let outsider = Keypair::from_seed([42; 32]);
        assert_eq!(
            judge_plain(&w, &proposal(&w, &outsider, 0)),
            Verdict::Reject
        );
    }

    fn polka(w: &World, signers: &[Keypair]) -> Message {
        Message::Polka(PolkaCert {
            height: Height(1),
            round: Round::new(0),
            value_id: ValueId([5; 32]),
            signatures: signers
                .iter()
                .map(|k| {
                    let v = vote(w, k, 1, 0, VoteType::Prevote);
                    (k.address(), v.signature)
                })
                .collect(),
        })
    }

    #[test]
    fn an_empty_certificate_never_verifies() {
        let w = world();
        let empty = polka(&w, &[]);
        // Before, the signature check alone accepted it: all of its zero signatures verified.
        assert!(!empty.verify(&w.ctx));
        assert_eq!(judge_plain(&w, &empty), Verdict::Reject);
        let empty_round = Message::RoundCert(RoundCert {
            height: Height(1),
            round: Round::new(0),
            cert_type: RoundCertificateType::Skip,
            signatures: vec![],
        });
        assert!(!empty_round.verify(&w.ctx));
        assert_eq!(judge_plain(&w, &empty_round), Verdict::Reject);
    }

    #[test]
    fn certificates_must_hold_the_stake_they_claim() {
        let w = world();
        let outsiders: Vec<Keypair> = (0..5).map(|i| Keypair::from_seed([200 + i; 32])).collect();
        assert!(
            polka(&w, &outsiders).verify(&w.ctx),
            "signatures alone pass"
        );
        assert_eq!(judge_plain(&w, &polka(&w, &outsiders)), Verdict::Reject);
        // Two of four equal validators: half the stake, not more than 2/3.
        assert_eq!(
            judge_plain(&w, &polka(&w, &[key(0), key(1)])),
            Verdict::Reject
        );
        assert_eq!(
            judge_plain(&w, &polka(&w, &[key(0), key(1), key(2)])),
            Verdict::Accept
        );
        // A skip certificate needs more than 1/3: two of four is enough, one is not.
        let skip = |signers: &[Keypair]| {
            Message::RoundCert(RoundCert {
                height: Height(1),
                round: Round::new(2),
                cert_type: RoundCertificateType::Skip,
                signatures: signers
                    .iter()
                    .map(|k| {
                        let v = vote(&w, k, 1, 2, VoteType::Prevote);
                        (
                            VoteType::Prevote,
                            NilOrVal::Val(ValueId([5; 32])),
                            k.address(),
                            v.signature,
                        )
                    })
                    .collect(),
            })
        };
        assert_eq!(judge_plain(&w, &skip(&[key(0)])), Verdict::Reject);
        assert_eq!(judge_plain(&w, &skip(&[key(0), key(1)])), Verdict::Accept);
        // The same signer twice does not count twice.
        assert_eq!(
            judge_plain(&w, &polka(&w, &[key(0), key(0), key(1)])),
            Verdict::Reject
        );
    }

    #[test]
    fn a_block_signed_by_outsiders_is_rejected() {
        let w = world();
        let outsiders: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([150 + i; 32])).collect();
        let value = empty_value(&w);
        let block = |signers: &[Keypair]| {
            let id = value.id();
            let signatures = signers
                .iter()
                .map(|k| {
                    let v = w.ctx.sign_vote(
                        k,
                        Vote {
                            height: Height(1),
                            round: Round::new(0),
                            vote_type: VoteType::Precommit,
                            value: NilOrVal::Val(id),
                            validator: k.address(),
                        },
                    );
                    (k.address(), v.signature)
                })
                .collect();
            Message::Block(Box::new(crate::ledger::Block {
                height: Height(1),
                parent: w.ledger.tip_hash(),
                credits: vec![],
                value: value.clone(),
                certificate: CommitCert {
                    height: Height(1),
                    round: Round::new(0),
                    value_id: id,
                    signatures,
                },
            }))
        };
        assert_eq!(judge_plain(&w, &block(&outsiders)), Verdict::Reject);
        assert_eq!(judge_plain(&w, &block(&[])), Verdict::Reject);
        assert_eq!(
            judge_plain(&w, &block(&[key(0), key(1), key(2)])),
            Verdict::Accept
        );
    }

    #[test]
    fn evidence_against_a_non_member_is_rejected() {
        let w = world();
        let outsider = Keypair::from_seed([77; 32]);
        let a = vote(&w, &outsider, 1, 0, VoteType::Prevote);
        let mut b_vote = a.message.clone();
        b_vote.value = NilOrVal::Nil;
        let b = w.ctx.sign_vote(&outsider, b_vote);
        let e = Evidence::double_vote(SignedVoteMsg::from(a), SignedVoteMsg::from(b));
        assert_eq!(judge_plain(&w, &Message::Evidence(e)), Verdict::Reject);
        let m = key(2);
        let a = vote(&w, &m, 1, 0, VoteType::Prevote);
        let mut b_vote = a.message.clone();
        b_vote.value = NilOrVal::Nil;
        let b = w.ctx.sign_vote(&m, b_vote);
        let e = Evidence::double_vote(SignedVoteMsg::from(a), SignedVoteMsg::from(b));
        assert_eq!(judge_plain(&w, &Message::Evidence(e)), Verdict::Accept);
    }
}
