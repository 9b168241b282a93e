//! Hostile peers against a running network of real processes:
//! - one that sends malformed, oversized, forged, cross-run and replayed messages: every one
//!   is refused, the sender loses gossip score, and the honest validators keep committing;
//! - a crowd announcing updates under fresh trainer keys (free to make) and never serving
//!   them: the pool turns them away and honest updates still make every block;
//! - one that lies about its height to a joiner: the joiner stops believing it and catches up;
//! - staked validators (the test holds their keys) that propose two values in one round, sign
//!   conflicting votes and vote for a value nobody proposed: evidence of both is committed,
//!   their stake slashed, and the invented value never commits.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use malachitebft_core_types::{NilOrVal, Round, VoteType};
use serde_json::json;
use support::attacker::Attacker;
use support::{FAST, Net, report, serial};
use tabswarm_consensus::context::{
    Height, Proposal, RoundProposal, TabswarmContext, ValidatorSet, Value, ValueId, Vote,
};
use tabswarm_consensus::evidence::SignedVoteMsg;
use tabswarm_consensus::genesis::{Genesis, RunId, hex, unhex32};
use tabswarm_consensus::identity::{Address, Keypair, Signature};
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_consensus::wire::{Message, SignedProposalMsg};
use tabswarm_peer::jobs;
use tabswarm_peer::wire::{Request, Response, Topic};

fn header(trainer: Address, height: u64) -> UpdateHeader {
    UpdateHeader {
        height,
        base_param_hash: [1; 32],
        trainer,
        samples: 100,
        loss_before: 1.0,
        loss_after: 0.5,
        payload_hash: [2; 32],
        payload_len: 400,
    }
}

#[test]
fn bad_messages_are_refused_and_penalised_while_commits_go_on() {
    let _serial = serial();
    let mut net = support::net("adversary", 3, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    net.wait_until("height 3", Duration::from_secs(120), |n| {
        (0..3).all(|i| n.height(i) >= 3)
    })
    .unwrap();
    let status = net.status(0).unwrap();
    let target = support::direct_tcp(&status);
    let victim = Address(unhex32(status["address"].as_str().unwrap()).unwrap());
    let run = genesis_of(&net).run_id();
    let height_before = net.height(0);

    let attacker = Attacker::spawn(&genesis_of(&net), |_| Response::NotFound);
    attacker.dial(target);
    // A publish before the node's subscriptions arrive would reach no one.
    wait_for("the node to subscribe to every topic", || {
        attacker.seen().subscriptions >= Topic::ALL.len() as u64
    });
    let me = Keypair::from_seed([42; 32]);
    let forged_vote = Message::Vote(SignedVoteMsg {
        vote: Vote {
            height: Height(height_before + 1),
            round: Round::new(0),
            vote_type: VoteType::Prevote,
            value: NilOrVal::Nil,
            validator: victim,
        },
        signature: Signature::from_bytes(&[7; 64]),
    });
    let messages: Vec<(Topic, Vec<u8>)> = vec![
        // Malformed: not a message at all.
        (Topic::Votes, b"definitely not a vote".to_vec()),
        // Oversized for its kind (an announcement is at most 512 bytes).
        (Topic::Updates, vec![1u8; 100_000]),
        // Forged: claims the victim trained it, signed by someone else.
        (
            Topic::Updates,
            SignedUpdate::sign(header(victim, height_before + 1), &me, &run)
                .encode()
                .unwrap(),
        ),
        // Cross-run replay: properly signed, but for another run.
        (
            Topic::Updates,
            SignedUpdate::sign(
                header(me.address(), height_before + 1),
                &me,
                &RunId([9; 32]),
            )
            .encode()
            .unwrap(),
        ),
        // Forged consensus vote in the victim's name.
        (Topic::Votes, forged_vote.encode().unwrap()),
        // Replay from the past: authentic, but for a height long decided.
        (
            Topic::Updates,
            SignedUpdate::sign(header(me.address(), 1), &me, &run)
                .encode()
                .unwrap(),
        ),
    ];
    for (topic, data) in messages {
        attacker.publish(topic, data);
    }
    let attacker_id = attacker.peer_id.to_string();
    let mut last = serde_json::Value::Null;
    let judged = (0..120).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        let Some(s) = net.status(0) else {
            return false;
        };
        let r = &s["rejected"];
        let penalised = s["penalised_peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0].as_str() == Some(&attacker_id) && p[1].as_f64().unwrap() < 0.0);
        let done = r["malformed"].as_u64().unwrap() >= 2
            && r["bad_signature"].as_u64().unwrap() >= 3
            && r["wrong_run_or_stale"].as_u64().unwrap() >= 1
            && penalised;
        last = s;
        done
    });
    assert!(
        judged,
        "not every bad message was refused and penalised within 30 s; last status: {last}"
    );
    assert_eq!(
        attacker.seen().publish_errors,
        0,
        "every message left the attacker"
    );
    net.wait_until("honest commits to continue", Duration::from_secs(60), |n| {
        (0..3).all(|i| n.height(i) >= height_before + 3)
    })
    .unwrap();
    net.stop_all().unwrap();
}

/// Fresh trainer keys cost nothing, so an attacker can announce as many updates as it likes
/// and never serve them. Ten attacking peers announce hundreds of such updates for every
/// height, each from a fresh key with the right weight and base; the pool admits a bounded
/// share (validators do ask for the payloads, which never come), drops the rest, and the
/// validators' own updates are still fetched, included and credited while blocks go on.
#[test]
fn a_crowd_of_fresh_trainer_keys_cannot_crowd_out_honest_updates() {
    let _serial = serial();
    let mut net = support::net("flood", 3, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    net.wait_height(&[0, 1, 2], 3, Duration::from_secs(120))
        .unwrap();
    let genesis = genesis_of(&net);
    let run = genesis.run_id();
    let weight = jobs::update_weight(&genesis.training);
    let payload_len = (jobs::initial_params(&genesis.training).unwrap().len() * 4) as u32;
    let attackers: Vec<Attacker> = (0..10)
        .map(|_| Attacker::spawn(&genesis, |_| Response::NotFound))
        .collect();
    for (i, a) in attackers.iter().enumerate() {
        a.dial(support::direct_tcp(&net.status(i % 3).unwrap()));
    }
    wait_for("every attacker to see a node subscribe", || {
        attackers.iter().all(|a| a.seen().subscriptions > 0)
    });

    let credit_before = total_credit(&net);
    let start = Instant::now();
    let height_before = net.height(0);
    let mut sent = 0u64;
    let mut seed = 0u64;
    while start.elapsed() < Duration::from_secs(30) {
        let Some(status) = net.status(0) else {
            continue;
        };
        let next = status["height"].as_u64().unwrap() + 1;
        let base = unhex32(status["param_hash"].as_str().unwrap()).unwrap();
        for a in &attackers {
            for _ in 0..10 {
                seed += 1;
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&seed.to_le_bytes());
                let key = Keypair::from_seed(secret);
                let header = UpdateHeader {
                    height: next,
                    base_param_hash: base,
                    trainer: key.address(),
                    samples: weight,
                    loss_before: 2.3,
                    loss_after: 0.1,
                    payload_hash: secret,
                    payload_len,
                };
                let signed = SignedUpdate::sign(header, &key, &run);
                a.publish(Topic::Updates, signed.encode().unwrap());
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let heights = (0..3).map(|i| net.height(i)).min().unwrap();
    assert!(
        heights >= height_before + 4,
        "blocks slowed to a crawl under the flood: {height_before} -> {heights} in 30 s\n{}",
        net.logs()
    );
    let credit_after = total_credit(&net);
    assert!(
        credit_after > credit_before,
        "no honest update was credited during the flood ({credit_before} -> {credit_after})"
    );
    let dropped: u64 = (0..3)
        .filter_map(|i| net.status(i))
        .map(|s| s["rejected"]["announcements_dropped"].as_u64().unwrap())
        .sum();
    assert!(
        dropped > 0,
        "{sent} fresh-key announcements and none dropped: the pool is not bounded"
    );
    let asked: u64 = attackers
        .iter()
        .map(|a| a.seen().requests.values().sum::<u64>())
        .sum();
    assert!(
        asked > 0,
        "no validator asked for a flooded payload: the announcements never reached the pool"
    );
    drop(attackers);
    net.stop_all().unwrap();
}

/// A peer claims a height far ahead and a checkpoint there, but has no blocks to back it. A
/// fresh node bootstrapping from both the relay and the liar believes it first (it is the
/// best claim), gets nothing, doubts it and catches up from the honest peers.
#[test]
fn a_peer_lying_about_its_height_cannot_keep_a_joiner_syncing() {
    let _serial = serial();
    let mut net = support::net("liar", 4, 3, FAST);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    net.wait_height(&[0, 1, 2], 4, Duration::from_secs(120))
        .unwrap();
    let liar = Attacker::spawn(&genesis_of(&net), |request| match request {
        Request::Status => Response::Status { height: 1_000_000 },
        Request::Checkpoint => Response::Checkpoint {
            height: 1_000_000,
            address: [7; 32],
        },
        _ => Response::NotFound,
    });
    let liar_addr = liar.addr.to_string();
    net.start(3, &["--roles", "trainer", "--bootstrap", &liar_addr])
        .unwrap();
    net.wait_until(
        "the joiner to catch up despite the liar",
        Duration::from_secs(150),
        |n| {
            let lowest = (0..3).map(|i| n.height(i)).min().unwrap_or(0);
            n.status(3).is_some_and(|s| {
                s["syncing"] == false && s["height"].as_u64().unwrap_or(0) + 1 >= lowest
            })
        },
    )
    .unwrap();
    let seen = liar.seen();
    assert!(
        seen.requests.get("Status").copied().unwrap_or(0) > 0,
        "the joiner never asked the liar, so the lie was not tested: {seen:?}"
    );
    assert!(
        seen.requests.get("Checkpoint").copied().unwrap_or(0)
            + seen.requests.get("Blocks").copied().unwrap_or(0)
            > 0,
        "the joiner never acted on the lie, so the defence was not tested: {seen:?}"
    );
    drop(liar);
    net.stop_all().unwrap();
}

/// A quarter of stake is Byzantine, in two validators whose keys the test holds and signs
/// with over gossip, like any validator: one proposes two different values in each round it
/// is chosen for, the other signs two different prevotes and precommits at each height in
/// play, one of each for a value id no honest validator computed (an aggregate of its own
/// making). The three honest validators (three quarters of stake) commit evidence of both,
/// slash both in every ledger, and go on; no block holds the invented value (every ledger
/// verifies from genesis, each certificate over the block it holds).
#[test]
fn an_equivocating_proposer_and_a_double_voter_are_slashed_and_commits_go_on() {
    let _serial = serial();
    let proposer = Keypair::from_seed([76; 32]);
    let voter = Keypair::from_seed([77; 32]);
    let [proposer_hex, voter_hex] = [&proposer, &voter].map(|k| hex(&k.address().0));
    let flags = [&proposer_hex, &voter_hex].map(|k| format!("{k}:50"));
    let mut genesis_args = FAST.to_vec();
    for f in &flags {
        genesis_args.extend(["--validator", f]);
    }
    let mut net = support::net("byzantine", 3, 3, &genesis_args);
    for i in 0..3 {
        net.start(i, &[]).unwrap();
    }
    net.wait_until("height 2", Duration::from_secs(120), |n| {
        (0..3).all(|i| n.height(i) >= 2)
    })
    .unwrap();
    let genesis = genesis_of(&net);
    let ctx = TabswarmContext::new(genesis.run_id());
    let attacker = Attacker::spawn(&genesis, |_| Response::NotFound);
    attacker.dial(support::direct_tcp(&net.status(0).unwrap()));
    wait_for("the node to subscribe to every topic", || {
        attacker.seen().subscriptions >= Topic::ALL.len() as u64
    });

    // Two proposals for each round-0 turn of the equivocating proposer.
    let set = ValidatorSet::new(genesis.validators.iter().copied(), genesis.run_id().0);
    let mut turns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while turns.len() < 2 && Instant::now() < deadline {
        let Some(status) = net.status(0) else {
            continue;
        };
        let h = Height(status["height"].as_u64().unwrap() + 1);
        let seed = unhex32(status["head_hash"].as_str().unwrap()).unwrap();
        let chosen = set
            .with_seed(seed)
            .proposer(h, Round::new(0))
            .unwrap()
            .address;
        if chosen == proposer.address() && !turns.contains(&h.0) {
            // Built on parameters no one holds: honest validators judge such a value at once
            // (invalid) rather than holding it until its aggregate is scored, so both
            // proposals reach consensus within the round.
            for result in [[1; 32], [2; 32]] {
                let value = Value::new(RoundProposal {
                    base_param_hash: [0; 32],
                    updates: Vec::new(),
                    aggregation_rule: genesis.aggregation_rule,
                    result_param_hash: result,
                });
                let signed = ctx.sign_proposal(
                    &proposer,
                    Proposal {
                        height: h,
                        round: Round::new(0),
                        value,
                        pol_round: Round::Nil,
                        proposer: proposer.address(),
                    },
                );
                let msg = Message::Proposal(SignedProposalMsg::from(signed));
                attacker.publish(Topic::of(&msg), msg.encode().unwrap());
            }
            turns.push(h.0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(turns.len(), 2, "the proposer was not chosen twice in 120 s");

    let invented = ValueId([0xEE; 32]);
    let vote = |height: u64, round: u32, vote_type, value| {
        let signed = ctx.sign_vote(
            &voter,
            Vote {
                height: Height(height),
                round: Round::new(round),
                vote_type,
                value,
                validator: voter.address(),
            },
        );
        Message::Vote(SignedVoteMsg::from(signed)).encode().unwrap()
    };
    let start = net.height(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut published = 0;
    while net.height(0) < start + 6 && Instant::now() < deadline {
        let h = net.height(0) + 1;
        // The rounds a height may reach in a few seconds: the votes must land while the
        // honest validators still count votes for that height and round.
        for round in 0..3 {
            for vote_type in [VoteType::Prevote, VoteType::Precommit] {
                attacker.publish(
                    Topic::Votes,
                    vote(h, round, vote_type, NilOrVal::Val(invented)),
                );
                attacker.publish(Topic::Votes, vote(h, round, vote_type, NilOrVal::Nil));
                published += 2;
            }
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let after = net.height(0);
    assert!(
        after >= start + 6,
        "six heights took more than 120 s under double votes: {start} -> {after}"
    );
    net.wait_until("commits after the attack", Duration::from_secs(60), |n| {
        (0..3).all(|i| n.height(i) >= after + 2)
    })
    .unwrap();
    let top = (0..3).map(|i| net.height(i)).min().unwrap();
    drop(attacker);
    net.stop_all().unwrap();
    let ledgers = support::assert_same_chain(&net, &[0, 1, 2], top);
    report(
        "byzantine_validators",
        json!({
            "byzantine_stake": "25% (two validators)",
            "double_proposal_heights": turns,
            "double_votes_published": published,
            "heights_under_attack": after - start,
            "evidence_committed": ledgers[0]["evidence_committed"],
            "honest_stakes_after": ledgers[0]["stakes"].as_object().map(|s| s.len()),
        }),
    );
    for (i, l) in ledgers.iter().enumerate() {
        let committed = l["evidence_committed"].as_array().unwrap();
        for (kind, offender) in [
            ("double_proposal", &proposer_hex),
            ("double_vote", &voter_hex),
        ] {
            assert!(
                committed
                    .iter()
                    .any(|e| e["kind"] == kind && e["offender"] == offender.as_str()),
                "node {i} committed no {kind} evidence against {offender}: {l}"
            );
            assert!(
                l["stakes"].get(offender.as_str()).is_none(),
                "node {i} still counts {offender}'s stake: {l}"
            );
        }
        assert_eq!(l["stakes"].as_object().unwrap().len(), 3, "node {i}: {l}");
    }
}

fn genesis_of(net: &Net) -> Genesis {
    Genesis::from_json(&std::fs::read_to_string(&net.genesis).unwrap()).unwrap()
}

fn total_credit(net: &Net) -> u64 {
    (0..3)
        .filter_map(|i| net.status(i))
        .map(|s| s["credit"].as_u64().unwrap_or(0))
        .sum()
}

/// Polls `cond` every 100 ms for at most 30 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after 30 s waiting for {what}");
}
