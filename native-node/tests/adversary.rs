//! A peer that sends malformed, oversized, forged, cross-run and replayed messages straight
//! into a running network: every one is refused, the sender loses gossip score, and the honest
//! validators keep committing.

#![allow(clippy::unwrap_used)] // a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use malachitebft_core_types::{NilOrVal, Round, VoteType};
use support::{FAST, serial};
use tabswarm_consensus::context::{Height, Vote};
use tabswarm_consensus::evidence::SignedVoteMsg;
use tabswarm_consensus::genesis::{Genesis, RunId, hex};
use tabswarm_consensus::identity::{Address, Keypair, Signature};
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_consensus::wire::Message;

fn topic(run: &RunId, kind: &str) -> IdentTopic {
    IdentTopic::new(format!("/tabswarm/{}/{kind}/1", hex(&run.0[..8])))
}

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
    let target: Multiaddr = status["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| a.contains("/tcp/") && !a.contains("/ws") && !a.contains("p2p-circuit"))
        .unwrap()
        .parse()
        .unwrap();
    let target_peer: PeerId = status["peer_id"].as_str().unwrap().parse().unwrap();
    let victim = Address(hex_to_32(status["address"].as_str().unwrap()));
    let genesis = Genesis::from_json(&std::fs::read_to_string(&net.genesis).unwrap()).unwrap();
    let run = genesis.run_id();
    let height_before = net.height(0);

    let attacker_key = libp2p::identity::Keypair::generate_ed25519();
    let attacker = attacker_key.public().to_peer_id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(attacker_key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(1 << 20)
                    .build()
                    .unwrap();
                gossipsub::Behaviour::<
                    gossipsub::IdentityTransform,
                    gossipsub::AllowAllSubscriptionFilter,
                >::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
                .unwrap()
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (updates, votes) = (topic(&run, "updates"), topic(&run, "votes"));
        swarm.behaviour_mut().subscribe(&updates).unwrap();
        swarm.behaviour_mut().subscribe(&votes).unwrap();
        swarm.dial(target).unwrap();
        // Wait until the node is subscribed to both topics from our side's view.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, swarm.select_next_some())
                .await
                .expect("node subscribed in time");
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, topic }) = event
                && peer_id == target_peer
                && (topic == updates.hash() || topic == votes.hash())
            {
                seen += 1;
            }
        }
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
        let messages: Vec<(&IdentTopic, Vec<u8>)> = vec![
            // Malformed: not a message at all.
            (&votes, b"definitely not a vote".to_vec()),
            // Oversized for its kind (an announcement is at most 512 bytes).
            (&updates, vec![1u8; 100_000]),
            // Forged: claims the victim trained it, signed by someone else.
            (
                &updates,
                SignedUpdate::sign(header(victim, height_before + 1), &me, &run)
                    .encode()
                    .unwrap(),
            ),
            // Cross-run replay: properly signed, but for another run.
            (
                &updates,
                SignedUpdate::sign(
                    header(me.address(), height_before + 1),
                    &me,
                    &RunId([9; 32]),
                )
                .encode()
                .unwrap(),
            ),
            // Forged consensus vote in the victim's name.
            (&votes, forged_vote.encode().unwrap()),
            // Replay from the past: authentic, but for a height long decided.
            (
                &updates,
                SignedUpdate::sign(header(me.address(), 1), &me, &run)
                    .encode()
                    .unwrap(),
            ),
        ];
        for (t, data) in messages {
            swarm.behaviour_mut().publish(t.clone(), data).unwrap();
        }
        // Keep our side polled (the connection alive) while the node judges and scores us.
        let end = Instant::now() + Duration::from_secs(30);
        let mut last = serde_json::Value::Null;
        while Instant::now() < end {
            let _ =
                tokio::time::timeout(Duration::from_millis(250), swarm.select_next_some()).await;
            let Some(s) = net.status(0) else { continue };
            let r = &s["rejected"];
            let penalised = s["penalised_peers"].as_array().unwrap().iter().any(|p| {
                p[0].as_str() == Some(&attacker.to_string()) && p[1].as_f64().unwrap() < 0.0
            });
            let done = r["malformed"].as_u64().unwrap() >= 2
                && r["bad_signature"].as_u64().unwrap() >= 3
                && r["wrong_run_or_stale"].as_u64().unwrap() >= 1
                && penalised;
            last = s;
            if done {
                return;
            }
        }
        panic!("not every bad message was refused and penalised; last status: {last}");
    });
    net.wait_until("honest commits to continue", Duration::from_secs(60), |n| {
        (0..3).all(|i| n.height(i) >= height_before + 3)
    })
    .unwrap();
    net.stop_all().unwrap();
}

fn hex_to_32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}
