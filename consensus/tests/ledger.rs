//! Ledger verification from genesis refuses every kind of tampering; evidence checks.

use malachitebft_core_types::{NilOrVal, Round, VoteType};
use tabswarm_consensus::context::{Height, TabswarmContext, ValueId, Vote};
use tabswarm_consensus::evidence::{Evidence, EvidenceError, SignedVoteMsg};
use tabswarm_consensus::genesis::RunId;
use tabswarm_consensus::ledger::{BlockError, CertError, Ledger};
use tabswarm_consensus::testkit::{Cluster, genesis, key};

fn chain() -> Vec<tabswarm_consensus::ledger::Block> {
    let mut c = Cluster::new(&[1, 1, 1, 1]).expect("cluster");
    assert!(c.run_until_height(4, 100_000).expect("no node error"));
    c.committed[0][..4].to_vec()
}

#[test]
fn tampered_chains_are_refused_with_the_reason() {
    let g = genesis(&[1, 1, 1, 1]);
    let good = chain();
    assert!(Ledger::verify_chain(g.clone(), &good).is_ok());

    let mut bad = good.clone();
    bad[2].parent[0] ^= 1;
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("parent");
    assert_eq!((e.index, e.error), (2, BlockError::Parent));

    let mut bad = good.clone();
    bad[1].certificate.signatures.truncate(2);
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("quorum");
    assert!(matches!(
        e.error,
        BlockError::Cert(CertError::NoQuorum {
            signed: 2,
            total: 4
        })
    ));

    let mut bad = good.clone();
    let (a, s) = bad[1].certificate.signatures[0];
    bad[1].certificate.signatures[1] = (a, s);
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("duplicate");
    assert!(matches!(
        e.error,
        BlockError::Cert(CertError::DuplicateSigner(_))
    ));

    let mut bad = good.clone();
    bad[0].value.proposal.result_param_hash[0] ^= 1;
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("value changed");
    assert_eq!(e.error, BlockError::CertMismatch);

    let mut bad = good.clone();
    bad[3].credits.clear();
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("credits");
    assert_eq!(e.error, BlockError::Credits);

    let mut bad = good.clone();
    bad.remove(1);
    let e = Ledger::verify_chain(g.clone(), &bad).expect_err("gap");
    assert!(matches!(
        e.error,
        BlockError::Height {
            expected: 2,
            got: 3
        }
    ));

    // The same blocks under another genesis (another run) do not verify.
    let other = genesis(&[1, 1, 1, 2]);
    assert!(Ledger::verify_chain(other, &good).is_err());
}

fn vote(value: Option<u8>) -> Vote {
    Vote {
        height: Height(3),
        round: Round::new(1),
        vote_type: VoteType::Precommit,
        value: value.map_or(NilOrVal::Nil, |b| NilOrVal::Val(ValueId([b; 32]))),
        validator: key(1).address(),
    }
}

#[test]
fn evidence_needs_a_real_conflict_by_one_signer_in_this_run() {
    let ctx = TabswarmContext::new(RunId([3; 32]));
    let signed = |v: Vote| SignedVoteMsg::from(ctx.sign_vote(&key(1), v));
    let good = Evidence::double_vote(signed(vote(Some(1))), signed(vote(None)));
    assert_eq!(good.verify(&ctx), Ok(()));
    assert_eq!(good.offender(), key(1).address());
    // Order does not matter to the constructor.
    assert_eq!(
        Evidence::double_vote(signed(vote(None)), signed(vote(Some(1)))),
        good
    );
    assert_eq!(
        good.verify(&TabswarmContext::new(RunId([4; 32]))),
        Err(EvidenceError::BadSignature)
    );
    assert_eq!(
        Evidence::double_vote(signed(vote(Some(1))), signed(vote(Some(1)))).verify(&ctx),
        Err(EvidenceError::NoConflict)
    );
    let mut other_round = vote(None);
    other_round.round = Round::new(2);
    assert_eq!(
        Evidence::double_vote(signed(vote(Some(1))), signed(other_round)).verify(&ctx),
        Err(EvidenceError::NotComparable)
    );
    // A vote in validator 1's name signed by validator 2 does not make evidence against 1.
    let forged = SignedVoteMsg::from(ctx.sign_vote(&key(2), vote(None)));
    assert_eq!(
        Evidence::double_vote(signed(vote(Some(1))), forged).verify(&ctx),
        Err(EvidenceError::BadSignature)
    );
}
