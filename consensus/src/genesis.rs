//! The genesis file: run parameters and the stake table. Its hash is the run id.
//!
//! Format (JSON, every field required unless marked):
//!
//! ```json
//! {
//!   "version": 1,
//!   "name": "mnist-mlp-demo",
//!   "initial_param_hash": "<64 hex chars: hash of the initial flat parameter vector>",
//!   "aggregation_rule": "median",          // or "mean", {"trimmed_mean": {"trim_per_mille": 200}},
//!                                          // {"centered_clip": {"iterations": 3}}; see below
//!   "timeouts_ms": {                       // optional; these are the defaults
//!     "propose": 3000, "propose_delta": 500,
//!     "prevote": 1000, "prevote_delta": 500,
//!     "precommit": 1000, "precommit_delta": 500,
//!     "rebroadcast": 5000, "max": 60000
//!   },
//!   "training": {                          // optional; these are the defaults
//!     "model": "mlp", "seed": 0,             // architecture ("mlp" or "cnn") and init seed
//!     "optimizer": "sgd", "learning_rate": 0.1,
//!     "batch_size": 32, "local_steps": 50,   // what one trainer does per round
//!     "shards": 16,                          // the training set is cut into this many shards
//!     "min_updates": 1,                      // a proposer waits for at least this many
//!     "round_deadline_ms": 2000,             // ... and at most this long for more
//!     "checkpoint_every": 10                 // heights between stored parameter snapshots
//!   },
//!   "compression": "int8",                 // optional: "none" (default), "int8",
//!                                          // {"top_k": {"per_mille": 10}}; see Compression
//!   "validators": [ { "public_key": "<64 hex chars: ed25519 key>", "stake": 100 } ]
//! }
//! ```
//!
//! The run id is `sha256("tabswarm/genesis/v1\0" || canonical bytes)`, where the canonical bytes
//! are the postcard encoding of the parsed genesis with validators sorted by key, so JSON
//! whitespace, field order and validator order do not change the run.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::identity::Address;

/// Identifies a run: the hash of its canonical genesis.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub [u8; 32]);

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", hex(&self.0[..8]))
    }
}

/// How the round's accepted updates are combined into the next parameters
/// (`tabswarm_core::robust` says what each rule withstands and costs).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationRule {
    /// Plain mean of the deltas: one hostile trainer moves it arbitrarily far (the control).
    Mean,
    /// Coordinate-wise median: robust while fewer than half the included updates are hostile.
    Median,
    /// Coordinate-wise mean after dropping the given share at each end.
    TrimmedMean {
        /// Share dropped at each end, in thousandths (below 500).
        trim_per_mille: u16,
    },
    /// Centered clipping from the coordinate-wise median (Karimireddy et al. 2021).
    CenteredClip {
        /// Clipping steps (1 to [`MAX_CLIP_ITERATIONS`]).
        iterations: u8,
    },
}

/// Most centered-clipping steps a genesis may ask for: each costs every validator a pass over
/// every included update.
pub const MAX_CLIP_ITERATIONS: u8 = 10;

impl AggregationRule {
    fn check(self) -> Result<(), GenesisError> {
        match self {
            AggregationRule::TrimmedMean { trim_per_mille } if trim_per_mille >= 500 => {
                Err(GenesisError::Unsupported(
                    "aggregation_rule: trimmed_mean's trim_per_mille is the share dropped at each \
                     end and must be below 500 (e.g. 200 drops the lowest and highest fifth)",
                ))
            }
            AggregationRule::CenteredClip { iterations }
                if iterations == 0 || iterations > MAX_CLIP_ITERATIONS =>
            {
                Err(GenesisError::Unsupported(
                    "aggregation_rule: centered_clip's iterations must be 1 to 10 (3 is typical)",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// How trainers send their updates (`tabswarm_core::compress`). Every payload of the run
/// uses it, and every peer decodes a payload to the same f32 vector, so validators still
/// recompute the aggregate bit for bit.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Dense little-endian f32: 4 bytes a value.
    #[default]
    None,
    /// int8 with one scale per 256 values: about 1 byte a value, each within half a step.
    Int8,
    /// Only the entries of largest magnitude, `per_mille` thousandths of them, as (index,
    /// f32) pairs; what a trainer leaves out it keeps and adds to its next update (error
    /// feedback), so nothing is lost, only delayed.
    TopK {
        /// Share of the entries sent, in thousandths (1 to 1000).
        per_mille: u16,
    },
}

impl Compression {
    /// Whether updates go uncompressed (the default, left out of the run id's bytes so
    /// genesis files written before compression existed keep their run).
    pub fn is_none(&self) -> bool {
        *self == Compression::None
    }

    /// Entries top-k sends of a vector of `len` (at least one).
    pub fn top_k(per_mille: u16, len: usize) -> usize {
        (len * usize::from(per_mille))
            .div_ceil(1000)
            .clamp(1, len.max(1))
    }

    fn check(self) -> Result<(), GenesisError> {
        match self {
            Compression::TopK { per_mille } if per_mille == 0 || per_mille > 1000 => {
                Err(GenesisError::Unsupported(
                    "compression: top_k's per_mille is the share of entries sent, 1 to 1000 \
                     (e.g. 10 sends the largest 1%)",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Consensus timeouts in milliseconds; each grows by its delta per round (views).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsMs {
    /// Wait for a proposal in round 0.
    pub propose: u64,
    /// Added per round.
    pub propose_delta: u64,
    /// Wait after a prevote quorum for any value.
    pub prevote: u64,
    /// Added per round.
    pub prevote_delta: u64,
    /// Wait after a precommit quorum for any value.
    pub precommit: u64,
    /// Added per round.
    pub precommit_delta: u64,
    /// Re-send our last vote this often while stuck (heals lost messages).
    pub rebroadcast: u64,
    /// Cap on any timeout.
    pub max: u64,
}

impl Default for TimeoutsMs {
    fn default() -> Self {
        Self {
            propose: 3000,
            propose_delta: 500,
            prevote: 1000,
            prevote_delta: 500,
            precommit: 1000,
            precommit_delta: 500,
            rebroadcast: 5000,
            max: 60_000,
        }
    }
}

/// Model architectures a run can train.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelArch {
    /// 784-128-10 perceptron.
    Mlp,
    /// Small convolutional network.
    Cnn,
}

/// Optimizers a trainer runs for its local steps (fresh state every round).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalOptimizer {
    /// Plain SGD.
    Sgd,
    /// Adam with burn's defaults.
    Adam,
}

/// How peers train and how rounds are paced: fixed by the run, so updates are comparable.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingRules {
    /// Architecture.
    pub model: ModelArch,
    /// Seed of the initial parameters (their hash is `initial_param_hash`).
    pub seed: u64,
    /// Local optimizer.
    pub optimizer: LocalOptimizer,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Examples per local step.
    pub batch_size: u32,
    /// Local steps per round.
    pub local_steps: u32,
    /// Shards the training set is cut into; each round a trainer gets one.
    pub shards: u32,
    /// Fewest updates a proposer includes.
    pub min_updates: u32,
    /// Longest a proposer waits for updates after a height starts.
    pub round_deadline_ms: u64,
    /// Heights between stored parameter checkpoints.
    pub checkpoint_every: u64,
}

impl Default for TrainingRules {
    fn default() -> Self {
        Self {
            model: ModelArch::Mlp,
            seed: 0,
            optimizer: LocalOptimizer::Sgd,
            learning_rate: 0.1,
            batch_size: 32,
            local_steps: 50,
            shards: 16,
            min_updates: 1,
            round_deadline_ms: 2000,
            checkpoint_every: 10,
        }
    }
}

impl TrainingRules {
    fn check(&self) -> Result<(), GenesisError> {
        let bad = |what: &'static str| Err(GenesisError::Training(what));
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return bad("learning_rate must be in (0, 10]");
        }
        if !(1..=4096).contains(&self.batch_size) {
            return bad("batch_size must be in 1..=4096");
        }
        if !(1..=100_000).contains(&self.local_steps) {
            return bad("local_steps must be in 1..=100000");
        }
        if !(1..=65_536).contains(&self.shards) {
            return bad("shards must be in 1..=65536");
        }
        if self.min_updates == 0 || self.min_updates as usize > crate::context::MAX_UPDATES {
            return bad("min_updates must be in 1..=4096");
        }
        if self.round_deadline_ms == 0 {
            return bad("round_deadline_ms must be positive");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every must be positive");
        }
        Ok(())
    }
}

/// One entry of the stake table as written in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    /// Hex of the 32-byte ed25519 public key.
    pub public_key: String,
    /// Voting power; must be positive.
    pub stake: u64,
}

/// The genesis file as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Format version; this build reads 1.
    pub version: u32,
    /// Human-readable run name.
    pub name: String,
    /// Hex hash of the initial parameters (the base of height 1's proposal).
    pub initial_param_hash: String,
    /// Aggregation rule proposals must use.
    pub aggregation_rule: AggregationRule,
    /// Consensus timeouts.
    #[serde(default)]
    pub timeouts_ms: TimeoutsMs,
    /// Training and round pacing.
    #[serde(default)]
    pub training: TrainingRules,
    /// The stake table.
    pub validators: Vec<ValidatorEntry>,
    /// Training data on the network (absent: every peer reads the dataset from a local file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataFile>,
    /// How updates travel (absent: uncompressed).
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
}

/// Most holders a run may ask for per shard.
pub const MAX_REPLICATION: u32 = 16;

fn default_replication() -> u32 {
    3
}

/// The run's data on the network, as written in the genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Hex ed25519 public key of the data owner, who signs the manifest, grants and
    /// membership certificates.
    pub owner: String,
    /// Who may read the data.
    pub access: AccessFile,
    /// Storage peers that hold each shard (default 3).
    #[serde(default = "default_replication")]
    pub replication: u32,
}

/// Who may read a run's data, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AccessFile {
    /// Anyone: the dataset key is published in the genesis (hex, 32 bytes).
    Open {
        /// The dataset key of every epoch.
        key: String,
    },
    /// Members only: each gets the key in a grant from the owner.
    Closed,
}

/// Who may read a run's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Anyone: the key is public.
    Open {
        /// The dataset key.
        key: [u8; 32],
    },
    /// Members with a grant.
    Closed,
}

/// The run's data on the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPolicy {
    /// The data owner's key.
    pub owner: Address,
    /// Who may read.
    pub access: Access,
    /// Holders per shard.
    pub replication: u32,
}

impl DataPolicy {
    fn from_file(file: &DataFile) -> Result<Self, GenesisError> {
        let owner = Address(parse_hex32("data.owner", &file.owner)?);
        if owner.public_key().is_none() {
            return Err(GenesisError::Data(
                "owner is not a valid ed25519 public key",
            ));
        }
        let access = match &file.access {
            AccessFile::Open { key } => Access::Open {
                key: parse_hex32("data.access.key", key)?,
            },
            AccessFile::Closed => Access::Closed,
        };
        if !(1..=MAX_REPLICATION).contains(&file.replication) {
            return Err(GenesisError::Data("replication must be between 1 and 16"));
        }
        Ok(Self {
            owner,
            access,
            replication: file.replication,
        })
    }

    fn to_file(&self) -> DataFile {
        DataFile {
            owner: hex(&self.owner.0),
            access: match &self.access {
                Access::Open { key } => AccessFile::Open { key: hex(key) },
                Access::Closed => AccessFile::Closed,
            },
            replication: self.replication,
        }
    }
}

/// Why a genesis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// Not valid JSON for this format.
    #[error("genesis is not valid JSON for this format: {0}")]
    Json(String),
    /// An unknown format version.
    #[error("genesis version {0} is not supported (expected 1)")]
    Version(u32),
    /// A hex field is not 64 hex characters.
    #[error("{field}: expected 64 hex characters, got {got:?}")]
    BadHex {
        /// Which field.
        field: String,
        /// What was there.
        got: String,
    },
    /// A public key is not a valid ed25519 point.
    #[error("validator {index}: public key is not a valid ed25519 key")]
    BadKey {
        /// Position in the file.
        index: usize,
    },
    /// The same key twice.
    #[error("validator {index}: duplicate public key {key}")]
    DuplicateKey {
        /// Position of the second occurrence.
        index: usize,
        /// The key, shortened.
        key: String,
    },
    /// A validator with no stake.
    #[error("validator {index}: stake must be positive")]
    ZeroStake {
        /// Position in the file.
        index: usize,
    },
    /// No validators, or no stake.
    #[error("total stake is zero: a run needs at least one staked validator")]
    ZeroTotalStake,
    /// Total stake so large that the 2/3 quorum arithmetic could overflow.
    #[error("total stake overflows (must be at most u64::MAX / 3)")]
    StakeOverflow,
    /// A timeout of zero or a cap below a base timeout.
    #[error("timeouts: {0}")]
    Timeouts(&'static str),
    /// A training rule out of range.
    #[error("training: {0}")]
    Training(&'static str),
    /// The data section is unsound.
    #[error("data: {0}")]
    Data(&'static str),
    /// An option the format names but this build does not implement: accepted, it would
    /// make a run in which no height ever commits.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A validated genesis: what the rest of the crate uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    /// Run name.
    pub name: String,
    /// Initial parameter hash.
    pub initial_param_hash: [u8; 32],
    /// Aggregation rule.
    pub aggregation_rule: AggregationRule,
    /// Timeouts.
    pub timeouts_ms: TimeoutsMs,
    /// Training and round pacing.
    pub training: TrainingRules,
    /// Validators sorted by address, each with positive stake.
    pub validators: Vec<(Address, u64)>,
    /// Training data on the network, if the run keeps it there.
    pub data: Option<DataPolicy>,
    /// How updates travel. Left out of the canonical bytes when none, so the run ids of
    /// genesis files written before compression existed do not change.
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
}

impl Genesis {
    /// Parse and validate a JSON genesis.
    pub fn from_json(text: &str) -> Result<Self, GenesisError> {
        let file: GenesisFile =
            serde_json::from_str(text).map_err(|e| GenesisError::Json(e.to_string()))?;
        Self::from_file(file)
    }

    /// Validate a parsed genesis file.
    pub fn from_file(file: GenesisFile) -> Result<Self, GenesisError> {
        if file.version != 1 {
            return Err(GenesisError::Version(file.version));
        }
        let initial_param_hash = parse_hex32("initial_param_hash", &file.initial_param_hash)?;
        let t = file.timeouts_ms;
        if [t.propose, t.prevote, t.precommit, t.rebroadcast].contains(&0) {
            return Err(GenesisError::Timeouts("base timeouts must be positive"));
        }
        if t.max < t.propose.max(t.prevote).max(t.precommit) {
            return Err(GenesisError::Timeouts("max is below a base timeout"));
        }
        file.training.check()?;
        file.aggregation_rule.check()?;
        file.compression.check()?;
        let mut seen = BTreeSet::new();
        let mut validators = Vec::with_capacity(file.validators.len());
        let mut total: u64 = 0;
        for (index, v) in file.validators.iter().enumerate() {
            let key = parse_hex32(&format!("validators[{index}].public_key"), &v.public_key)?;
            let address = Address(key);
            if address.public_key().is_none() {
                return Err(GenesisError::BadKey { index });
            }
            if !seen.insert(address) {
                return Err(GenesisError::DuplicateKey {
                    index,
                    key: address.to_string(),
                });
            }
            if v.stake == 0 {
                return Err(GenesisError::ZeroStake { index });
            }
            total = total
                .checked_add(v.stake)
                .ok_or(GenesisError::StakeOverflow)?;
            validators.push((address, v.stake));
        }
        if total == 0 {
            return Err(GenesisError::ZeroTotalStake);
        }
        if total > u64::MAX / 3 {
            return Err(GenesisError::StakeOverflow);
        }
        validators.sort();
        let data = file.data.as_ref().map(DataPolicy::from_file).transpose()?;
        Ok(Self {
            name: file.name,
            initial_param_hash,
            aggregation_rule: file.aggregation_rule,
            timeouts_ms: t,
            training: file.training,
            validators,
            data,
            compression: file.compression,
        })
    }

    /// The file form of this genesis (validators in canonical order).
    pub fn to_file(&self) -> GenesisFile {
        GenesisFile {
            version: 1,
            name: self.name.clone(),
            initial_param_hash: hex(&self.initial_param_hash),
            aggregation_rule: self.aggregation_rule,
            timeouts_ms: self.timeouts_ms,
            training: self.training,
            validators: self
                .validators
                .iter()
                .map(|(a, stake)| ValidatorEntry {
                    public_key: hex(&a.0),
                    stake: *stake,
                })
                .collect(),
            data: self.data.as_ref().map(DataPolicy::to_file),
            compression: self.compression,
        }
    }

    /// JSON text of this genesis.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_file()).unwrap_or_default()
    }

    /// The run id: hash of the canonical genesis.
    pub fn run_id(&self) -> RunId {
        let mut h = Sha256::new();
        h.update(b"tabswarm/genesis/v1\0");
        h.update(codec::canonical(self));
        RunId(h.finalize().into())
    }

    /// Sum of stake.
    pub fn total_stake(&self) -> u64 {
        self.validators.iter().map(|(_, s)| s).sum()
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(field: &str, s: &str) -> Result<[u8; 32], GenesisError> {
    unhex32(s).ok_or_else(|| GenesisError::BadHex {
        field: field.to_owned(),
        got: s.chars().take(80).collect(),
    })
}

/// The 32 bytes of 64 hex characters (inverse of [`hex`]), or `None`.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn file(stakes: &[u64]) -> GenesisFile {
        GenesisFile {
            data: None,
            compression: Compression::None,
            version: 1,
            name: "t".into(),
            initial_param_hash: hex(&[7; 32]),
            aggregation_rule: AggregationRule::Mean,
            timeouts_ms: TimeoutsMs::default(),
            training: TrainingRules::default(),
            validators: stakes
                .iter()
                .enumerate()
                .map(|(i, &stake)| ValidatorEntry {
                    public_key: hex(&Keypair::from_seed([i as u8 + 1; 32]).address().0),
                    stake,
                })
                .collect(),
        }
    }

    #[test]
    fn compression_reads_as_documented_changes_the_run_only_when_set_and_is_checked() {
        let plain = Genesis::from_file(file(&[1])).unwrap();
        for (json, want) in [
            (r#""none""#, Compression::None),
            (r#""int8""#, Compression::Int8),
            (
                r#"{"top_k": {"per_mille": 10}}"#,
                Compression::TopK { per_mille: 10 },
            ),
        ] {
            let c: Compression = serde_json::from_str(json).expect(json);
            assert_eq!(c, want);
            let mut f = file(&[1]);
            f.compression = c;
            let g = Genesis::from_file(f).unwrap();
            assert_eq!(g.compression, want);
            assert_eq!(Genesis::from_json(&g.to_json()).unwrap(), g);
            // The default leaves the run id (and its JSON) as before compression existed.
            assert_eq!(g.run_id() == plain.run_id(), want.is_none(), "{json}");
        }
        assert!(!plain.to_json().contains("compression"));
        for per_mille in [0, 1001] {
            let mut f = file(&[1]);
            f.compression = Compression::TopK { per_mille };
            let err = Genesis::from_file(f).unwrap_err().to_string();
            assert!(err.contains("1 to 1000"), "{err}");
        }
        assert_eq!(Compression::top_k(10, 1000), 10);
        assert_eq!(Compression::top_k(1, 10), 1, "at least one entry");
        assert_eq!(Compression::top_k(1000, 7), 7);
    }

    #[test]
    fn a_data_section_round_trips_changes_the_run_and_is_checked() {
        let owner = hex(&Keypair::from_seed([9; 32]).address().0);
        let plain = Genesis::from_file(file(&[1])).unwrap();
        let mut f = file(&[1]);
        f.data = Some(DataFile {
            owner: owner.clone(),
            access: AccessFile::Closed,
            replication: 3,
        });
        let closed = Genesis::from_file(f.clone()).unwrap();
        assert_eq!(closed.data.as_ref().unwrap().access, Access::Closed);
        assert_ne!(closed.run_id(), plain.run_id());
        assert_eq!(Genesis::from_json(&closed.to_json()).unwrap(), closed);
        let json = r#"{"owner":"OWNER","access":{"kind":"open","key":"KEY"}}"#
            .replace("OWNER", &owner)
            .replace("KEY", &hex(&[4; 32]));
        f.data = Some(serde_json::from_str(&json).unwrap());
        let open = Genesis::from_file(f.clone()).unwrap();
        let data = open.data.unwrap();
        assert_eq!(data.access, Access::Open { key: [4; 32] });
        assert_eq!(data.replication, 3, "the default");
        for (replication, ok) in [(0, false), (1, true), (MAX_REPLICATION, true), (17, false)] {
            f.data.as_mut().unwrap().replication = replication;
            assert_eq!(Genesis::from_file(f.clone()).is_ok(), ok, "{replication}");
        }
        f.data.as_mut().unwrap().replication = 3;
        f.data.as_mut().unwrap().owner = "zz".into();
        let err = Genesis::from_file(f).unwrap_err().to_string();
        assert!(err.contains("data.owner"), "{err}");
    }

    #[test]
    fn every_aggregation_rule_is_accepted_with_sound_parameters_and_refused_without() {
        for rule in [
            AggregationRule::Mean,
            AggregationRule::Median,
            AggregationRule::TrimmedMean { trim_per_mille: 0 },
            AggregationRule::TrimmedMean {
                trim_per_mille: 499,
            },
            AggregationRule::CenteredClip { iterations: 1 },
            AggregationRule::CenteredClip {
                iterations: MAX_CLIP_ITERATIONS,
            },
        ] {
            let mut f = file(&[1, 1]);
            f.aggregation_rule = rule;
            let g = Genesis::from_file(f).expect("accepted");
            assert_eq!(g.aggregation_rule, rule);
        }
        for (rule, says) in [
            (
                AggregationRule::TrimmedMean {
                    trim_per_mille: 500,
                },
                "below 500",
            ),
            (AggregationRule::CenteredClip { iterations: 0 }, "1 to 10"),
            (AggregationRule::CenteredClip { iterations: 11 }, "1 to 10"),
        ] {
            let mut f = file(&[1, 1]);
            f.aggregation_rule = rule;
            let err = Genesis::from_file(f).expect_err("refused");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn aggregation_rules_read_from_json_as_documented() {
        for (json, rule) in [
            (r#""median""#, AggregationRule::Median),
            (
                r#"{"trimmed_mean": {"trim_per_mille": 200}}"#,
                AggregationRule::TrimmedMean {
                    trim_per_mille: 200,
                },
            ),
            (
                r#"{"centered_clip": {"iterations": 3}}"#,
                AggregationRule::CenteredClip { iterations: 3 },
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<AggregationRule>(json).expect(json),
                rule
            );
        }
    }

    #[test]
    fn json_round_trip_keeps_run_id_and_order_does_not_matter() {
        let g = Genesis::from_file(file(&[1, 2, 3])).expect("valid");
        let again = Genesis::from_json(&g.to_json()).expect("valid");
        assert_eq!(g.run_id(), again.run_id());
        let mut reordered = file(&[1, 2, 3]);
        reordered.validators.reverse();
        assert_eq!(
            Genesis::from_file(reordered).expect("valid").run_id(),
            g.run_id()
        );
        let mut other = file(&[1, 2, 4]);
        other.name = "t".into();
        assert_ne!(
            Genesis::from_file(other).expect("valid").run_id(),
            g.run_id()
        );
    }

    #[test]
    fn training_rules_are_checked_and_change_the_run() {
        let base = Genesis::from_file(file(&[1])).expect("valid");
        let mut f = file(&[1]);
        f.training.local_steps = 7;
        let other = Genesis::from_file(f).expect("valid");
        assert_ne!(
            base.run_id(),
            other.run_id(),
            "training rules are part of the run"
        );
        for (change, needle) in [
            (
                TrainingRules {
                    learning_rate: 0.0,
                    ..TrainingRules::default()
                },
                "learning_rate",
            ),
            (
                TrainingRules {
                    learning_rate: f64::NAN,
                    ..TrainingRules::default()
                },
                "learning_rate",
            ),
            (
                TrainingRules {
                    batch_size: 0,
                    ..TrainingRules::default()
                },
                "batch_size",
            ),
            (
                TrainingRules {
                    shards: 0,
                    ..TrainingRules::default()
                },
                "shards",
            ),
            (
                TrainingRules {
                    min_updates: 0,
                    ..TrainingRules::default()
                },
                "min_updates",
            ),
            (
                TrainingRules {
                    checkpoint_every: 0,
                    ..TrainingRules::default()
                },
                "checkpoint_every",
            ),
        ] {
            let mut f = file(&[1]);
            f.training = change;
            let err = Genesis::from_file(f).expect_err("invalid").to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = Genesis::from_json(&base.to_json().replace("\"local_steps\"", "\"local_stepz\""))
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("local_stepz"), "{err}");
    }

    #[test]
    fn rejections_say_why() {
        let mut dup = file(&[1, 1]);
        dup.validators[1].public_key = dup.validators[0].public_key.clone();
        assert!(matches!(
            Genesis::from_file(dup),
            Err(GenesisError::DuplicateKey { index: 1, .. })
        ));
        assert_eq!(
            Genesis::from_file(file(&[])),
            Err(GenesisError::ZeroTotalStake)
        );
        assert_eq!(
            Genesis::from_file(file(&[1, 0])),
            Err(GenesisError::ZeroStake { index: 1 })
        );
        assert_eq!(
            Genesis::from_file(file(&[u64::MAX / 2, u64::MAX / 2])),
            Err(GenesisError::StakeOverflow)
        );
        let mut bad = file(&[1]);
        bad.validators[0].public_key = "zz".into();
        assert!(matches!(
            Genesis::from_file(bad),
            Err(GenesisError::BadHex { .. })
        ));
        let mut v2 = file(&[1]);
        v2.version = 2;
        assert_eq!(Genesis::from_file(v2), Err(GenesisError::Version(2)));
        assert!(matches!(
            Genesis::from_json("{\"version\": 1}"),
            Err(GenesisError::Json(_))
        ));
        // A point that does not decompress is refused as a key.
        let bytes = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| Address(*k).public_key().is_none())
            .expect("some 32-byte strings are not curve points");
        let mut not_point = file(&[1]);
        not_point.validators[0].public_key = hex(&bytes);
        assert_eq!(
            Genesis::from_file(not_point),
            Err(GenesisError::BadKey { index: 0 })
        );
    }
}
