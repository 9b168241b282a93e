//! Decoders: every message kind round-trips; random bytes and oversize inputs never panic and
//! are refused with a reason.

use malachitebft_core_types::{NilOrVal, Round, VoteType};
use proptest::prelude::*;
use tabswarm_consensus::codec::{DecodeError, VERSION};
use tabswarm_consensus::context::{
    Height, IncludedUpdate, Proposal, RoundProposal, TabswarmContext, Value, ValueId, Vote,
};
use tabswarm_consensus::evidence::{Evidence, SignedVoteMsg};
use tabswarm_consensus::genesis::{AggregationRule, RunId};
use tabswarm_consensus::testkit::key;
use tabswarm_consensus::wire::{self, Message};

fn ctx() -> TabswarmContext {
    TabswarmContext::new(RunId([9; 32]))
}

fn round() -> impl Strategy<Value = Round> {
    prop_oneof![Just(Round::Nil), (0u32..1000).prop_map(Round::new)]
}

fn vote() -> impl Strategy<Value = Vote> {
    (
        any::<u64>(),
        0u32..1000,
        any::<bool>(),
        proptest::option::of(any::<[u8; 32]>()),
        0u32..8,
    )
        .prop_map(|(h, r, pre, v, k)| Vote {
            height: Height(h),
            round: Round::new(r),
            vote_type: if pre {
                VoteType::Prevote
            } else {
                VoteType::Precommit
            },
            value: v.map_or(NilOrVal::Nil, |b| NilOrVal::Val(ValueId(b))),
            validator: key(k).address(),
        })
}

fn value() -> impl Strategy<Value = Value> {
    (
        any::<[u8; 32]>(),
        proptest::collection::btree_set(any::<[u8; 32]>(), 0..20),
        any::<[u8; 32]>(),
    )
        .prop_map(|(base, ids, result)| {
            Value::new(RoundProposal {
                base_param_hash: base,
                updates: ids
                    .into_iter()
                    .map(|id| IncludedUpdate { id, trainer: id })
                    .collect(),
                aggregation_rule: AggregationRule::TrimmedMean { trim_per_mille: 50 },
                result_param_hash: result,
            })
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        vote().prop_map(|v| {
            let k = key(0);
            let v = Vote {
                validator: k.address(),
                ..v
            };
            Message::Vote(ctx().sign_vote(&k, v).into())
        }),
        (value(), any::<u64>(), 0u32..100, round()).prop_map(|(value, h, r, pol)| {
            let p = Proposal {
                height: Height(h),
                round: Round::new(r),
                value,
                pol_round: pol,
                proposer: key(1).address(),
            };
            Message::Proposal(ctx().sign_proposal(&key(1), p).into())
        }),
        vote().prop_map(|v| {
            let k = key(2);
            let a = Vote {
                validator: k.address(),
                ..v.clone()
            };
            let b = Vote {
                value: match a.value {
                    NilOrVal::Nil => NilOrVal::Val(ValueId([1; 32])),
                    NilOrVal::Val(_) => NilOrVal::Nil,
                },
                ..a.clone()
            };
            Message::Evidence(Evidence::double_vote(
                SignedVoteMsg::from(ctx().sign_vote(&k, a)),
                SignedVoteMsg::from(ctx().sign_vote(&k, b)),
            ))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/wire.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_kind_round_trips_and_verifies(msg in message()) {
        let bytes = msg.encode().expect("within limits");
        prop_assert_eq!(bytes[0], VERSION);
        prop_assert!(bytes.len() <= msg.limit());
        let back = Message::decode(&bytes).expect("decodes");
        prop_assert!(back.verify(&ctx()));
        prop_assert!(!back.verify(&TabswarmContext::new(RunId([8; 32]))), "cross-run must fail");
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes);
        let mut versioned = bytes.clone();
        versioned.insert(0, VERSION);
        let _ = Message::decode(&versioned);
    }

    #[test]
    fn mutated_messages_never_panic_and_never_verify_if_changed(
        msg in message(), at in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut bytes = msg.encode().expect("within limits");
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(m) = Message::decode(&bytes)
            && m != msg
        {
            prop_assert!(!m.verify(&ctx()), "a changed message must not verify");
        }
    }
}

#[test]
fn oversize_inputs_are_refused_before_parsing() {
    let huge = vec![VERSION; wire::MAX_MESSAGE + 1];
    assert!(matches!(
        Message::decode(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    // A vote padded past the vote limit is refused by the per-kind limit.
    let v = Message::Vote(
        ctx()
            .sign_vote(
                &key(0),
                Vote {
                    height: Height(1),
                    round: Round::new(0),
                    vote_type: VoteType::Prevote,
                    value: NilOrVal::Nil,
                    validator: key(0).address(),
                },
            )
            .into(),
    );
    let mut bytes = v.encode().expect("fits");
    bytes.resize(wire::VOTE_LIMIT + 1, 0);
    assert!(matches!(
        Message::decode(&bytes),
        Err(DecodeError::TooLarge { .. } | DecodeError::TrailingBytes(_))
    ));
    assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
    assert!(matches!(
        Message::decode(&[2, 0]),
        Err(DecodeError::UnknownVersion(2))
    ));
}

#[test]
fn unsorted_update_ids_are_not_canonical() {
    let mut v = Value::new(RoundProposal {
        base_param_hash: [0; 32],
        updates: vec![
            IncludedUpdate {
                id: [2; 32],
                trainer: [0; 32],
            },
            IncludedUpdate {
                id: [1; 32],
                trainer: [0; 32],
            },
        ],
        aggregation_rule: AggregationRule::Mean,
        result_param_hash: [0; 32],
    });
    let p = Proposal {
        height: Height(1),
        round: Round::new(0),
        value: v.clone(),
        pol_round: Round::Nil,
        proposer: key(1).address(),
    };
    let bytes = Message::Proposal(ctx().sign_proposal(&key(1), p).into())
        .encode()
        .expect("fits");
    assert!(matches!(
        Message::decode(&bytes),
        Err(DecodeError::NotCanonical(_))
    ));
    v.proposal.updates.reverse();
    assert!(v.check_canonical().is_ok());
}

#[test]
fn blocks_and_certificates_round_trip_and_verify() {
    use tabswarm_consensus::testkit::Cluster;
    use tabswarm_consensus::wire::{PolkaCert, RoundCert};

    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(1, 100_000).expect("no node error"));
    let run_ctx = TabswarmContext::new(c.nodes[0].ledger().genesis().run_id());
    let block = c.committed[0][0].clone();

    let id = ValueId([5; 32]);
    let prevote = |i: u32| {
        let v = Vote {
            height: Height(7),
            round: Round::new(2),
            vote_type: VoteType::Prevote,
            value: NilOrVal::Val(id),
            validator: key(i).address(),
        };
        (key(i).address(), run_ctx.sign_vote(&key(i), v).signature)
    };
    let polka = PolkaCert {
        height: Height(7),
        round: Round::new(2),
        value_id: id,
        signatures: (0..3).map(prevote).collect(),
    };
    let round_cert = RoundCert {
        height: Height(7),
        round: Round::new(2),
        cert_type: malachitebft_core_types::RoundCertificateType::Skip,
        signatures: (0..2)
            .map(|i| {
                let (a, s) = prevote(i);
                (VoteType::Prevote, NilOrVal::Val(id), a, s)
            })
            .collect(),
    };
    for msg in [
        Message::Block(Box::new(block)),
        Message::Polka(polka),
        Message::RoundCert(round_cert),
    ] {
        let bytes = msg.encode().expect("fits");
        let back = Message::decode(&bytes).expect("decodes");
        assert!(back.verify(&run_ctx), "{} verifies", back.kind());
        assert!(!back.verify(&ctx()), "{} is bound to its run", back.kind());
        assert_eq!(back, msg);
    }
}
