//! Byzantine behaviours: what a faulty validator does to its outgoing messages.

use malachitebft_core_types::{NilOrVal, Value as _};
use tabswarm_consensus::context::{TabswarmContext, ValueId, Vote};
use tabswarm_consensus::genesis::RunId;
use tabswarm_consensus::identity::{Keypair, Signature};
use tabswarm_consensus::testkit::result_hash;
use tabswarm_consensus::wire::{Message, SignedProposalMsg};

/// How a validator behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Sends nothing at all.
    Silent,
    /// Sends one vote (or proposal) to half the peers and a conflicting one to the rest.
    Equivocate,
    /// Proposes values whose result hash is wrong; otherwise honest.
    InvalidProposals,
    /// Also re-sends old messages, messages re-signed for another run, and signatures moved
    /// onto another kind of message.
    Replay,
    /// Also sends votes in another validator's name and messages with flipped signature bits.
    Forge,
}

/// A message for a subset of peers: `None` means everyone.
pub(crate) type Addressed = (Option<Vec<usize>>, Message);

/// Who is sending and what a faulty sender can draw on.
pub(crate) struct Sender<'a> {
    pub(crate) ctx: &'a TabswarmContext,
    pub(crate) key: &'a Keypair,
    pub(crate) me: usize,
    pub(crate) n: usize,
    /// Messages this node received lately (for replays).
    pub(crate) history: &'a [Message],
    /// Another validator to impersonate.
    pub(crate) victim: tabswarm_consensus::identity::Address,
    /// A random word for choices.
    pub(crate) coin: u64,
}

/// Rewrites one honest outgoing message according to `b`.
pub(crate) fn rewrite(b: Behaviour, msg: Message, s: &Sender<'_>) -> Vec<Addressed> {
    let Sender {
        ctx,
        key,
        me,
        n,
        history,
        victim,
        coin,
    } = *s;
    match b {
        Behaviour::Honest | Behaviour::InvalidProposals => vec![(None, msg)],
        Behaviour::Silent => Vec::new(),
        Behaviour::Equivocate => {
            // Both versions go to everyone, as gossip relaying would deliver them: half the
            // peers see one first, half the other.
            let (half_a, half_b): (Vec<usize>, Vec<usize>) =
                (0..n).filter(|&i| i != me).partition(|i| i % 2 == 0);
            let both = |a: Message, b: Message| {
                vec![
                    (Some(half_a.clone()), a.clone()),
                    (Some(half_b.clone()), b.clone()),
                    (Some(half_a.clone()), b),
                    (Some(half_b.clone()), a),
                ]
            };
            match &msg {
                Message::Vote(v) => {
                    let other = Vote {
                        value: match v.vote.value {
                            NilOrVal::Nil => NilOrVal::Val(ValueId([0xee; 32])),
                            NilOrVal::Val(_) => NilOrVal::Nil,
                        },
                        ..v.vote.clone()
                    };
                    let conflicting = Message::Vote(ctx.sign_vote(key, other).into());
                    both(msg, conflicting)
                }
                Message::Proposal(p) => {
                    // A second, equally valid value: drop the last update and recompute.
                    let mut value = p.proposal.value.clone();
                    value.proposal.updates.pop();
                    value.proposal.result_param_hash =
                        result_hash(value.proposal.base_param_hash, &value.proposal.updates);
                    if value.id() == p.proposal.value.id() {
                        return vec![(None, msg)];
                    }
                    let mut other = p.proposal.clone();
                    other.value = value;
                    let conflicting = Message::Proposal(ctx.sign_proposal(key, other).into());
                    both(msg, conflicting)
                }
                _ => vec![(None, msg)],
            }
        }
        Behaviour::Replay => {
            let mut out = vec![(None, msg.clone())];
            if !history.is_empty() {
                let old = history[(coin as usize) % history.len()].clone();
                out.push((None, old));
            }
            let foreign = TabswarmContext::new(RunId([0xab; 32]));
            match &msg {
                Message::Vote(v) => {
                    // Same vote signed for another run.
                    out.push((
                        None,
                        Message::Vote(foreign.sign_vote(key, v.vote.clone()).into()),
                    ));
                }
                Message::Proposal(p) => {
                    out.push((
                        None,
                        Message::Proposal(foreign.sign_proposal(key, p.proposal.clone()).into()),
                    ));
                    // A vote's signature moved onto the proposal: a cross-kind replay.
                    if let Some(Message::Vote(v)) =
                        history.iter().rev().find(|m| matches!(m, Message::Vote(_)))
                    {
                        out.push((
                            None,
                            Message::Proposal(SignedProposalMsg {
                                proposal: p.proposal.clone(),
                                signature: v.signature,
                            }),
                        ));
                    }
                }
                _ => {}
            }
            out
        }
        Behaviour::Forge => {
            let mut out = vec![(None, msg.clone())];
            if let Message::Vote(v) = &msg {
                // In another validator's name, signed with our key.
                let mut forged = v.clone();
                forged.vote.validator = victim;
                forged.signature = ctx.sign_vote(key, forged.vote.clone()).signature;
                out.push((None, Message::Vote(forged)));
                // Our own vote with a flipped bit.
                let mut bytes = v.signature.to_bytes();
                bytes[(coin % 64) as usize] ^= 1 << (coin % 8);
                let mut flipped = v.clone();
                flipped.vote.value = NilOrVal::Val(ValueId([0x11; 32]));
                flipped.signature = Signature::from_bytes(&bytes);
                out.push((None, Message::Vote(flipped)));
            }
            out
        }
    }
}
