//! Byte encoding of persisted records: every WAL'd input and record kind round-trips, a node
//! restarted from records that went through bytes behaves as one restarted from memory, and
//! random or oversize bytes never panic.

use std::time::Duration;

use malachitebft_core_consensus::{Input, LocallyProposedValue, ProposedValue};
use malachitebft_core_types::{
    NilOrVal, PolkaCertificate, Round, RoundCertificateType, Timeout, TimeoutKind, Validity,
    ValueOrigin, VoteExtensionPolicy, VoteType,
};
use proptest::prelude::*;
use tabswarm_consensus::codec::{DecodeError, EncodeError, VERSION};
use tabswarm_consensus::context::{
    Height, IncludedUpdate, Proposal, ProposalHeader, RoundProposal, TabswarmContext, Value,
    ValueId, Vote,
};
use tabswarm_consensus::genesis::{AggregationRule, RunId};
use tabswarm_consensus::node::{Node, Output, Persisted, Record, WalEntry};
use tabswarm_consensus::signer::{SignerState, Step};
use tabswarm_consensus::testkit::{Cluster, HonestApp, genesis, key};
use tabswarm_consensus::wal::{self, MAX_RECORD, decode_wal_entry, encode_wal_entry};
use tabswarm_consensus::wire::{Message, PolkaCert};

fn ctx() -> TabswarmContext {
    TabswarmContext::new(RunId([9; 32]))
}

fn vote(h: u64, r: u32, t: VoteType, v: Option<u8>, signer: u32) -> Vote {
    Vote {
        height: Height(h),
        round: Round::new(r),
        vote_type: t,
        value: v.map_or(NilOrVal::Nil, |b| NilOrVal::Val(ValueId([b; 32]))),
        validator: key(signer).address(),
    }
}

fn value(n: u8) -> Value {
    Value::new(RoundProposal {
        base_param_hash: [1; 32],
        updates: (0..n)
            .map(|i| IncludedUpdate {
                id: [i; 32],
                trainer: [i / 2; 32],
            })
            .collect(),
        aggregation_rule: AggregationRule::TrimmedMean { trim_per_mille: 50 },
        result_param_hash: [2; 32],
    })
}

fn proposal(h: u64, r: u32, pol: Round) -> Proposal {
    Proposal {
        height: Height(h),
        round: Round::new(r),
        value: value(3),
        pol_round: pol,
        proposer: key(1).address(),
    }
}

/// One WAL entry of every kind Malachite appends, with every sub-case of its fields.
fn wal_entries() -> Vec<WalEntry> {
    let mut out = vec![
        Input::Vote(ctx().sign_vote(&key(0), vote(3, 0, VoteType::Prevote, Some(7), 0))),
        Input::Vote(ctx().sign_vote(&key(2), vote(3, 1, VoteType::Precommit, None, 2))),
        Input::Proposal(ctx().sign_proposal(&key(1), proposal(3, 0, Round::Nil))),
        Input::Proposal(ctx().sign_proposal(&key(1), proposal(3, 4, Round::new(2)))),
    ];
    for validity in [Validity::Valid, Validity::Invalid] {
        for origin in [ValueOrigin::Consensus, ValueOrigin::Sync] {
            out.push(Input::ProposedValue(
                ProposedValue {
                    height: Height(3),
                    round: Round::new(1),
                    valid_round: Round::Nil,
                    proposer: key(1).address(),
                    value: value(5),
                    validity,
                },
                origin,
            ));
        }
    }
    let id = ValueId([5; 32]);
    let polka = PolkaCert {
        height: Height(3),
        round: Round::new(2),
        value_id: id,
        signatures: (0..3)
            .map(|i| {
                let s = ctx().sign_vote(&key(i), vote(3, 2, VoteType::Prevote, Some(5), i));
                (key(i).address(), s.signature)
            })
            .collect(),
    };
    out.push(Input::PolkaCertificate(PolkaCertificate::from(polka)));
    for kind in [
        TimeoutKind::Propose,
        TimeoutKind::Prevote,
        TimeoutKind::Precommit,
        TimeoutKind::Rebroadcast,
        TimeoutKind::FinalizeHeight(Duration::new(3, 250_000_000)),
    ] {
        out.push(Input::TimeoutElapsed(Timeout::new(Round::new(6), kind)));
    }
    out
}

fn signer_state() -> SignerState {
    SignerState {
        last: Some((Height(3), Round::new(1), Step::Precommit)),
        locked: Some((Round::new(1), ValueId([7; 32]))),
        votes: vec![
            vote(3, 0, VoteType::Prevote, Some(7), 0),
            vote(3, 1, VoteType::Precommit, Some(7), 0),
        ],
        proposals: vec![ProposalHeader {
            height: Height(3),
            round: Round::new(0),
            value_id: ValueId([7; 32]),
            pol_round: Round::Nil,
            proposer: key(0).address(),
        }],
    }
}

/// `Record` is not `PartialEq`; compare what each variant holds.
fn same(a: &Record, b: &Record) -> bool {
    match (a, b) {
        (Record::Wal(x), Record::Wal(y)) => x == y,
        (Record::Signer(x), Record::Signer(y)) => x == y,
        (Record::Block(x), Record::Block(y)) => x == y,
        _ => false,
    }
}

fn round_trip(r: &Record) -> Record {
    let bytes = r.encode().expect("encodes");
    assert_eq!(bytes[0], VERSION);
    let back = Record::decode(&bytes).expect("decodes");
    assert_eq!(back.encode().expect("re-encodes"), bytes, "one encoding");
    back
}

#[test]
fn every_variant_round_trips() {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(2, 100_000).expect("no node error"));
    let mut records: Vec<Record> = wal_entries()
        .into_iter()
        .map(|e| Record::Wal(Box::new(e)))
        .collect();
    records.push(Record::Signer(SignerState::default()));
    records.push(Record::Signer(signer_state()));
    for b in &c.committed[0] {
        records.push(Record::Block(Box::new(b.clone())));
    }
    for r in &records {
        let back = round_trip(r);
        assert!(same(r, &back), "{r:?} came back as {back:?}");
    }
    for e in wal_entries() {
        let bytes = encode_wal_entry(&e).expect("encodes");
        assert_eq!(
            bytes,
            Record::Wal(Box::new(e.clone())).encode().expect("encodes")
        );
        assert_eq!(decode_wal_entry(&bytes).expect("decodes"), e);
    }
    let signer = Record::Signer(signer_state()).encode().expect("encodes");
    assert!(matches!(
        decode_wal_entry(&signer),
        Err(DecodeError::WrongKind(_))
    ));
}

#[test]
fn inputs_malachite_never_logs_are_refused_not_encoded() {
    let set = c_set();
    let refused: Vec<WalEntry> = vec![
        Input::StartHeight(Height(1), set, false, None, VoteExtensionPolicy::Disabled),
        Input::Propose(LocallyProposedValue::new(
            Height(1),
            Round::new(0),
            value(1),
        )),
        Input::RoundCertificate(
            tabswarm_consensus::wire::RoundCert {
                height: Height(1),
                round: Round::new(0),
                cert_type: RoundCertificateType::Skip,
                signatures: Vec::new(),
            }
            .into(),
        ),
    ];
    for e in refused {
        assert!(matches!(
            Record::Wal(Box::new(e.clone())).encode(),
            Err(EncodeError::NotPersisted(_))
        ));
        assert!(matches!(
            encode_wal_entry(&e),
            Err(EncodeError::NotPersisted(_))
        ));
    }
}

fn c_set() -> tabswarm_consensus::context::ValidatorSet {
    tabswarm_consensus::context::ValidatorSet::new([(key(0).address(), 1)], [0; 32])
}

#[test]
fn oversize_and_malformed_inputs_are_refused_with_a_reason() {
    let huge = vec![VERSION; MAX_RECORD + 1];
    assert!(matches!(
        Record::decode(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(Record::decode(&[]).err(), Some(DecodeError::Empty));
    assert_eq!(
        Record::decode(&[7, 1]).err(),
        Some(DecodeError::UnknownVersion(7))
    );
    // Record index 3 and WAL entry index 5 do not exist (yet).
    assert!(matches!(
        Record::decode(&[VERSION, 3]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        Record::decode(&[VERSION, 0, 5]),
        Err(DecodeError::Malformed(_))
    ));
    // A signer state over its kind's limit (but under the overall one): refused both ways.
    let mut big = signer_state();
    big.votes = (0..8000)
        .map(|r| vote(3, r, VoteType::Prevote, Some(1), 0))
        .collect();
    assert!(matches!(
        Record::Signer(big.clone()).encode(),
        Err(EncodeError::TooLarge { .. })
    ));
    let mut bytes = vec![VERSION, 1]; // version, record index 1 (signer)
    bytes.extend_from_slice(&tabswarm_consensus::codec::canonical(&big));
    assert!(bytes.len() > wal::SIGNER_LIMIT && bytes.len() <= MAX_RECORD);
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
    let mut trailing = Record::Signer(SignerState::default())
        .encode()
        .expect("fits");
    trailing.push(0);
    assert_eq!(
        Record::decode(&trailing).err(),
        Some(DecodeError::TrailingBytes(1))
    );
    // Unsorted update ids in a logged proposal are refused as on the wire.
    let mut p = proposal(3, 0, Round::Nil);
    p.value.proposal.updates.reverse();
    let bytes = Record::Wal(Box::new(Input::Proposal(ctx().sign_proposal(&key(1), p))))
        .encode()
        .expect("fits");
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::NotCanonical(_))
    ));
    // A timeout duration with nanoseconds >= 1e9 would panic in Duration::new if not refused.
    let t = Record::Wal(Box::new(Input::TimeoutElapsed(Timeout::new(
        Round::new(0),
        TimeoutKind::FinalizeHeight(Duration::new(1, 999_999_999)),
    ))));
    let mut bytes = t.encode().expect("fits");
    // Body: Wal(0) TimeoutElapsed(4) Round::Some(1) 0 kind FinalizeHeight(4) secs(1) nanos.
    let nanos_at = bytes.len() - 5;
    bytes.truncate(nanos_at);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // u32::MAX as a varint
    assert!(matches!(
        Record::decode(&bytes),
        Err(DecodeError::NotCanonical(_))
    ));
}

fn own_votes(outputs: &[Output], me: tabswarm_consensus::identity::Address) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m @ Message::Vote(v)) if v.vote.validator == me => m.encode().ok(),
            _ => None,
        })
        .collect()
}

/// Writes a store as a host would (blocks, then the height's WAL, then the signer state)
/// and reads it back from the bytes alone.
fn through_bytes(store: &Persisted) -> Persisted {
    let mut records: Vec<Vec<u8>> = Vec::new();
    for b in &store.blocks {
        records.push(Record::Block(Box::new(b.clone())).encode().expect("block"));
    }
    for e in &store.wal {
        records.push(Record::Wal(Box::new(e.clone())).encode().expect("entry"));
    }
    records.push(
        Record::Signer(store.signer.clone())
            .encode()
            .expect("signer"),
    );
    let mut back = Persisted::default();
    for bytes in &records {
        back.apply(&Record::decode(bytes).expect("decodes"));
    }
    back
}

#[test]
fn restart_from_records_read_back_from_bytes() {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(2, 100_000).expect("no node error"));
    // Step until validator 0 has logged its own prevote at height 3.
    for _ in 0..100_000 {
        if c.stores[0]
            .signer
            .votes
            .iter()
            .any(|v| v.height.0 == 3 && v.vote_type == VoteType::Prevote)
        {
            break;
        }
        assert!(c.step().expect("no node error"));
    }
    let store = c.stores[0].clone();
    assert!(!store.wal.is_empty(), "height 3 has WAL entries");
    let back = through_bytes(&store);
    assert_eq!(back.blocks, store.blocks);
    assert_eq!(back.wal, store.wal);
    assert_eq!(back.signer, store.signer);

    let start = |s: Persisted| {
        let mut node =
            Node::restart(genesis(&[1, 1, 1, 1]), key(0), HonestApp::new(4), s).expect("restart");
        let out = node.start().expect("start");
        (node.signer_state().clone(), out)
    };
    let (signer_mem, out_mem) = start(store.clone());
    let (signer_bytes, out_bytes) = start(back);
    assert_eq!(signer_bytes, signer_mem);
    assert_eq!(signer_bytes, store.signer, "nothing new was signed");
    let resent = own_votes(&out_bytes, key(0).address());
    assert_eq!(resent, own_votes(&out_mem, key(0).address()));
    assert!(!resent.is_empty(), "the recorded prevote is re-sent");
    assert!(
        !out_bytes
            .iter()
            .any(|o| matches!(o, Output::Persist(Record::Signer(_))))
    );
}

fn record() -> impl Strategy<Value = Record> {
    let entries = wal_entries();
    let n = entries.len();
    prop_oneof![
        (0..n).prop_map(move |i| Record::Wal(Box::new(entries[i].clone()))),
        (
            any::<u64>(),
            0u32..5000,
            any::<bool>(),
            proptest::option::of(any::<u8>()),
            0u32..8
        )
            .prop_map(|(h, r, pre, v, k)| {
                let t = if pre {
                    VoteType::Prevote
                } else {
                    VoteType::Precommit
                };
                Record::Wal(Box::new(Input::Vote(
                    ctx().sign_vote(&key(k), vote(h, r, t, v, k)),
                )))
            }),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(secs, r, nanos)| {
            Record::Wal(Box::new(Input::TimeoutElapsed(Timeout::new(
                Round::new(r),
                TimeoutKind::FinalizeHeight(Duration::new(secs / 2, nanos % 1_000_000_000)),
            ))))
        }),
        Just(Record::Signer(signer_state())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/wal.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn records_round_trip(r in record()) {
        let back = round_trip(&r);
        prop_assert!(same(&r, &back));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let _ = Record::decode(&bytes);
        let _ = decode_wal_entry(&bytes);
        // Also behind a valid version byte and each record index, so parsing goes deeper.
        for tag in 0u8..3 {
            let mut b = vec![VERSION, tag];
            b.extend_from_slice(&bytes);
            let _ = Record::decode(&b);
        }
    }

    #[test]
    fn mutated_records_never_panic_and_accepted_ones_are_canonical(
        r in record(), at in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<bool>(),
    ) {
        let mut bytes = r.encode().expect("fits");
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] ^= 1 << bit;
        }
        if let Ok(m) = Record::decode(&bytes) {
            prop_assert_eq!(m.encode().expect("re-encodes"), bytes);
        }
    }
}
