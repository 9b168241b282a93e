//! Seed inputs for every target, made by the real encoders: what a well-behaved peer, tab or
//! store writes. `cargo test -- --ignored write_seed_corpus` writes them to `corpus/`.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use malachitebft_core_types::{NilOrVal, Round, Value as _, VoteType};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_bytes::ByteBuf;
use tabswarm_browser::{ChainCache, DataCache};
use tabswarm_consensus::context::{
    Height, IncludedUpdate, Proposal, RoundProposal, TabswarmContext, Value, ValueId, Vote,
};
use tabswarm_consensus::evidence::Evidence;
use tabswarm_consensus::genesis::{Compression, TrainingRules};
use tabswarm_consensus::node::Record;
use tabswarm_consensus::testkit;
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_consensus::wal;
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::Manifest;
use tabswarm_core::compress::{self, Sparse};
use tabswarm_core::data::Dataset;
use tabswarm_core::vault::{Grant, SignedManifest, seal_dataset};
use tabswarm_peer::Persist;
use tabswarm_peer::data::{DataRecord, Holdings};
use tabswarm_peer::jobs::{self, DataPlan, Job, Output, ScoreKey};
use tabswarm_peer::payload::Encoder;
use tabswarm_peer::wire::{Request, Response};

use crate::{browser_decoders, core_decoders, peer_decoders};

/// One seed: its target, its file name, its bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every target's seeds.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, format!("seed-{name}"), bytes));
    };
    let chain = Chain::new();
    for (name, msg) in chain.messages() {
        add("wire_message", name, msg.encode().expect("seed message"));
    }
    add(
        "signed_update",
        "update",
        signed_update().encode().expect("seed update"),
    );
    let genesis = testkit::genesis(&[1, 2, 3]);
    add("genesis_json", "mean", genesis.to_json().into_bytes());
    let mut file = genesis.to_file();
    file.compression = Compression::TopK { per_mille: 100 };
    add("genesis_json", "top-k", serde_json_of(&file));
    add(
        "wal_record",
        "signer",
        Record::Signer(Default::default()).encode().expect("signer"),
    );
    for (i, block) in chain.blocks.iter().enumerate() {
        let record = Record::Block(Box::new(block.clone()));
        add(
            "wal_record",
            &format!("block-{i}"),
            record.encode().expect("block record"),
        );
    }
    for (i, entry) in chain.wal.iter().take(4).enumerate() {
        if let Ok(bytes) = wal::encode_wal_entry(entry) {
            add("wal_record", &format!("wal-{i}"), bytes);
        }
    }
    for (i, request) in requests().iter().enumerate() {
        add("fetch_request", &format!("request-{i}"), cbor(request));
    }
    for (i, response) in responses(&chain).iter().enumerate() {
        add("fetch_response", &format!("response-{i}"), cbor(response));
    }
    for (name, c) in [
        ("none", Compression::None),
        ("int8", Compression::Int8),
        ("top-k", Compression::TopK { per_mille: 100 }),
    ] {
        let delta = small_delta(300);
        let (bytes, _) = Encoder::default().encode(&peer_decoders::TRAINER, &delta, c);
        add(
            "update_payload",
            name,
            peer_decoders::payload_input(c, 300, &bytes),
        );
        let int8 = compress::encode_int8(&delta);
        if name == "int8" {
            add("int8_delta", "delta", int8);
        }
    }
    add(
        "sparse_delta",
        "delta",
        Sparse {
            len: 50,
            indices: vec![1, 7, 49],
            values: vec![0.5, -2.0, 3.25],
        }
        .encode(),
    );
    let params = Arc::new(small_delta(20));
    add(
        "job_codec",
        "train",
        jobs::encode(&Job::Train {
            height: 3,
            params: params.clone(),
            shard: 1,
            seed: 9,
        }),
    );
    add(
        "job_codec",
        "validate",
        jobs::encode(&Job::Validate {
            key: ScoreKey::Update([4; 32]),
            params,
            draw: 3,
        }),
    );
    add(
        "job_codec",
        "validated",
        jobs::encode(&Output::Validated {
            key: ScoreKey::Base([1; 32]),
            draw: 3,
            loss: Some(0.5),
        }),
    );
    if let Some(plan) = data_plan() {
        add("data_plan", "plan", plan.encode());
    }
    add(
        "holdings",
        "holdings",
        Holdings {
            epoch: 1,
            address: [3; 32],
            grants: 2,
            shards: ByteBuf::from(vec![0b101]),
            at_ms: 77,
        }
        .encode(),
    );
    add(
        "chunk_assembly",
        "small",
        vec![4, 0, 0, 0, 1, 2, 3, 4, 0, 9, 1, 1, 1, 0],
    );
    let vault = Vault::new();
    add("data_manifest", "manifest", vault.manifest.encode());
    add("shard", "shard", vault.shard.clone());
    add("grant", "grant", vault.grant.encode());
    add("tsd_dataset", "tiny", tiny_dataset(4).encode());
    add("chain_cache", "two-blocks", chain_cache(&chain));
    add("data_cache", "one-epoch", data_cache(&vault));
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    for len in [256, 1024, 4096] {
        let mut bytes = vec![0; len];
        rng.fill_bytes(&mut bytes);
        add("peer_inputs", &format!("random-{len}"), bytes);
    }
    out
}

fn serde_json_of<T: serde::Serialize>(value: &T) -> Vec<u8> {
    tabswarm_consensus::genesis::Genesis::from_file(
        serde_json::from_value(serde_json::to_value(value).expect("json")).expect("genesis file"),
    )
    .expect("valid genesis")
    .to_json()
    .into_bytes()
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).expect("cbor")
}

fn small_delta(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect()
}

/// A few committed blocks and the messages of a four-validator run.
struct Chain {
    ctx: TabswarmContext,
    blocks: Vec<tabswarm_consensus::ledger::Block>,
    wal: Vec<tabswarm_consensus::node::WalEntry>,
}

impl Chain {
    fn new() -> Self {
        let mut cluster = testkit::Cluster::new(&[1, 1, 1, 1]).expect("cluster");
        cluster.run_until_height(2, 100_000).expect("cluster runs");
        let genesis = testkit::genesis(&[1, 1, 1, 1]);
        Self {
            ctx: TabswarmContext::new(genesis.run_id()),
            blocks: cluster.committed[0].clone(),
            wal: cluster.stores[0].wal.clone(),
        }
    }

    fn vote(
        &self,
        signer: u32,
        value: NilOrVal<ValueId>,
    ) -> tabswarm_consensus::evidence::SignedVoteMsg {
        let key = testkit::key(signer);
        let vote = Vote {
            height: Height(1),
            round: Round::new(0),
            vote_type: VoteType::Prevote,
            value,
            validator: key.address(),
        };
        self.ctx.sign_vote(&key, vote).into()
    }

    fn messages(&self) -> Vec<(&'static str, Message)> {
        let key = testkit::key(1);
        let value = Value::new(RoundProposal {
            base_param_hash: [1; 32],
            updates: vec![IncludedUpdate {
                id: [2; 32],
                trainer: [3; 32],
            }],
            aggregation_rule: testkit::genesis(&[1]).aggregation_rule,
            result_param_hash: [4; 32],
        });
        let id = value.id();
        let proposal = Proposal {
            height: Height(1),
            round: Round::new(0),
            value,
            pol_round: Round::Nil,
            proposer: key.address(),
        };
        let a = self.vote(2, NilOrVal::Val(id));
        let b = self.vote(2, NilOrVal::Nil);
        let (first, second) = if a < b {
            (a.clone(), b)
        } else {
            (b, a.clone())
        };
        let mut out = vec![
            ("vote", Message::Vote(a)),
            (
                "proposal",
                Message::Proposal(self.ctx.sign_proposal(&key, proposal).into()),
            ),
            (
                "evidence",
                Message::Evidence(Evidence::DoubleVote { first, second }),
            ),
        ];
        if let Some(block) = self.blocks.first() {
            out.push(("block", Message::Block(Box::new(block.clone()))));
        }
        out
    }
}

fn signed_update() -> SignedUpdate {
    let header = UpdateHeader {
        height: 3,
        base_param_hash: [7; 32],
        trainer: testkit::key(100).address(),
        samples: 1600,
        loss_before: 2.3,
        loss_after: 0.9,
        payload_hash: [9; 32],
        payload_len: 4000,
    };
    SignedUpdate::sign(header, &testkit::key(100), &testkit::genesis(&[1]).run_id())
}

fn requests() -> Vec<Request> {
    vec![
        Request::Manifest { address: [1; 32] },
        Request::Chunk {
            address: [1; 32],
            index: 3,
        },
        Request::Blocks { from: 1, max: 64 },
        Request::Checkpoint,
        Request::Update { id: [2; 32] },
        Request::Status,
        Request::DataManifest,
        Request::Grant { member: [3; 32] },
        Request::Grants { skip: 2 },
    ]
}

fn responses(chain: &Chain) -> Vec<Response> {
    let block = chain
        .blocks
        .first()
        .map(|b| Message::Block(Box::new(b.clone())).encode().expect("block"));
    vec![
        Response::Manifest(Manifest::of(&[7; 70_000])),
        Response::Chunk(ByteBuf::from(vec![1, 2, 3])),
        Response::Blocks(block.into_iter().map(ByteBuf::from).collect()),
        Response::Checkpoint {
            height: 4,
            address: [5; 32],
        },
        Response::Update(ByteBuf::from(signed_update().encode().expect("update"))),
        Response::Status { height: 9 },
        Response::NotFound,
    ]
}

fn tiny_dataset(n: usize) -> Dataset {
    let labels = (0..n).map(|i| (i % 3) as u8).collect();
    let pixels = (0..n * 6).map(|i| (i as u8).wrapping_mul(7)).collect();
    Dataset::from_parts(2, 3, 3, labels, pixels).expect("tiny dataset")
}

fn data_plan() -> Option<DataPlan> {
    let rules = TrainingRules::default();
    let mnist_like = |n: usize| {
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels = (0..n * 784).map(|i| (i % 251) as u8).collect();
        Arc::new(Dataset::from_parts(28, 28, 10, labels, pixels).expect("dataset"))
    };
    DataPlan::from_parts(
        &rules,
        vec![mnist_like(4)],
        &[mnist_like(2)],
        &[mnist_like(2)],
    )
    .ok()
}

/// A sealed dataset of the seeds' run: its signed manifest, a shard, a grant.
struct Vault {
    manifest: SignedManifest,
    shard: Vec<u8>,
    grant: Grant,
}

impl Vault {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let key = core_decoders::dataset_key();
        let sealed = seal_dataset(&tiny_dataset(4), 2, &key, &mut rng).expect("sealed");
        let member = SigningKey::from_bytes(&[43; 32]).verifying_key();
        Self {
            manifest: SignedManifest::sign(sealed.manifest, &core_decoders::owner())
                .expect("signed"),
            shard: sealed.shards[0].as_bytes().to_vec(),
            grant: Grant::seal(
                &core_decoders::owner(),
                &key,
                &member,
                core_decoders::member().public(),
                &mut rng,
            )
            .expect("grant"),
        }
    }
}

fn chain_cache(chain: &Chain) -> Vec<u8> {
    let mut cache = ChainCache::new(browser_decoders::RUN, 0);
    for block in &chain.blocks {
        cache.on_persist(&Persist::Consensus(Record::Block(Box::new(block.clone()))));
    }
    cache.on_persist(&Persist::Params {
        height: chain.blocks.len() as u64,
        bytes: Arc::new(vec![0; 16]),
        checkpoint: true,
    });
    cache.take_new().unwrap_or_default()
}

fn data_cache(vault: &Vault) -> Vec<u8> {
    let mut cache = DataCache::new(browser_decoders::RUN);
    cache.on_persist(&Persist::Data(DataRecord::Manifest(
        vault.manifest.encode(),
    )));
    cache.on_persist(&Persist::Data(DataRecord::Grant {
        epoch: core_decoders::EPOCH,
        bytes: vault.grant.encode(),
    }));
    cache.on_persist(&Persist::Data(DataRecord::Shard {
        epoch: core_decoders::EPOCH,
        address: tabswarm_core::vault::address_of(&vault.shard),
        bytes: Arc::new(vault.shard.clone()),
    }));
    cache.take_new().unwrap_or_default()
}
