//! The peer's protocol rules and the simulator's fault schedules, on networks of real peers
//! (`tabswarm_sim::peers`, no sockets, virtual time): agreement and learning, restart from
//! records, catch-up against a lying peer, a pool flood under fresh keys, votes from
//! outside the validator set, roles; then loss, jitter, crashes, partitions and Byzantine
//! validators against the code that ships.

#![allow(clippy::unwrap_used)] // a panic is the failure report

use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::{AggregationRule, Compression, RunId};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{Event, Roles};
use tabswarm_sim::peers::{ALL, Attack, Fake, JobModel, PeerConfig, PeerReport, PeerSim, TRAINER};
use tabswarm_sim::{Behaviour, Crash, Partition};

/// Runs until `done` or `until` (virtual ms); whether `done`.
trait Run {
    fn run(&mut self, until: u64, done: impl FnMut(&PeerSim) -> bool) -> bool;
}

impl Run for PeerSim {
    fn run(&mut self, until: u64, done: impl FnMut(&PeerSim) -> bool) -> bool {
        self.run_until(until, done).unwrap()
    }
}

/// `members` slots, `stakes` staked, real jobs on the synthetic image set.
fn net(members: usize, stakes: &[u64]) -> PeerSim {
    let config = PeerConfig::new(1, members, stakes);
    let model = JobModel::real(&config.rules).unwrap();
    PeerSim::new(config, model).unwrap()
}

/// Validator 0's test accuracy of the initial parameters (height 0).
fn untrained_accuracy(net: &PeerSim) -> f32 {
    net.events(0)
        .iter()
        .find_map(|e| match e {
            Event::Tested {
                height: 0,
                accuracy,
                ..
            } => Some(*accuracy),
            _ => None,
        })
        .unwrap()
}

fn same_params(net: &PeerSim, members: &[usize]) -> bool {
    let first = net.peer(members[0]).app().param_hash();
    members
        .iter()
        .all(|&i| net.peer(i).app().param_hash() == first)
}

#[test]
fn four_validators_commit_learn_and_agree() {
    let mut net = net(4, &[100, 100, 100, 100]);
    for i in 0..4 {
        net.start(i, ALL).unwrap();
    }
    assert!(net.run(60_000, |n| (0..4).all(|i| n.height(i) >= 6)));
    let top = (0..4).map(|i| net.height(i)).min().unwrap();
    assert!(net.run(net.now() + 20_000, |n| {
        (0..4).all(|i| n.peer(i).app().height() >= top)
    }));
    // Same chain, same parameters everywhere.
    let head = net.peer(0).ledger().blocks()[top as usize - 1].hash();
    for i in 1..4 {
        assert_eq!(net.peer(i).ledger().blocks()[top as usize - 1].hash(), head);
    }
    assert!(same_params(&net, &[0, 1, 2, 3]));
    // Learning: test accuracy after the blocks beats the untrained model's.
    let first = untrained_accuracy(&net);
    let last = net.accuracy(0).unwrap();
    assert!(last > first + 0.2, "accuracy {first} -> {last}");
    // Every block's updates have the run's weight, whatever trainers claim.
    for b in net.peer(0).ledger().blocks() {
        assert!(!b.value.proposal.updates.is_empty());
    }
}

#[test]
fn a_restarted_peer_resumes_from_its_records_and_catches_up() {
    let mut net = net(4, &[100, 100, 100, 100]);
    for i in 0..4 {
        net.start(i, ALL).unwrap();
    }
    assert!(net.run(60_000, |n| n.height(3) >= 3));
    net.crash(3);
    let at_crash = net.disk(3).height();
    assert!(at_crash >= 3);
    // The others keep committing without it (3 of 4 equal stakes is more than 2/3).
    assert!(net.run(net.now() + 60_000, |n| n.height(0) >= at_crash + 4));
    net.start(3, ALL).unwrap();
    assert_eq!(net.height(3), at_crash, "restored from its own records");
    let target = net.height(0) + 2;
    assert!(net.run(net.now() + 60_000, |n| n.height(3) >= target
        && !n.peer(3).syncing()));
    assert!(net.run(net.now() + 20_000, |n| {
        n.peer(3).app().height() == n.peer(3).ledger().height().0
            && n.peer(0).app().height() == n.peer(3).app().height()
    }));
    assert!(same_params(&net, &[0, 3]));
}

/// A peer that claims a chain, and a checkpoint, a million blocks ahead and delivers neither.
fn far_fetched_liar() -> Fake {
    Box::new(|req| {
        Some(match req {
            Request::Status => Response::Status { height: 1_000_000 },
            Request::Checkpoint => Response::Checkpoint {
                height: 1_000_000,
                address: [0xee; 32],
            },
            _ => Response::NotFound,
        })
    })
}

#[test]
fn a_lying_peer_cannot_keep_a_joiner_syncing() {
    let mut net = net(6, &[100, 100, 100, 100]);
    for i in 0..4 {
        net.start(i, ALL).unwrap();
    }
    assert!(net.run(60_000, |n| n.height(0) >= 4));
    // Slot 4 claims a chain a million blocks long and never delivers it.
    net.fake(4, far_fetched_liar());
    // The joiner meets the liar first, so the liar's claim is the best it knows...
    net.start_linked(5, TRAINER, &[4]).unwrap();
    net.run(net.now() + 1_000, |_| false);
    assert!(net.peer(5).syncing());
    // ... then the honest peers.
    for j in 0..4 {
        net.link(5, j);
    }
    let target = net.height(0) + 2;
    assert!(
        net.run(net.now() + 120_000, |n| n.height(5) >= target
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
    let mut net = net(5, &[100, 100, 100, 100]);
    for i in 0..4 {
        net.start(i, ALL).unwrap();
    }
    // Slot 4 announces hundreds of updates under fresh keys and serves none of them.
    net.fake(4, Box::new(|_| Some(Response::NotFound)));
    assert!(net.run(60_000, |n| n.height(0) >= 2));
    let run = net.genesis().run_id();
    let weight = tabswarm_peer::jobs::update_weight(&net.genesis().training);
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
            net.run(net.now() + 30_000, |n| n.height(0) > h),
            "stalled at {h}"
        );
    }
    // Every block still includes honest trainers' updates, and only theirs.
    let honest: Vec<[u8; 32]> = (0..4).map(|i| net.key(i).address().0).collect();
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
    let before = net.verdicts(0).len();
    let h = net.height(0);
    let base = net.peer(0).app().param_hash();
    net.inject(
        4,
        0,
        Topic::Updates,
        junk_update(99_999, h + 1, base, &run, weight * 100),
    );
    net.run(net.now() + 50, |n| n.verdicts(0).len() > before);
    assert_eq!(net.verdicts(0)[before], Verdict::Reject);
}

#[test]
fn a_vote_signed_outside_the_validator_set_is_rejected_by_the_peer() {
    use malachitebft_core_types::{NilOrVal, Round, VoteType};
    use tabswarm_consensus::context::{Height, TabswarmContext, Vote};
    use tabswarm_consensus::wire::Message;
    let mut net = net(4, &[100, 100, 100]);
    for i in 0..3 {
        net.start(i, ALL).unwrap();
    }
    assert!(net.run(60_000, |n| n.height(0) >= 1));
    let ctx = TabswarmContext::new(net.genesis().run_id());
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
    let before = net.verdicts(0).len();
    net.inject(
        3,
        0,
        Topic::Votes,
        Message::Vote(vote.into()).encode().unwrap(),
    );
    net.run(net.now() + 20, |n| n.verdicts(0).len() > before);
    assert_eq!(net.verdicts(0)[before], Verdict::Reject);
    assert!(net.peer(0).snapshot().rejected.bad_signature >= 1);
}

#[test]
fn a_staked_peer_without_the_validator_role_never_votes() {
    let mut net = net(4, &[100, 100, 100, 100]);
    for i in 0..3 {
        net.start(i, ALL).unwrap();
    }
    net.start(
        3,
        Roles {
            train: true,
            validate: false,
            store: false,
            max_train_shards: 0,
        },
    )
    .unwrap();
    assert!(net.run(60_000, |n| (0..4).all(|i| n.height(i) >= 3)));
    assert_eq!(net.published(3, Topic::Votes), 0, "it voted");
    assert_eq!(net.published(3, Topic::Proposals), 0, "it proposed");
    assert!(net.published(3, Topic::Updates) > 0, "it trains");
}

#[test]
fn a_paused_trainer_announces_and_computes_nothing_new_until_it_resumes() {
    let mut net = net(5, &[100, 100, 100, 100]);
    for i in 0..4 {
        net.start(i, ALL).unwrap();
    }
    net.start(4, TRAINER).unwrap();
    assert!(net.run(60_000, |n| n.published(4, Topic::Updates) >= 2));
    net.set_training(4, false).unwrap();
    // A job already running may still finish and be announced: let one height pass first.
    let h = net.height(0);
    assert!(net.run(net.now() + 30_000, |n| n.height(0) > h));
    let paused_at = net.published(4, Topic::Updates);
    let tested = |n: &PeerSim| {
        n.events(4)
            .iter()
            .filter(|e| matches!(e, Event::Tested { .. }))
            .count()
    };
    let tested_at = tested(&net);
    let h = net.height(0);
    assert!(net.run(net.now() + 60_000, |n| n.height(0) >= h + 3));
    assert_eq!(
        net.published(4, Topic::Updates),
        paused_at,
        "a paused trainer announced updates"
    );
    assert_eq!(
        tested(&net),
        tested_at,
        "a paused trainer still ran test jobs"
    );
    assert!(
        net.height(4) >= h + 2,
        "a paused trainer still follows the chain"
    );
    net.set_training(4, true).unwrap();
    assert!(
        net.run(net.now() + 60_000, |n| n.published(4, Topic::Updates)
            > paused_at),
        "training did not resume"
    );
}

#[test]
fn a_trainer_slower_than_the_chain_holds_one_job_at_a_time() {
    let mut net = quadratic(2, 1, |config| {
        config.workers = 16; // a machine that would run whatever it is asked, all at once
        // Member 4's jobs take 40 times as long: its training spans several heights.
        config.slowdown.insert(4, 40);
    });
    net.run(60_000, |_| false);
    assert!(
        net.height(0) >= 20 && net.height(4) + 2 >= net.height(0),
        "the chain stalled or the slow trainer fell behind: heights {} and {}",
        net.height(0),
        net.height(4)
    );
    // One training job, one test evaluation and one score of the base at most; not a
    // training job per height it fell behind.
    assert!(
        net.peak_jobs(4) <= 3,
        "{} jobs waiting at once on a slow trainer",
        net.peak_jobs(4)
    );
}

// ---- Fault schedules on real peers -------------------------------------------------------

/// Four equal validators and `trainers` trainers on the quadratic cost model.
fn quadratic(seed: u64, trainers: usize, tweak: impl FnOnce(&mut PeerConfig)) -> PeerSim {
    let mut config = PeerConfig::new(seed, 4 + trainers, &[100, 100, 100, 100]);
    tweak(&mut config);
    let model = JobModel::quadratic(&config.rules, seed).unwrap();
    let mut sim = PeerSim::new(config, model).unwrap();
    for i in 0..4 {
        sim.start(i, ALL).unwrap();
    }
    for i in 4..4 + trainers {
        sim.start(i, TRAINER).unwrap();
    }
    sim
}

fn assert_safe(r: &PeerReport) {
    assert_eq!(r.agreement_violations, 0, "two blocks at one height: {r:?}");
    assert_eq!(
        r.param_divergences, 0,
        "two parameter sets at one height: {r:?}"
    );
    assert_eq!(
        r.honest_double_signs, 0,
        "an honest validator signed twice: {r:?}"
    );
}

#[test]
fn same_config_same_trace_and_another_seed_another_trace() {
    let run = |seed| {
        let mut sim = quadratic(seed, 2, |c| {
            c.loss_per_mille = 50;
            c.jitter_ms = 15;
        });
        sim.run_for(15_000).unwrap()
    };
    let (a, b, c) = (run(3), run(3), run(4));
    assert_eq!(a, b, "a config fixes the whole run");
    assert!(a.min_honest_height >= 3, "{a:?}");
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn many_trainers_on_the_cost_model_commit_and_learn() {
    let mut sim = quadratic(5, 8, |_| {});
    let r = sim.run_for(20_000).unwrap();
    assert_safe(&r);
    assert!(r.min_honest_height >= 10, "{:?}", r.heights);
    let first = sim
        .events(0)
        .iter()
        .find_map(|e| match e {
            Event::Tested {
                height: 0, loss, ..
            } => Some(*loss),
            _ => None,
        })
        .unwrap();
    let last = sim
        .events(0)
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Tested { loss, .. } => Some(*loss),
            _ => None,
        })
        .unwrap();
    assert!(last < first * 0.5, "validation loss {first} -> {last}");
    // Trainers' updates made it into blocks, not only the validators' own.
    let trainers: Vec<[u8; 32]> = (4..12).map(|i| sim.key(i).address().0).collect();
    let included = sim
        .peer(0)
        .ledger()
        .blocks()
        .iter()
        .flat_map(|b| &b.value.proposal.updates);
    assert!(included.filter(|u| trainers.contains(&u.trainer)).count() >= 8);
}

#[test]
fn loss_jitter_and_crashes_with_restarts_keep_real_peers_safe_and_live() {
    let mut sim = quadratic(7, 2, |c| {
        c.loss_per_mille = 50;
        c.jitter_ms = 30;
        c.crashes = vec![
            Crash {
                node: 1,
                at_ms: 4_000,
                restart_ms: Some(9_000),
                torn: false,
            },
            Crash {
                node: 2,
                at_ms: 14_000,
                restart_ms: Some(16_000),
                torn: false,
            },
            Crash {
                node: 5,
                at_ms: 6_000,
                restart_ms: Some(20_000),
                torn: false,
            },
        ];
    });
    let r = sim.run_for(30_000).unwrap();
    assert_safe(&r);
    assert!(r.min_honest_height >= 10, "{:?}", r.heights);
    // The restarted ones caught up with the rest.
    let top = r.heights.iter().max().copied().unwrap();
    assert!(r.heights.iter().all(|&h| h + 3 >= top), "{:?}", r.heights);
}

#[test]
fn a_partition_without_two_thirds_halts_and_commits_resume_after_it_heals() {
    let mut sim = quadratic(9, 2, |c| {
        c.partitions = vec![Partition {
            from_ms: 5_000,
            until_ms: 15_000,
            groups: vec![vec![0, 1, 4], vec![2, 3, 5]],
        }];
    });
    let before = sim.run_for(5_500).unwrap();
    let during = sim.run_for(9_000).unwrap();
    assert!(before.min_honest_height >= 2, "{:?}", before.heights);
    let top = |r: &PeerReport| r.heights.iter().max().copied().unwrap();
    assert!(
        top(&during) <= top(&before) + 1,
        "no side holds more than 2/3: {:?} -> {:?}",
        before.heights,
        during.heights
    );
    let after = sim.run_for(15_000).unwrap();
    assert_safe(&after);
    assert!(
        after.min_honest_height >= top(&during) + 3,
        "commits resume: {:?} -> {:?}",
        during.heights,
        after.heights
    );
}

/// When trainer 5 is cut off from everyone (virtual ms) in [`cut_off_trainer`].
const CUT: (u64, u64) = (5_000, 25_000);

/// Four validators and two trainers on the quadratic model; trainer 5 hears nothing during
/// [`CUT`] while the chain goes on (~60 heights).
fn cut_off_trainer() -> PeerSim {
    quadratic(5, 2, |c| {
        c.partitions = vec![Partition {
            from_ms: CUT.0,
            until_ms: CUT.1,
            groups: vec![vec![0, 1, 2, 3, 4]],
        }];
    })
}

/// Runs `net` to the heal, then asserts trainer 5 is back on current parameters (those of
/// validator `honest`'s height, or one below) within 3 s.
fn back_on_current_parameters(net: &mut PeerSim, honest: usize) {
    net.run(CUT.1, |_| false);
    let cut_at = net.peer(5).app().height();
    assert!(
        net.height(honest) >= cut_at + 20,
        "the chain went on during the cut: {} vs {cut_at}",
        net.height(honest)
    );
    let current = |n: &PeerSim| {
        let p = n.peer(5).app();
        p.height() > cut_at + 20 && p.height() == n.height(5) && p.height() + 1 >= n.height(honest)
    };
    assert!(
        net.run(CUT.1 + 3_000, current),
        "3 s after the heal: chain {}, the trainer's ledger {} and parameters {}",
        net.height(honest),
        net.height(5),
        net.peer(5).app().height()
    );
}

#[test]
fn a_trainer_cut_off_for_a_while_is_back_on_current_parameters_soon_after_the_heal() {
    // Its ledger follows again at once; its parameters need a checkpoint, and the chain
    // commits a height every ~330 ms, faster than a checkpoint answer comes back. Before the
    // fix it took only a checkpoint of exactly its ledger's height and kept stale parameters
    // (and trained on nothing) for over 8 s after the heal, in one run for good.
    let mut net = cut_off_trainer();
    back_on_current_parameters(&mut net, 0);
    let me = net.key(5).address().0;
    let credit = |n: &PeerSim| n.peer(0).ledger().credits().get(&me).copied().unwrap_or(0);
    let before = credit(&net);
    assert!(
        net.run(net.now() + 10_000, |n| credit(n) > before),
        "the trainer's updates get into blocks again"
    );
}

#[test]
fn a_far_fetched_checkpoint_offer_does_not_keep_a_trainer_on_stale_parameters() {
    // As above, but member 0 (one of four validators: the rest hold 3/4 of stake) is a liar
    // among the first peers the trainer asks for a checkpoint: it claims one a million
    // heights ahead and never serves it. A nearer honest offer must win over its claim.
    let mut net = cut_off_trainer();
    net.fake(0, far_fetched_liar());
    back_on_current_parameters(&mut net, 1);
}

#[test]
fn an_equivocating_validator_among_real_peers_is_slashed_and_the_rest_go_on() {
    let mut sim = quadratic(11, 1, |c| {
        c.behaviours = vec![Behaviour::Equivocate];
    });
    let addr0 = sim.key(0).address();
    assert!(sim.run(60_000, |s| {
        !s.peer(1).ledger().stakes().contains_key(&addr0)
    }));
    let r = sim.run_for(10_000).unwrap();
    assert_safe(&r);
    let chain = sim.peer(1).ledger().blocks();
    let with_evidence = chain
        .iter()
        .position(|b| !b.value.evidence.is_empty())
        .expect("evidence was committed");
    assert!(chain.len() > with_evidence + 2, "the chain went on");
}

#[test]
fn forged_and_replayed_consensus_messages_are_rejected_by_real_peers() {
    let mut sim = quadratic(13, 1, |c| {
        c.behaviours = vec![Behaviour::Forge, Behaviour::Replay];
    });
    let r = sim.run_for(20_000).unwrap();
    assert_safe(&r);
    assert!(r.min_honest_height >= 5, "{:?}", r.heights);
    let rejected = sim
        .verdicts(2)
        .iter()
        .filter(|v| **v == Verdict::Reject)
        .count();
    assert!(
        rejected > 0,
        "forgeries reached the honest peer and were rejected"
    );
}

/// Four validators and a trainer whose jobs take `slowdown` times theirs, under a proposer
/// deadline of `deadline_ms`, for a virtual minute: (heights, the trainer's credit).
fn slow_trainer(slowdown: u64, deadline_ms: u64) -> (u64, u64) {
    let mut net = quadratic(3, 1, |config| {
        config.slowdown.insert(4, slowdown);
        config.rules.round_deadline_ms = deadline_ms;
    });
    net.run(60_000, |_| false);
    let me = net.key(4).address().0;
    let credit = net
        .peer(0)
        .ledger()
        .credits()
        .get(&me)
        .copied()
        .unwrap_or(0);
    (net.height(0), credit)
}

#[test]
fn a_trainer_slower_than_the_chain_but_within_the_deadline_gets_in() {
    // Its jobs take 600 ms; the validators' heights about 330 ms. It finishes every job a
    // height late, says so, and proposers wait for it: without that, it never got in.
    let (heights, credit) = slow_trainer(30, 1_500);
    assert!(
        heights >= 30 && credit * 4 >= heights * 3,
        "the slow trainer is in {credit} of {heights} blocks"
    );
    // Slower than the deadline: not waited for (it would hold every height for nothing).
    let (fast_heights, credit) = slow_trainer(30, 400);
    let (normal, _) = slow_trainer(1, 400);
    assert_eq!(credit, 0);
    assert!(
        fast_heights * 10 >= normal * 9,
        "a trainer that cannot make the deadline slowed the chain: {fast_heights} heights, {normal} with a trainer of normal speed"
    );
}

/// The quadratic model's accuracy at validator 0 after [`ATTACK_RUN_MS`] with six trainers
/// beside the four validators (who train too), the first `hostile` of them running `attack`,
/// under `rule`; and how many of the hostile trainers' updates went into blocks.
#[test]
fn compressed_updates_train_the_model_and_every_validator_applies_the_same_parameters() {
    let dense_len = |net: &PeerSim| 4 * net.peer(0).app().params().len() as u32;
    for compression in [Compression::Int8, Compression::TopK { per_mille: 100 }] {
        let mut config = PeerConfig::new(1, 4, &[100, 100, 100, 100]);
        config.compression = compression;
        let model = JobModel::real(&config.rules).unwrap();
        let mut net = PeerSim::new(config, model).unwrap();
        for i in 0..4 {
            net.start(i, ALL).unwrap();
        }
        // A payload in flight: its length is what crossed the network.
        let mut payload_len = None;
        assert!(net.run(60_000, |n| {
            payload_len = payload_len.or_else(|| {
                n.peer(0)
                    .app()
                    .pool()
                    .iter()
                    .find(|(_, e)| e.delta.is_some())
                    .map(|(_, e)| e.update.header.payload_len)
            });
            (0..4).all(|i| n.height(i) >= 8)
        }));
        let top = (0..4).map(|i| net.height(i)).min().unwrap();
        assert!(net.run(net.now() + 20_000, |n| {
            (0..4).all(|i| n.peer(i).app().height() >= top)
        }));
        assert!(same_params(&net, &[0, 1, 2, 3]), "{compression:?}");
        let first = untrained_accuracy(&net);
        let last = net.accuracy(0).unwrap();
        assert!(
            last > first + 0.2,
            "{compression:?}: accuracy {first} -> {last}"
        );
        let sent = payload_len.expect("a payload seen in the pool");
        let ratio = f64::from(dense_len(&net)) / f64::from(sent);
        eprintln!("{compression:?}: payload {sent} bytes, {ratio:.1}x fewer than f32");
        assert!(
            ratio > 3.5,
            "{compression:?}: {sent} bytes, only {ratio:.1}x"
        );
    }
}

fn accuracy_under_attack(rule: AggregationRule, hostile: usize, attack: Attack) -> (f32, u64) {
    let mut net = quadratic(11, 6, |config| {
        config.aggregation_rule = rule;
        for t in 0..hostile {
            config.attacks.insert(4 + t, attack);
        }
    });
    net.run(ATTACK_RUN_MS, |_| false);
    assert_safe(&net.report());
    let height = net.height(0);
    assert!(height >= 10, "{rule:?}: only {height} heights");
    let accuracy = net.accuracy(0).expect("validator 0 tested a height");
    let credits = net.peer(0).ledger().credits().clone();
    let included: u64 = (4..4 + hostile)
        .filter_map(|t| credits.get(&net.key(t).address().0))
        .sum();
    eprintln!(
        "{rule:?}, {hostile} x {attack:?}: accuracy {accuracy:.4} at height {height}, \
         {included} hostile updates in blocks"
    );
    (accuracy, included)
}

/// Virtual time of each attack run.
const ATTACK_RUN_MS: u64 = 8_000;

#[test]
fn a_robust_rule_keeps_a_fifth_of_sign_flipping_trainers_from_stalling_the_model() {
    // 2 of 10 trainers send -3.6 times their honest delta: under the mean their 2 x 3.6
    // cancels 7.2 of the 8 honest updates, and the aggregate still lowers the loss a little,
    // so it passes the harm budget and nobody is dropped.
    let flip = Attack::SignFlip { scale: 3.6 };
    let (clean, _) = accuracy_under_attack(AggregationRule::Mean, 0, flip);
    let (mean, _) = accuracy_under_attack(AggregationRule::Mean, 2, flip);
    for rule in [
        AggregationRule::Median,
        AggregationRule::TrimmedMean {
            trim_per_mille: 250,
        },
        AggregationRule::CenteredClip { iterations: 3 },
    ] {
        let (robust, _) = accuracy_under_attack(rule, 2, flip);
        assert!(
            robust >= clean - 0.01,
            "{rule:?}: {robust:.3} against {clean:.3} without attackers"
        );
    }
    assert!(
        mean < clean - 0.10,
        "the mean (the control) held {mean:.3} against {clean:.3}: the attack did nothing"
    );
}

#[test]
fn scaled_and_noise_updates_fail_the_harm_line_and_never_reach_a_block() {
    // A fifth of trainers sending x100 their delta or pure noise: each such update raises the
    // validation loss past the per-update line, so validators refuse it under any rule, the
    // mean included, and the model trains as if they were not there.
    let rule = AggregationRule::CenteredClip { iterations: 3 };
    let (clean, _) = accuracy_under_attack(rule, 0, Attack::Scale { factor: 1.0 });
    for attack in [
        Attack::Scale { factor: 100.0 },
        Attack::Noise { sigma: 1.0 },
    ] {
        for rule in [rule, AggregationRule::Mean] {
            let (under, included) = accuracy_under_attack(rule, 2, attack);
            assert_eq!(
                included, 0,
                "{rule:?}, {attack:?}: hostile updates were committed"
            );
            assert!(
                under >= clean - 0.01,
                "{rule:?}, {attack:?}: {under:.3} against {clean:.3} without attackers"
            );
        }
    }
}
