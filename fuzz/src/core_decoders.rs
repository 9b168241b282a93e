//! core's decoders: the data vault (signed manifest, sealed shard, grant), the `.tsd`
//! dataset format and the compressed deltas (int8, sparse top-k).

use ed25519_dalek::SigningKey;
use tabswarm_core::compress::{self, Sparse};
use tabswarm_core::data::Dataset;
use tabswarm_core::vault::{DatasetKey, Grant, MemberSecret, RunId, Shard, SignedManifest};

/// The run, epoch, owner, member and dataset key the seeds are made with, so inputs near a
/// seed reach the signature checks and the AEAD.
pub const RUN: RunId = [5; 32];
/// The epoch of the seeds' dataset key.
pub const EPOCH: u64 = 1;

/// The data owner of the seeds.
pub fn owner() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// The member the seeds' grant is sealed to.
pub fn member() -> MemberSecret {
    MemberSecret::derive(&[43; 32])
}

/// The seeds' dataset key.
pub fn dataset_key() -> DatasetKey {
    DatasetKey::from_bytes(RUN, EPOCH, [44; 32])
}

/// `SignedManifest::decode` is canonical: what decodes re-encodes to its own bytes; the
/// signature check never panics.
pub fn data_manifest(data: &[u8]) {
    let Ok(signed) = SignedManifest::decode(data) else {
        return;
    };
    assert_eq!(
        signed.encode(),
        data,
        "a manifest decoded from non-canonical bytes"
    );
    if let Ok(manifest) = signed.verify(&owner().verifying_key(), &RUN) {
        let _ = manifest.samples();
        for index in 0..manifest.layout.len().min(4) as u32 {
            let _ = manifest.layout.part(index);
            let _ = manifest.open_shard(index, data, &dataset_key());
        }
    }
}

/// `Shard::from_bytes`, then opening it as shard 0 under the seeds' key.
pub fn shard(data: &[u8]) {
    let Ok(shard) = Shard::from_bytes(data.to_vec()) else {
        return;
    };
    assert_eq!(shard.as_bytes(), data);
    let address = shard.address();
    if let Ok(samples) = shard.open(&dataset_key(), 0, &address) {
        // The plaintext is a `.tsd` file; what opens, decodes as one.
        assert_eq!(Dataset::decode(&samples.encode()).ok(), Some(samples));
    }
}

/// `Grant::decode` is canonical; verifying and opening it never panic.
pub fn grant(data: &[u8]) {
    let Ok(grant) = Grant::decode(data) else {
        return;
    };
    assert_eq!(
        grant.encode(),
        data,
        "a grant decoded from non-canonical bytes"
    );
    let _ = grant.open(&owner().verifying_key(), &RUN, &member());
}

/// `Dataset::decode` (`.tsd`): a dataset that decodes re-encodes to its own bytes.
pub fn tsd_dataset(data: &[u8]) {
    if let Ok(dataset) = Dataset::decode(data) {
        assert_eq!(dataset.encode(), data, "round trip");
    }
}

/// `decode_int8`: finite values (a scale times a step), and a delta that re-encodes to as
/// many values.
pub fn int8_delta(data: &[u8]) {
    let Ok(delta) = compress::decode_int8(data) else {
        return;
    };
    assert!(
        delta.iter().all(|v| v.is_finite()),
        "an int8 delta decoded to a non-finite value"
    );
    let again = compress::decode_int8(&compress::encode_int8(&delta))
        .expect("a decoded int8 delta re-encodes to one that decodes");
    assert_eq!(again.len(), delta.len());
}

/// `Sparse::decode`: round trip, and a dense form of the length it claims.
pub fn sparse_delta(data: &[u8]) {
    let Ok(sparse) = Sparse::decode(data) else {
        return;
    };
    assert_eq!(
        Sparse::decode(&sparse.encode()).as_ref(),
        Ok(&sparse),
        "round trip"
    );
    assert_eq!(sparse.to_dense().len(), sparse.len as usize);
}
