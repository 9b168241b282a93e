//! Crash safety: a validator restarted from what it persisted never signs a vote that
//! conflicts with one it signed before the crash.

use malachitebft_core_types::{NilOrVal, TimeoutKind, VoteType};
use tabswarm_consensus::context::ValueId;
use tabswarm_consensus::node::{Node, Output, Persisted};
use tabswarm_consensus::testkit::{Cluster, HonestApp, genesis, key};
use tabswarm_consensus::wire::Message;

fn own_votes(outputs: &[Output], me: tabswarm_consensus::identity::Address) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m @ Message::Vote(v)) if v.vote.validator == me => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Runs a 4-validator cluster until validator 0 has persisted a prevote at height 3.
fn cluster_with_prevote_at_height_3() -> Cluster {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(2, 100_000).expect("no node error"));
    for _ in 0..100_000 {
        let signed = &c.stores[0].signer;
        if signed
            .votes
            .iter()
            .any(|v| v.height.0 == 3 && v.vote_type == VoteType::Prevote)
        {
            return c;
        }
        assert!(c.step().expect("no node error"));
    }
    panic!("validator 0 never prevoted at height 3");
}

#[test]
fn restart_with_wal_resends_the_recorded_vote_instead_of_signing_anew() {
    let c = cluster_with_prevote_at_height_3();
    let store = c.stores[0].clone();
    let before = store.signer.clone();
    let mut node =
        Node::restart(genesis(&[1, 1, 1, 1]), key(0), HonestApp::new(4), store).expect("restart");
    let out = node.start().expect("start");
    // Nothing new was signed: the signer state is unchanged and no new signer record is due.
    assert_eq!(node.signer_state(), &before);
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Persist(tabswarm_consensus::node::Record::Signer(_))
    )));
    // Every vote it sends again is one it had signed.
    for m in own_votes(&out, key(0).address()) {
        let Message::Vote(v) = m else { unreachable!() };
        assert!(
            before.votes.contains(&v.vote),
            "re-sent only recorded votes"
        );
    }
}

#[test]
fn restart_with_lost_wal_refuses_to_sign_against_the_persisted_signer_state() {
    let c = cluster_with_prevote_at_height_3();
    let mut store: Persisted = c.stores[0].clone();
    // Pretend the crash lost the write-ahead log and the vote signed before it was for a
    // value this node will never see again: only the signer state survives.
    store.wal.clear();
    let other = ValueId([0x77; 32]);
    for v in store.signer.votes.iter_mut() {
        if v.height.0 == 3 {
            v.value = NilOrVal::Val(other);
        }
    }
    let mut node =
        Node::restart(genesis(&[1, 1, 1, 1]), key(0), HonestApp::new(4), store).expect("restart");
    let mut out = node.start().expect("start");
    // Fire the propose timeout: with no proposal the machine wants to prevote nil in round 0.
    let propose = out.iter().find_map(|o| match o {
        Output::ScheduleTimer(t, _) if t.kind == TimeoutKind::Propose => Some(*t),
        _ => None,
    });
    if let Some(t) = propose {
        out.extend(node.on_timeout(t).expect("timeout"));
    }
    let conflicting: Vec<_> = own_votes(&out, key(0).address())
        .into_iter()
        .filter(|m| match m {
            Message::Vote(v) => {
                v.vote.height.0 == 3
                    && v.vote.round.as_i64() == 0
                    && v.vote.vote_type == VoteType::Prevote
                    && v.vote.value != NilOrVal::Val(other)
            }
            _ => false,
        })
        .collect();
    assert!(
        conflicting.is_empty(),
        "no conflicting prevote left the node"
    );
    assert!(node.stats().refused_to_sign >= 1, "{:?}", node.stats());
}
