//! Four (and more) in-process validators driven through Malachite with real signatures.

use tabswarm_consensus::ledger::Ledger;
use tabswarm_consensus::testkit::{Cluster, genesis};

#[test]
fn four_equal_validators_commit_ten_heights_with_identical_chains() {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(10, 200_000).expect("no node error"));
    let first = &c.committed[0][..10];
    let hashes = |chain: &[tabswarm_consensus::ledger::Block]| -> Vec<[u8; 32]> {
        chain[..10].iter().map(|b| b.hash()).collect()
    };
    for chain in &c.committed {
        // Certificates may hold different (equally valid) precommit sets; hashes exclude them.
        assert!(
            hashes(chain) == hashes(first),
            "every node commits the same blocks"
        );
    }
    // A late joiner verifies the chain from genesis alone.
    let ledger = Ledger::verify_chain(genesis(&[1, 1, 1, 1]), first).expect("chain verifies");
    assert_eq!(ledger.height().0, 10);
    // Credits: 4 updates per block, trainers 0,1,2,0 -> trainer 0 gets 2 per block.
    assert_eq!(ledger.credits().get(&[0u8; 32]), Some(&20));
    // On a perfect network each height decides in round 0, before any timeout.
    assert!(first.iter().all(|b| b.certificate.round.as_i64() == 0));
}

#[test]
fn unequal_stakes_commit_and_certificates_hold_quorum_of_stake() {
    let stakes = [10, 1, 1, 1, 5, 3];
    let mut c = Cluster::new(&stakes).expect("cluster");
    assert!(c.run_until_height(5, 200_000).expect("no node error"));
    let total: u64 = stakes.iter().sum();
    let g = genesis(&stakes);
    for b in &c.committed[0][..5] {
        let signed: u64 = b
            .certificate
            .signatures
            .iter()
            .map(|(a, _)| {
                g.validators
                    .iter()
                    .find(|(x, _)| x == a)
                    .map_or(0, |(_, s)| *s)
            })
            .sum();
        assert!(3 * signed > 2 * total, "certificate holds > 2/3 of stake");
    }
}

#[test]
fn a_lone_validator_commits_one_height_per_call() {
    let mut c = Cluster::new(&[1]).expect("cluster");
    // start() committed height 1 and asked to be called again rather than looping on.
    assert_eq!(c.committed[0].len(), 1);
    assert!(c.run_until_height(5, 1_000).expect("no node error"));
    assert_eq!(c.committed[0].len(), 5);
}

#[test]
fn judge_accepts_real_votes_and_refuses_forged_ones() {
    use malachitebft_core_types::{NilOrVal, Round, VoteType};
    use tabswarm_consensus::context::{Height, TabswarmContext, Vote};
    use tabswarm_consensus::gate::Verdict;
    use tabswarm_consensus::testkit::key;
    use tabswarm_consensus::wire::Message;

    let g = genesis(&[1, 1, 1, 1]);
    let mut node = tabswarm_consensus::node::Node::new(
        g.clone(),
        key(0),
        tabswarm_consensus::testkit::HonestApp::new(1),
    )
    .expect("node");
    let ctx = TabswarmContext::new(g.run_id());
    let vote = Vote {
        height: Height(1),
        round: Round::new(0),
        vote_type: VoteType::Prevote,
        value: NilOrVal::Nil,
        validator: key(1).address(),
    };
    let genuine = Message::Vote(ctx.sign_vote(&key(1), vote.clone()).into());
    assert_eq!(node.judge(&genuine), Verdict::Accept);
    // Asked again (now from the memo) the answer is the same.
    assert_eq!(node.judge(&genuine), Verdict::Accept);
    // Signed by another key than the vote names: refused, and not remembered as valid.
    let forged = Message::Vote(ctx.sign_vote(&key(2), vote).into());
    assert_eq!(node.judge(&forged), Verdict::Reject);
    assert_eq!(node.judge(&forged), Verdict::Reject);
}

/// Found by fuzzing the peer: a validator's signed vote for height 0 (no such height: the
/// chain starts at 1) reached the catch-up answer as a stale vote, which counted the first
/// block to send from 0 and panicked on `0 - 1` in builds with overflow checks. It is answered
/// like any laggard's vote, from block 1.
#[test]
fn a_validators_vote_for_height_zero_is_answered_from_block_one() {
    use malachitebft_core_types::{NilOrVal, Round, VoteType};
    use tabswarm_consensus::context::{Height, TabswarmContext, Vote};
    use tabswarm_consensus::node::Output;
    use tabswarm_consensus::testkit::key;
    use tabswarm_consensus::wire::Message;

    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(2, 100_000).expect("no node error"));
    let signer = key(1);
    let vote = Vote {
        height: Height(0),
        round: Round::new(0),
        vote_type: VoteType::Prevote,
        value: NilOrVal::Nil,
        validator: signer.address(),
    };
    let ctx = TabswarmContext::new(genesis(&[1, 1, 1, 1]).run_id());
    let out = c.nodes[0]
        .on_message(Message::Vote(ctx.sign_vote(&signer, vote).into()))
        .expect("a stale vote is no error");
    let sent: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(Message::Block(b)) => Some(b.height.0),
            _ => None,
        })
        .collect();
    assert_eq!(sent.first(), Some(&1), "blocks from height 1: {sent:?}");
}

/// Counts of laggards' stale votes are kept per height of ours; once that height is decided
/// they are dropped, so the memo holds the current height's counts only (the soak test saw it
/// grow with every height until its 4,096-entry reset).
#[test]
fn counts_of_stale_votes_are_dropped_when_the_height_is_decided() {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(20, 1_000_000).expect("no node error"));
    for node in &c.nodes {
        let (_, counts, _) = node
            .buffers()
            .into_iter()
            .find(|(name, _, _)| *name == "stale_votes_seen")
            .expect("the memo is listed");
        // Late votes for the height just decided come from the three other validators.
        assert!(counts <= 3, "{counts} counts kept after 20 heights");
    }
}
