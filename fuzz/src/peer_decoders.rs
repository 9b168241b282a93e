//! The peer's decoders: fetch requests and responses (cbor, as libp2p's request-response
//! codec reads them), update payloads in every compression, worker jobs and data plans,
//! storage holdings, and chunked blobs (checkpoints, payloads, shards).

use arbitrary::Unstructured;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tabswarm_consensus::genesis::{Compression, TrainingRules};
use tabswarm_consensus::identity::Address;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_consensus::wire::Message;
use tabswarm_core::chunks::{Assembly, CHUNK_SIZE, Manifest, bytes_to_f32s};
use tabswarm_core::vault::{Grant, SignedManifest};
use tabswarm_peer::data::Holdings;
use tabswarm_peer::jobs::{self, DataPlan, Job, Output};
use tabswarm_peer::payload::{self, Encoder};
use tabswarm_peer::wire::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Request, Response};

/// The trainer every fuzzed payload claims (the seeds are wrapped for it).
pub const TRAINER: Address = Address([7; 32]);

/// The run's compression and the model's length a payload input is read with: its first
/// three bytes (see [`payload_input`]).
pub fn payload_settings(data: &[u8]) -> Option<(Compression, usize, &[u8])> {
    let (&kind, rest) = data.split_first()?;
    let (len, body) = rest.split_first_chunk::<2>()?;
    let compression = match kind {
        0 => Compression::None,
        1 => Compression::Int8,
        k => Compression::TopK {
            per_mille: u16::from(k) * 4,
        },
    };
    Some((compression, usize::from(u16::from_le_bytes(*len)), body))
}

/// The fuzz input that reads `payload` in `compression` for a model of `len` values.
pub fn payload_input(compression: Compression, len: u16, payload: &[u8]) -> Vec<u8> {
    let kind = match compression {
        Compression::None => 0,
        Compression::Int8 => 1,
        Compression::TopK { per_mille } => u8::try_from(per_mille / 4).unwrap_or(u8::MAX).max(2),
    };
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn cbor<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    cbor4ii::serde::from_slice(data).ok()
}

fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).expect("cbor encodes a decoded value")
}

/// A fetch request: what decodes re-encodes to the same request.
pub fn fetch_request(data: &[u8]) {
    if data.len() as u64 > MAX_REQUEST_BYTES {
        return;
    }
    if let Some(request) = cbor::<Request>(data) {
        assert_eq!(
            cbor::<Request>(&to_cbor(&request)),
            Some(request),
            "round trip"
        );
    }
}

/// A fetch response, and the encoded values it carries decoded as the peer decodes them.
pub fn fetch_response(data: &[u8]) {
    if data.len() as u64 > MAX_RESPONSE_BYTES {
        return;
    }
    let Some(response) = cbor::<Response>(data) else {
        return;
    };
    assert_eq!(
        cbor::<Response>(&to_cbor(&response)).as_ref(),
        Some(&response),
        "round trip"
    );
    match response {
        Response::Blocks(blocks) => blocks.iter().for_each(|b| drop(Message::decode(b))),
        Response::Update(bytes) => drop(SignedUpdate::decode(&bytes)),
        Response::DataManifest(bytes) => drop(SignedManifest::decode(&bytes)),
        Response::Grant(bytes) => drop(Grant::decode(&bytes)),
        Response::Grants(grants) => grants.iter().for_each(|g| drop(Grant::decode(g))),
        Response::Manifest(m) => drop(Assembly::new(m.clone(), &m.hash())),
        _ => {}
    }
}

/// `payload::decode` for the compression and length the input's first bytes name: a payload
/// that decodes has the model's length and finite-or-f32 values, and the trainer's encoder
/// turns it back into a payload that decodes to what the encoder says it sent.
pub fn update_payload(data: &[u8]) {
    let Some((compression, len, bytes)) = payload_settings(data) else {
        return;
    };
    let Ok(delta) = payload::decode(bytes, &TRAINER, compression, len) else {
        return;
    };
    assert_eq!(
        delta.len(),
        len,
        "a payload of another length than the model"
    );
    if compression != Compression::None {
        assert!(
            delta.iter().all(|v| v.is_finite()),
            "a compressed delta decoded to non-finite values"
        );
    }
    let (again, sent) = Encoder::default().encode(&TRAINER, &delta, compression);
    let decoded = payload::decode(&again, &TRAINER, compression, len)
        .unwrap_or_else(|e| panic!("a re-encoded {compression:?} payload is refused: {e}"));
    assert_eq!(
        bytes_of(&decoded),
        bytes_of(&sent),
        "peers decode another delta than the trainer pooled"
    );
}

fn bytes_of(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `jobs::decode` of a job and of an output (what crosses to and from a Web Worker).
pub fn job_codec(data: &[u8]) {
    if let Ok(job) = jobs::decode::<Job>(data) {
        let bytes = jobs::encode(&job);
        let again = jobs::decode::<Job>(&bytes).expect("a re-encoded job decodes");
        assert_eq!(jobs::encode(&again), bytes, "round trip");
    }
    if let Ok(output) = jobs::decode::<Output>(data) {
        let bytes = jobs::encode(&output);
        let again = jobs::decode::<Output>(&bytes).expect("a re-encoded output decodes");
        assert_eq!(jobs::encode(&again), bytes, "round trip");
    }
}

/// `DataPlan::decode` with the default rules: a plan that decodes re-encodes to a plan that
/// decodes.
pub fn data_plan(data: &[u8]) {
    let rules = TrainingRules::default();
    if let Ok(plan) = DataPlan::decode(data, &rules) {
        let bytes = plan.encode();
        let again = DataPlan::decode(&bytes, &rules).expect("a re-encoded plan decodes");
        assert_eq!(again.encode(), bytes, "round trip");
    }
}

/// `Holdings::decode` (gossiped by storage peers): round trip.
pub fn holdings(data: &[u8]) {
    if let Some(h) = Holdings::decode(data) {
        assert_eq!(Holdings::decode(&h.encode()), Some(h), "round trip");
    }
}

/// A blob (checkpoint, payload or shard) fetched in chunks: a manifest for the blob the
/// input holds, perhaps with a lying length, then chunks in any order, any index, any bytes.
/// A blob assembled from chunks that all matched is the blob, and a checkpoint's bytes read
/// as parameters or are refused.
pub fn chunk_assembly(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(blob) = u.arbitrary::<Vec<u8>>() else {
        return;
    };
    let mut manifest = Manifest::of(&blob);
    if u.arbitrary::<bool>().unwrap_or(false) {
        manifest.len = u.arbitrary().unwrap_or(0);
    }
    let honest = manifest == Manifest::of(&blob);
    let address = manifest.hash();
    let Ok(mut assembly) = Assembly::new(manifest, &address) else {
        assert!(!honest, "the manifest of a blob is refused");
        return;
    };
    let chunks = blob.len().div_ceil(CHUNK_SIZE);
    while !u.is_empty() {
        let index = usize::from(u.arbitrary::<u8>().unwrap_or(0));
        let ok = if u.arbitrary::<bool>().unwrap_or(false) {
            let start = index.saturating_mul(CHUNK_SIZE).min(blob.len());
            let end = (start + CHUNK_SIZE).min(blob.len());
            assembly.add(index, &blob[start..end]).is_ok()
        } else {
            let bytes: Vec<u8> = u.arbitrary().unwrap_or_default();
            assembly.add(index, &bytes).is_ok()
        };
        assert!(!ok || index < chunks, "a chunk past the end was taken");
    }
    if let Ok((_, bytes)) = assembly.finish() {
        assert_eq!(
            bytes, blob,
            "the assembled blob differs from the one chunked"
        );
        let _ = bytes_to_f32s(&bytes);
    }
}
