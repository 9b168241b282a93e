//! Consensus decoders: gossip envelopes, signed update announcements, the genesis file, and
//! what a node persists (WAL entries, signer state, blocks).

use tabswarm_consensus::context::TabswarmContext;
use tabswarm_consensus::genesis::{Genesis, RunId};
use tabswarm_consensus::node::Record;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_consensus::wal::{self, decode_wal_entry};
use tabswarm_consensus::wire::Message;
use tabswarm_peer::wire::{Topic, message_height};

/// The run signatures are checked against: forged or foreign signatures must simply fail.
const RUN: RunId = RunId([3; 32]);

/// `Message::decode`, every kind: what decodes re-encodes to bytes that decode to the same
/// message, and checking its signatures never panics.
pub fn wire_message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let bytes = msg
        .encode()
        .unwrap_or_else(|e| panic!("a decoded {} does not re-encode: {e}", msg.kind()));
    assert!(bytes.len() <= data.len(), "re-encoding grew the message");
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(&msg), "round trip");
    let _ = msg.verify(&TabswarmContext::new(RUN));
    let _ = (Topic::of(&msg), message_height(&msg));
}

/// `SignedUpdate::decode`: round trip, and signature checks that never panic.
pub fn signed_update(data: &[u8]) {
    let Ok(update) = SignedUpdate::decode(data) else {
        return;
    };
    let bytes = update.encode().expect("a decoded update re-encodes");
    let again = SignedUpdate::decode(&bytes).expect("a re-encoded update decodes");
    // Compared as bytes: NaN losses are not equal to themselves.
    assert_eq!(again.encode().ok(), Some(bytes), "round trip");
    let _ = (update.verify(&RUN), update.id(), update.included());
}

/// `Genesis::from_json`: a genesis that validates writes JSON that validates to the same
/// genesis and the same run id.
pub fn genesis_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(genesis) = Genesis::from_json(text) else {
        return;
    };
    let again = Genesis::from_json(&genesis.to_json())
        .unwrap_or_else(|e| panic!("a valid genesis writes a genesis that is refused: {e}"));
    assert_eq!(
        again.run_id(),
        genesis.run_id(),
        "round trip changed the run id"
    );
}

/// `Record::decode` and `decode_wal_entry`: both are canonical (one value, one encoding), so
/// whatever decodes re-encodes to the very bytes it came from.
pub fn wal_record(data: &[u8]) {
    if let Ok(record) = Record::decode(data) {
        let bytes = record.encode().expect("a decoded record re-encodes");
        assert_eq!(bytes, data, "a record decoded from non-canonical bytes");
    }
    if let Ok(entry) = decode_wal_entry(data) {
        let bytes = wal::encode_wal_entry(&entry).expect("a decoded WAL entry re-encodes");
        assert_eq!(bytes, data, "a WAL entry decoded from non-canonical bytes");
    }
}
