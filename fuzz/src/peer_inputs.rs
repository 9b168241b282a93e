//! The peer's input handler: one validator of a four-validator run fed a sequence of inputs
//! the fuzzer chooses. Messages are signed with the run's real keys (so they get past the
//! signature checks into the consensus and round logic), answers go to the peer's own request
//! ids, blobs it asks for are served honestly or not, and its jobs come back done; it must
//! never panic.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use malachitebft_core_types::{NilOrVal, Round, Value as _, VoteType};
use tabswarm_consensus::context::{
    Height, IncludedUpdate, Proposal, RoundProposal, TabswarmContext, Value, ValueId, Vote,
};
use tabswarm_consensus::genesis::Genesis;
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::testkit;
use tabswarm_consensus::update::{SignedUpdate, UpdateHeader};
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::{CHUNK_SIZE, Manifest};
use tabswarm_core::flat::{ParamHash, param_hash};
use tabswarm_core::train::LocalUpdate;
use tabswarm_peer::jobs::{self, Job, Output};
use tabswarm_peer::payload::Encoder;
use tabswarm_peer::wire::{Request, Response, Topic};
use tabswarm_peer::{Effect, Input, Peer, RequestId, Restored, Roles};

/// Inputs per run: enough to commit a few heights, few enough to keep an input cheap.
const MAX_INPUTS: usize = 96;
/// What the harness remembers of the peer's effects to answer or echo (oldest dropped).
const MAX_KEPT: usize = 32;
/// Peer ids: 1..=4 the validators (validator `i` is peer `i + 1`), 5 a trainer, 6 a relay.
const PEERS: u8 = 6;
const RELAY: u8 = 6;
const VALIDATORS: u32 = 4;

/// The run every input starts from, built once.
struct World {
    genesis: Genesis,
    ctx: TabswarmContext,
    keys: Vec<Keypair>,
    trainer: Keypair,
    base: [u8; 32],
    params: usize,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let genesis = testkit::genesis(&[1; VALIDATORS as usize]);
        let params = jobs::initial_params(&genesis.training).expect("initial parameters");
        World {
            ctx: TabswarmContext::new(genesis.run_id()),
            keys: (0..VALIDATORS).map(testkit::key).collect(),
            trainer: testkit::key(100),
            base: param_hash(&params).0,
            params: params.len(),
            genesis,
        }
    })
}

/// What the harness learnt from the peer's effects.
#[derive(Default)]
struct Seen {
    sent: Vec<(u8, RequestId, Request)>,
    published: Vec<(Topic, Vec<u8>)>,
    jobs: Vec<Job>,
    values: Vec<ValueId>,
    /// Blobs (payloads) the harness can serve, by address.
    blobs: BTreeMap<[u8; 32], Vec<u8>>,
}

fn keep<T>(list: &mut Vec<T>, item: T) {
    if list.len() == MAX_KEPT {
        list.remove(0);
    }
    list.push(item);
}

fn pick<'a, T>(u: &mut Unstructured<'_>, list: &'a [T]) -> Result<Option<&'a T>> {
    if list.is_empty() {
        return Ok(None);
    }
    Ok(list.get(u.choose_index(list.len())?))
}

/// Runs one sequence of inputs.
pub fn run(data: &[u8]) {
    let w = world();
    let roles = Roles {
        train: true,
        validate: true,
        store: false,
        max_train_shards: 0,
    };
    let mut peer: Peer<u8> = Peer::new(
        w.genesis.clone(),
        w.keys[0].clone(),
        roles,
        Restored::default(),
        0,
    )
    .expect("the fuzzed run starts");
    let mut u = Unstructured::new(data);
    let mut seen = Seen::default();
    let mut now = 0;
    for _ in 0..MAX_INPUTS {
        if u.is_empty() {
            break;
        }
        let Ok((advance, input)) = next_input(&mut u, w, &mut seen) else {
            break;
        };
        now += advance;
        for effect in peer.handle(now, input) {
            observe(effect, &mut seen);
        }
    }
}

fn observe(effect: Effect<u8>, seen: &mut Seen) {
    match effect {
        Effect::Publish { topic, data } => {
            if let Ok(Message::Proposal(p)) = Message::decode(&data) {
                keep(&mut seen.values, p.proposal.value.id());
            }
            keep(&mut seen.published, (topic, data));
        }
        Effect::Send { to, id, request } => keep(&mut seen.sent, (to, id, request)),
        Effect::Run(job) => keep(&mut seen.jobs, job),
        _ => {}
    }
}

fn next_input(u: &mut Unstructured<'_>, w: &World, seen: &mut Seen) -> Result<(u64, Input<u8>)> {
    let source = u.int_in_range(1..=PEERS)?;
    let gossip = |topic, data| Input::Gossip {
        source,
        publisher: Some(source),
        topic,
        data,
    };
    let input = match u.int_in_range(0..=11)? {
        0 => {
            let topic = *u.choose(&Topic::ALL)?;
            gossip(topic, u.arbitrary()?)
        }
        1 => gossip(Topic::Votes, vote(u, w, seen)?),
        2 => gossip(Topic::Proposals, proposal(u, w, seen)?),
        3 => gossip(Topic::Updates, update(u, w, seen)?),
        4 => match pick(u, &seen.published)? {
            Some((topic, data)) => gossip(*topic, data.clone()),
            None => Input::Tick,
        },
        5 => Input::Request {
            from: source,
            request: request(u, seen)?,
        },
        6 => match pick(u, &seen.sent)?.cloned() {
            Some((to, id, asked)) => Input::Response {
                from: if u.arbitrary()? { to } else { source },
                id,
                response: response(u, w, seen, &asked)?,
            },
            None => Input::Tick,
        },
        7 => match pick(u, &seen.sent)? {
            Some((_, id, _)) => Input::RequestFailed { id: *id },
            None => Input::Tick,
        },
        8 => Input::PeerUp {
            peer: source,
            relay: source == RELAY,
        },
        9 => Input::PeerDown { peer: source },
        10 => match pick(u, &seen.jobs)?.cloned() {
            Some(job) => Input::JobDone {
                output: finish(u, w, job)?,
                elapsed_ms: u.int_in_range(0..=5_000)?,
            },
            None => Input::Training(u.arbitrary()?),
        },
        _ => Input::Tick,
    };
    Ok((u.int_in_range(0..=2_500)?, input))
}

fn height(u: &mut Unstructured<'_>) -> Result<Height> {
    Ok(Height(u.int_in_range(0..=4)?))
}

fn round(u: &mut Unstructured<'_>) -> Result<Round> {
    Ok(match u.int_in_range(0..=4u32)? {
        0 => Round::Nil,
        r => Round::new(r - 1),
    })
}

fn signer<'a>(u: &mut Unstructured<'_>, w: &'a World) -> Result<&'a Keypair> {
    u.choose(&w.keys)
}

fn vote(u: &mut Unstructured<'_>, w: &World, seen: &Seen) -> Result<Vec<u8>> {
    let key = signer(u, w)?;
    let value = match pick(u, &seen.values)? {
        Some(id) if u.arbitrary()? => NilOrVal::Val(*id),
        _ if u.arbitrary()? => NilOrVal::Val(ValueId(u.arbitrary()?)),
        _ => NilOrVal::Nil,
    };
    let vote = Vote {
        height: height(u)?,
        round: round(u)?,
        vote_type: if u.arbitrary()? {
            VoteType::Prevote
        } else {
            VoteType::Precommit
        },
        value,
        validator: key.address(),
    };
    let signed = w.ctx.sign_vote(key, vote);
    Ok(Message::Vote(signed.into()).encode().unwrap_or_default())
}

fn proposal(u: &mut Unstructured<'_>, w: &World, seen: &mut Seen) -> Result<Vec<u8>> {
    let key = signer(u, w)?;
    let mut updates: Vec<IncludedUpdate> = (0..u.int_in_range(0..=3)?)
        .map(|_| {
            Ok(IncludedUpdate {
                id: u.arbitrary()?,
                trainer: if u.arbitrary()? {
                    w.trainer.address().0
                } else {
                    u.arbitrary()?
                },
            })
        })
        .collect::<Result<_>>()?;
    updates.sort_by_key(|x| x.id);
    updates.dedup_by_key(|x| x.id);
    let base = if u.arbitrary()? {
        w.base
    } else {
        u.arbitrary()?
    };
    let value = Value::new(RoundProposal {
        base_param_hash: base,
        // Empty proposals that keep the parameters are valid from a height's later rounds.
        result_param_hash: if updates.is_empty() && u.arbitrary()? {
            base
        } else {
            u.arbitrary()?
        },
        updates,
        aggregation_rule: w.genesis.aggregation_rule,
    });
    keep(&mut seen.values, value.id());
    let proposal = Proposal {
        height: height(u)?,
        round: round(u)?,
        value,
        pol_round: round(u)?,
        proposer: key.address(),
    };
    let signed = w.ctx.sign_proposal(key, proposal);
    Ok(Message::Proposal(signed.into())
        .encode()
        .unwrap_or_default())
}

/// A trainer's announcement, its payload kept to serve: a delta of the model's length with
/// a few entries set.
fn update(u: &mut Unstructured<'_>, w: &World, seen: &mut Seen) -> Result<Vec<u8>> {
    let mut delta = vec![0.0; w.params];
    for _ in 0..u.int_in_range(0..=4)? {
        let i = u.choose_index(w.params)?;
        delta[i] = u.arbitrary()?;
    }
    let (payload, _) =
        Encoder::default().encode(&w.trainer.address(), &delta, w.genesis.compression);
    let address = Manifest::of(&payload).hash();
    let header = UpdateHeader {
        height: u.int_in_range(0..=4)?,
        base_param_hash: if u.arbitrary()? {
            w.base
        } else {
            u.arbitrary()?
        },
        trainer: w.trainer.address(),
        samples: if u.arbitrary()? {
            jobs::update_weight(&w.genesis.training)
        } else {
            u.arbitrary()?
        },
        loss_before: u.arbitrary()?,
        loss_after: u.arbitrary()?,
        payload_hash: address,
        payload_len: payload.len() as u32,
    };
    seen.blobs.insert(address, payload);
    if seen.blobs.len() > MAX_KEPT {
        seen.blobs.pop_first();
    }
    let update = SignedUpdate::sign(header, &w.trainer, &w.genesis.run_id());
    Ok(update.encode().unwrap_or_default())
}

fn address(u: &mut Unstructured<'_>, seen: &Seen) -> Result<[u8; 32]> {
    let known: Vec<[u8; 32]> = seen.blobs.keys().copied().collect();
    match pick(u, &known)? {
        Some(a) if u.arbitrary()? => Ok(*a),
        _ => u.arbitrary(),
    }
}

fn request(u: &mut Unstructured<'_>, seen: &Seen) -> Result<Request> {
    Ok(match u.int_in_range(0..=8)? {
        0 => Request::Manifest {
            address: address(u, seen)?,
        },
        1 => Request::Chunk {
            address: address(u, seen)?,
            index: u.arbitrary()?,
        },
        2 => Request::Blocks {
            from: u.arbitrary()?,
            max: u.arbitrary()?,
        },
        3 => Request::Checkpoint,
        4 => Request::Update { id: u.arbitrary()? },
        5 => Request::Status,
        6 => Request::DataManifest,
        7 => Request::Grant {
            member: u.arbitrary()?,
        },
        _ => Request::Grants {
            skip: u.arbitrary()?,
        },
    })
}

/// An answer to `asked`: the right blob, manifest or published block when the harness has
/// it and the fuzzer says so, anything otherwise.
fn response(u: &mut Unstructured<'_>, w: &World, seen: &Seen, asked: &Request) -> Result<Response> {
    let honest: bool = u.arbitrary()?;
    let bytes = |u: &mut Unstructured<'_>| -> Result<serde_bytes::ByteBuf> {
        Ok(serde_bytes::ByteBuf::from(u.arbitrary::<Vec<u8>>()?))
    };
    Ok(match (asked, honest) {
        (Request::Manifest { address }, true) => match seen.blobs.get(address) {
            Some(blob) => Response::Manifest(Manifest::of(blob)),
            None => Response::NotFound,
        },
        (Request::Chunk { address, index }, true) => match seen.blobs.get(address) {
            Some(blob) => {
                let start = (*index as usize).saturating_mul(CHUNK_SIZE).min(blob.len());
                let end = (start + CHUNK_SIZE).min(blob.len());
                Response::Chunk(serde_bytes::ByteBuf::from(blob[start..end].to_vec()))
            }
            None => Response::NotFound,
        },
        (Request::Status, true) => Response::Status {
            height: u.int_in_range(0..=6)?,
        },
        (Request::Blocks { .. }, true) => Response::Blocks(
            seen.published
                .iter()
                .filter(|(t, _)| *t == Topic::Blocks)
                .map(|(_, b)| serde_bytes::ByteBuf::from(b.clone()))
                .collect(),
        ),
        (Request::Checkpoint, true) => Response::Checkpoint {
            height: u.int_in_range(0..=6)?,
            address: address(u, seen)?,
        },
        (Request::Update { .. }, true) => Response::Update(serde_bytes::ByteBuf::from(update(
            u,
            w,
            &mut Seen::default(),
        )?)),
        _ => match u.int_in_range(0..=9)? {
            0 => Response::Manifest(Manifest {
                len: u.arbitrary()?,
                chunks: u.arbitrary()?,
            }),
            1 => Response::Chunk(bytes(u)?),
            2 => Response::Blocks(vec![bytes(u)?]),
            3 => Response::Checkpoint {
                height: u.arbitrary()?,
                address: u.arbitrary()?,
            },
            4 => Response::Update(bytes(u)?),
            5 => Response::Status {
                height: u.arbitrary()?,
            },
            6 => Response::DataManifest(bytes(u)?),
            7 => Response::Grant(bytes(u)?),
            8 => Response::Grants(vec![bytes(u)?]),
            _ => Response::NotFound,
        },
    })
}

/// A job's output: a loss for a score, a result for a test, an update (a few entries of a
/// delta on the job's parameters) or a failure for training.
fn finish(u: &mut Unstructured<'_>, w: &World, job: Job) -> Result<Output> {
    let loss = |u: &mut Unstructured<'_>| -> Result<Option<f32>> {
        Ok(if u.arbitrary()? {
            Some(u.int_in_range(0..=400u16)? as f32 / 100.0)
        } else {
            u.arbitrary()?
        })
    };
    Ok(match job {
        Job::Validate { key, draw, .. } => Output::Validated {
            key,
            draw,
            loss: loss(u)?,
        },
        Job::Test { height, .. } => Output::Tested {
            height,
            result: if u.arbitrary()? {
                Some((u.arbitrary()?, u.arbitrary()?))
            } else {
                None
            },
        },
        Job::Train { height, params, .. } => {
            let result = if u.arbitrary()? {
                let mut delta = vec![
                    0.0;
                    if u.arbitrary()? {
                        params.len()
                    } else {
                        w.params / 2
                    }
                ];
                if let Some(first) = delta.first_mut() {
                    *first = u.arbitrary()?;
                }
                Ok(LocalUpdate {
                    delta,
                    base: ParamHash(param_hash(&params).0),
                    samples: u.arbitrary::<u16>()? as usize,
                    loss_before: loss(u)?.unwrap_or(1.0),
                    loss_after: loss(u)?.unwrap_or(1.0),
                })
            } else {
                Err("the fuzzer failed it".into())
            };
            Output::Trained { height, result }
        }
    })
}
