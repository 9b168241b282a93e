//! The peer's protocol rules, each tried on a network of real peers in memory (no sockets):
//! agreement and learning, restart from records, catch-up against a lying peer, a pool flood
//! under fresh keys, a trainer trying to walk the model away, roles.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use support::{ALL, Net, rules};
use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::RunId;
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{Event, Roles};

fn same_params(net: &Net, members: &[usize]) -> bool {
    let first = net.peer(members[0]).app().param_hash();
    members
        .iter()
        .all(|&i| net.peer(i).app().param_hash() == first)
}

#[test]
fn four_validators_commit_learn_and_agree() {
    let mut net = Net::new(4, &[100, 100, 100, 100], rules());
    for i in 0..4 {
        net.start(i, ALL);
    }
    assert!(net.run_until(60_000, |n| (0..4).all(|i| n.height(i) >= 6)));
    let top = (0..4).map(|i| net.height(i)).min().unwrap();
    assert!(net.run_until(net.now + 20_000, |n| {
        (0..4).all(|i| n.peer(i).app().height() >= top)
    }));
    // Same chain, same parameters everywhere.
    let head = net.peer(0).ledger().blocks()[top as usize - 1].hash();
    for i in 1..4 {
        assert_eq!(net.peer(i).ledger().blocks()[top as usize - 1].hash(), head);
    }
    assert!(same_params(&net, &[0, 1, 2, 3]));
    // Learning: test accuracy after the blocks beats the untrained model's.
    let first = net.events[0]
        .iter()
        .find_map(|e| match e {
            Event::Tested {
                height: 0,
                accuracy,
                ..
            } => Some(*accuracy),
            _ => None,
        })
        .unwrap();
    let last = net.accuracy(0).unwrap();
    assert!(last > first + 0.2, "accuracy {first} -> {last}");
    // Every block's updates have the run's weight, whatever trainers claim.
    for b in net.peer(0).ledger().blocks() {
        assert!(!b.value.proposal.updates.is_empty());
    }
}

#[test]
fn a_restarted_peer_resumes_from_its_records_and_catches_up() {
    let mut net = Net::new(4, &[100, 100, 100, 100], rules());
    for i in 0..4 {
        net.start(i, ALL);
    }
    assert!(net.run_until(60_000, |n| n.height(3) >= 3));
    net.crash(3);
    let at_crash = net.disks[3].persisted.blocks.len() as u64;
    assert!(at_crash >= 3);
    // The others keep committing without it (3 of 4 equal stakes is more than 2/3).
    assert!(net.run_until(net.now + 60_000, |n| n.height(0) >= at_crash + 4));
    net.start(3, ALL);
    assert_eq!(net.height(3), at_crash, "restored from its own records");
    let target = net.height(0) + 2;
    assert!(net.run_until(net.now + 60_000, |n| n.height(3) >= target
        && !n.peer(3).syncing()));
    assert!(net.run_until(net.now + 20_000, |n| {
        n.peer(3).app().height() == n.peer(3).ledger().height().0
            && n.peer(0).app().height() == n.peer(3).app().height()
    }));
    assert!(same_params(&net, &[0, 3]));
}

#[test]
fn a_lying_peer_cannot_keep_a_joiner_syncing() {
    let mut net = Net::new(6, &[100, 100, 100, 100], rules());
    for i in 0..4 {
        net.start(i, ALL);
    }
    assert!(net.run_until(60_000, |n| n.height(0) >= 4));
    // Slot 4 claims a chain a million blocks long and never delivers it.
    net.fake(
        4,
        Box::new(|req| {
            Some(match req {
                Request::Status => Response::Status { height: 1_000_000 },
                Request::Checkpoint => Response::Checkpoint {
                    height: 1_000_000,
                    address: [0xee; 32],
                },
                _ => Response::NotFound,
            })
        }),
    );
    let trainer = Roles {
        train: true,
        validate: false,
    };
    // The joiner meets the liar first, so the liar's claim is the best it knows...
    net.start_linked(5, trainer, &[4]);
    net.run_until(net.now + 1_000, |_| false);
    assert!(net.peer(5).syncing());
    // ... then the honest peers.
    for j in 0..4 {
        net.link(5, j);
    }
    let target = net.height(0) + 2;
    assert!(
        net.run_until(net.now + 120_000, |n| n.height(5) >= target
            && !n.peer(5).syncing()),
        "joiner at {} (syncing: {}), network at {}",
        net.height(5),
        net.peer(5).syncing(),
        net.height(0)
    );
}

fn junk_update(seed: u32, height: u64, base: [u8; 32], run: &RunId, samples: u32) -> Vec<u8> {
    let mut s = [0u8; 32];
    s[..4].copy_from_slice(&seed.to_le_bytes());
    s[30] = 0xfe;
    let key = Keypair::from_seed(s);
    SignedUpdate::sign(
        UpdateHeader {
            height,
            base_param_hash: base,
            trainer: key.address(),
            samples,
            loss_before: 0.1,
            loss_after: 0.01,
            payload_hash: [seed as u8; 32],
            payload_len: 407_080,
        },
        &key,
        run,
    )
    .encode()
    .unwrap()
}

#[test]
fn a_flood_of_fresh_keys_neither_stops_commits_nor_crowds_out_trainers() {
    let mut net = Net::new(5, &[100, 100, 100, 100], rules());
    for i in 0..4 {
        net.start(i, ALL);
    }
    // Slot 4 announces hundreds of updates under fresh keys and serves none of them.
    net.fake(4, Box::new(|_| Some(Response::NotFound)));
    assert!(net.run_until(60_000, |n| n.height(0) >= 2));
    let run = net.genesis.run_id();
    let weight = tabswarm_peer::jobs::update_weight(&net.genesis.training);
    let mut seed = 0;
    for _ in 0..5 {
        let h = net.height(0);
        let base = net.peer(0).app().param_hash();
        for _ in 0..300 {
            seed += 1;
            for to in 0..4 {
                net.inject(
                    4,
                    to,
                    Topic::Updates,
                    junk_update(seed, h + 1, base, &run, weight),
                );
            }
        }
        assert!(
            net.run_until(net.now + 30_000, |n| n.height(0) > h),
            "stalled at {h}"
        );
    }
    // Every block still includes honest trainers' updates, and only theirs.
    let honest: Vec<[u8; 32]> = (0..4).map(|i| net.keys[i].address().0).collect();
    for b in &net.peer(0).ledger().blocks()[2..] {
        assert!(!b.value.proposal.updates.is_empty());
        assert!(
            b.value
                .proposal
                .updates
                .iter()
                .all(|u| honest.contains(&u.trainer))
        );
    }
    let stats = net.peer(0).snapshot().app;
    assert!(stats.announcements_dropped > 0, "{stats:?}");
    // An announcement lying about its weight is rejected (and costs the sender).
    let before = net.verdicts[0].len();
    let h = net.height(0);
    let base = net.peer(0).app().param_hash();
    net.inject(
        4,
        0,
        Topic::Updates,
        junk_update(99_999, h + 1, base, &run, weight * 100),
    );
    net.run_until(net.now + 50, |n| n.verdicts[0].len() > before);
    assert_eq!(net.verdicts[0][before], Verdict::Reject);
}

#[test]
fn a_vote_signed_outside_the_validator_set_is_rejected_by_the_peer() {
    use malachitebft_core_types::{NilOrVal, Round, VoteType};
    use tabswarm_consensus::context::{Height, TabswarmContext, Vote};
    use tabswarm_consensus::wire::Message;
    let mut net = Net::new(4, &[100, 100, 100], rules());
    for i in 0..3 {
        net.start(i, ALL);
    }
    assert!(net.run_until(60_000, |n| n.height(0) >= 1));
    let ctx = TabswarmContext::new(net.genesis.run_id());
    let outsider = Keypair::from_seed([123; 32]);
    let vote = ctx.sign_vote(
        &outsider,
        Vote {
            height: Height(net.height(0) + 1),
            round: Round::new(0),
            vote_type: VoteType::Prevote,
            value: NilOrVal::Nil,
            validator: outsider.address(),
        },
    );
    let before = net.verdicts[0].len();
    net.inject(
        3,
        0,
        Topic::Votes,
        Message::Vote(vote.into()).encode().unwrap(),
    );
    net.run_until(net.now + 20, |n| n.verdicts[0].len() > before);
    assert_eq!(net.verdicts[0][before], Verdict::Reject);
    assert!(net.peer(0).snapshot().rejected.bad_signature >= 1);
}

#[test]
fn a_staked_peer_without_the_validator_role_never_votes() {
    let mut net = Net::new(4, &[100, 100, 100, 100], rules());
    for i in 0..3 {
        net.start(i, ALL);
    }
    net.start(
        3,
        Roles {
            train: true,
            validate: false,
        },
    );
    assert!(net.run_until(60_000, |n| (0..4).all(|i| n.height(i) >= 3)));
    assert_eq!(net.published[3].get(&Topic::Votes), None, "it voted");
    assert_eq!(net.published[3].get(&Topic::Proposals), None, "it proposed");
    assert!(
        net.published[3].get(&Topic::Updates).copied().unwrap_or(0) > 0,
        "it trains"
    );
}
