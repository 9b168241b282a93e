//! The run's training data on the network (DESIGN.md, "Data"): which shards this peer holds,
//! wants and serves, the newest signed manifest, the dataset key, and the grants storage
//! peers hand out.
//!
//! Storage peers gossip what they hold ([`Holdings`], every [`HOLDINGS_EVERY_MS`]); a claim
//! not renewed within [`HOLDINGS_TTL_MS`] no longer counts, so a holder that went away stops
//! counting within that time. Each shard has `replication` holders: the storage peers ranked
//! first for it by a hash of (shard address, peer address) among those alive, so every peer
//! computes the same holders without talking, and when a holder goes away the next in rank
//! fetches the shard (repair). Readers (trainers, validators) fetch the validation and test
//! shards and some training shards from whoever holds them. Shards move as chunked blobs
//! through [`crate::fetch`]: each chunk is hash-checked, a holder serving bad bytes gets a
//! strike and the chunk is asked of another holder.
//!
//! Pure state: the [`crate::Peer`] calls it with what arrived and carries out what it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tabswarm_consensus::genesis::{Access, DataPolicy, RunId, TrainingRules};
use tabswarm_consensus::identity::Address;
use tabswarm_core::data::Dataset;
use tabswarm_core::vault::{
    DatasetKey, Grant, Manifest, MemberSecret, Part, ShardError, SignedManifest,
};

use crate::fetch::Blob;
use crate::jobs::{DataPlan, PlanError};
use crate::wire::{MAX_GRANTS_PER_RESPONSE, Request, Response};

/// How often a storage peer says what it holds.
pub const HOLDINGS_EVERY_MS: u64 = 5_000;
/// A holdings claim counts this long after it was last heard (three announcements).
pub const HOLDINGS_TTL_MS: u64 = 3 * HOLDINGS_EVERY_MS + 1_000;
/// How long a storage peer listens to holdings before it decides what to hold (it must have
/// heard every live storage peer once).
pub const SETTLE_MS: u64 = 2 * HOLDINGS_EVERY_MS + 1_000;
/// Fewest milliseconds between two holdings announcements.
pub const MIN_PUBLISH_GAP_MS: u64 = 1_000;
/// How often a storage peer checks one other storage peer's claim (a chunk of a shard both
/// claim to hold).
pub const AUDIT_EVERY_MS: u64 = 2_000;
/// An audit unanswered this long has failed.
pub const AUDIT_TIMEOUT_MS: u64 = 8_000;
/// A passed audit vouches for a peer this long.
pub const VERIFIED_MS: u64 = 60_000;
/// Failed audits in a row that exclude a peer from the ranking, and for how long.
pub const AUDIT_STRIKES: u32 = 2;
/// See [`AUDIT_STRIKES`].
pub const EXCLUDED_MS: u64 = 120_000;
/// How long to wait before asking again for a manifest or a grant.
pub const ASK_AGAIN_MS: u64 = 3_000;
/// The largest holdings message: version, epoch, address, grant count, one bit per shard.
pub const MAX_HOLDINGS_BYTES: usize = 64 + tabswarm_core::vault::MAX_SHARDS / 8;
/// Most grants a peer keeps for serving (a grant is ~250 bytes).
pub const MAX_GRANTS: usize = 100_000;
const HOLDINGS_VERSION: u8 = 1;

/// What a storage peer holds, gossiped on [`crate::wire::Topic::Data`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// The manifest epoch the bitmap is about.
    pub epoch: u64,
    /// The storage peer's consensus address (ranks it among storage peers).
    pub address: [u8; 32],
    /// Grants of that epoch it can serve.
    pub grants: u32,
    /// Bit `i` set: holds shard `i`.
    pub shards: ByteBuf,
    /// The publisher's clock when it said so: every announcement is new content, so gossip's
    /// duplicate filter (content and time window) never swallows a renewal.
    pub at_ms: u64,
}

impl Holdings {
    /// Version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![HOLDINGS_VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Inverse of [`Self::encode`], refusing oversize bytes and unknown versions.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_HOLDINGS_BYTES || bytes.first() != Some(&HOLDINGS_VERSION) {
            return None;
        }
        postcard::from_bytes(&bytes[1..]).ok()
    }

    fn holds(&self, index: u32) -> bool {
        let i = index as usize;
        self.shards
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

/// What the peer must do for the data layer: a record to persist, a question to ask, a
/// shard to fetch, something to report.
#[derive(Debug)]
pub enum Action<P> {
    /// Make durable.
    Persist(DataRecord),
    /// Ask `to`.
    Ask(P, Request),
    /// Fetch the blob at `address` (shard `index`) from any of `holders`.
    Fetch {
        /// Shard index.
        index: u32,
        /// Its address.
        address: [u8; 32],
        /// Who claims to hold it.
        holders: Vec<P>,
    },
    /// Gossip these holdings.
    Publish(Vec<u8>),
    /// The peer sent provably bad data.
    Penalise(P),
    /// For logs and metrics.
    Event(DataEvent),
}

/// Something to keep across restarts.
#[derive(Debug, Clone)]
pub enum DataRecord {
    /// A verified signed manifest (replaces older epochs).
    Manifest(Vec<u8>),
    /// A verified grant of the manifest's epoch.
    Grant {
        /// The epoch.
        epoch: u64,
        /// Encoded grant.
        bytes: Vec<u8>,
    },
    /// Shard bytes, checked against the manifest.
    Shard {
        /// The manifest's epoch.
        epoch: u64,
        /// Its address (a file name).
        address: [u8; 32],
        /// Bytes.
        bytes: Arc<Vec<u8>>,
    },
    /// A shard this peer no longer holds (others ranked before it hold it).
    Forget {
        /// The manifest's epoch.
        epoch: u64,
        /// Its address.
        address: [u8; 32],
    },
    /// Shards, grants and manifests of epochs before `epoch` are no longer needed.
    Prune {
        /// The epoch kept.
        epoch: u64,
    },
}

/// What happened to the data, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// A newer manifest was verified and adopted.
    Manifest {
        /// Its epoch.
        epoch: u64,
        /// Shards it lists.
        shards: usize,
    },
    /// We got the dataset key of an epoch (from a grant, or the genesis of an open run).
    Key {
        /// Epoch.
        epoch: u64,
    },
    /// A shard arrived (or was restored) and checked out.
    Stored {
        /// Shard index.
        index: u32,
        /// Whether it came from the driver's store at start, not from the network.
        restored: bool,
    },
    /// Restored bytes did not match the manifest (damaged on disk): dropped, fetched again.
    Damaged {
        /// Shard index.
        index: u32,
    },
    /// A shard matched its address but would not decrypt or decode.
    Unreadable {
        /// Shard index.
        index: u32,
        /// Why.
        reason: String,
    },
    /// Every shard this peer needs to train and score is here.
    Ready {
        /// Training shards held.
        train: usize,
    },
}

/// What a peer does with the run's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataUses {
    /// Hold shards for others (storage role).
    pub store: bool,
    /// Read shards for our own training, scoring and testing.
    pub read: bool,
    /// Most training shards to read (0: all).
    pub max_train: u32,
    /// Keep every grant (validators: the grants of a closed run say who its members are).
    pub all_grants: bool,
}

/// The data state of one peer.
#[derive(Debug)]
pub struct DataState<P> {
    policy: DataPolicy,
    owner: VerifyingKey,
    run: RunId,
    me: Address,
    member: MemberSecret,
    store: bool,
    read: bool,
    all_grants: bool,
    max_train: usize,
    manifest: Option<(Vec<u8>, Manifest)>,
    /// Shard index by address (chunk requests name the address; a scan per request would
    /// let any peer make us walk 65,536 entries per chunk it asks for).
    by_address: HashMap<[u8; 32], u32>,
    key: Option<DatasetKey>,
    grants: BTreeMap<[u8; 32], Vec<u8>>,
    held: BTreeMap<u32, Arc<Blob>>,
    opened: BTreeMap<u32, Arc<Dataset>>,
    holders: HashMap<P, (Holdings, u64)>,
    last_published_ms: Option<u64>,
    changed: bool,
    asked_manifest_ms: Option<u64>,
    asked_grant_ms: Option<u64>,
    asked_grants_ms: Option<u64>,
    plan_train: usize,
    manifest_at_ms: Option<u64>,
    /// Where the next page of a peer's grants starts (grants come in member order; ours may
    /// sit anywhere in it, so our count is not a position).
    grants_cursor: u32,
    /// The grants (so the members) changed since [`Self::take_members_changed`].
    members_changed: bool,
    /// What we know of other storage peers' claims (storage peers audit each other).
    audits: HashMap<P, Audit>,
    last_audit_ms: Option<u64>,
}

/// Audits of one storage peer's claims.
#[derive(Debug, Default)]
struct Audit {
    /// Passed an audit; trusted until then.
    verified_until: u64,
    /// Failed audits in a row.
    strikes: u32,
    /// Left out of the ranking until then.
    excluded_until: u64,
    /// The chunk asked for: (shard, chunk, when).
    pending: Option<(u32, u32, u64)>,
}

impl<P: Clone + Eq + Hash + Ord> DataState<P> {
    /// A peer's data state for `policy`. `identity` is the 32-byte secret the member key
    /// derives from.
    pub fn new(
        policy: DataPolicy,
        run: RunId,
        me: Address,
        identity: &[u8; 32],
        uses: DataUses,
    ) -> Option<Self> {
        let DataUses {
            store,
            read,
            max_train,
            all_grants,
        } = uses;
        let owner = policy.owner.public_key()?;
        // The owner serves its own data whatever its roles say: until storage peers have
        // copies it is the only holder, and it keeps everything (a node run as a trainer only
        // would otherwise hold the shards without saying so, and nobody could fetch them).
        let store = store || policy.owner == me;
        Some(Self {
            policy,
            owner,
            run,
            me,
            member: MemberSecret::derive(identity),
            store,
            read,
            all_grants: store || all_grants,
            max_train: max_train as usize,
            manifest: None,
            by_address: HashMap::new(),
            key: None,
            grants: BTreeMap::new(),
            held: BTreeMap::new(),
            opened: BTreeMap::new(),
            holders: HashMap::new(),
            last_published_ms: None,
            changed: true,
            asked_manifest_ms: None,
            asked_grant_ms: None,
            asked_grants_ms: None,
            plan_train: 0,
            manifest_at_ms: None,
            grants_cursor: 0,
            members_changed: true,
            audits: HashMap::new(),
            last_audit_ms: None,
        })
    }

    /// Takes stored records back: the newest manifest that verifies, its grants, and the
    /// shards that match it, each stored under its address (bytes that no longer hash to
    /// their address were damaged on disk: reported, dropped and fetched again).
    pub fn restore(
        &mut self,
        manifests: Vec<Vec<u8>>,
        grants: Vec<Vec<u8>>,
        shards: Vec<([u8; 32], Vec<u8>)>,
    ) -> Vec<Action<P>> {
        let mut out = Vec::new();
        for bytes in manifests {
            self.adopt_manifest(bytes, &mut out, false);
        }
        for bytes in grants {
            self.adopt_grant(&bytes, &mut out, false);
        }
        for (name, bytes) in shards {
            let Some(&index) = self.by_address.get(&name) else {
                continue;
            };
            let (blob, address) = Blob::new(bytes);
            if address == name {
                self.take_shard(index, blob, &mut out, false);
            } else {
                out.push(Action::Event(DataEvent::Damaged { index }));
            }
        }
        out
    }

    /// The verified manifest, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref().map(|(_, m)| m)
    }

    /// The members of the manifest's epoch: whoever holds a grant for it (only complete
    /// when this peer keeps every grant).
    pub fn members(&self) -> BTreeSet<Address> {
        self.grants.keys().map(|k| Address(*k)).collect()
    }

    /// Whether the members changed since the last call (so callers rebuild their list only
    /// then, not on every tick).
    pub fn take_members_changed(&mut self) -> bool {
        std::mem::take(&mut self.members_changed)
    }

    /// Whether the run is closed to members.
    pub fn closed(&self) -> bool {
        self.policy.access == Access::Closed
    }

    /// Whether we hold the key of the manifest's epoch.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Shards held, by index.
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }

    /// Whether we hold shard bytes at blob `address`.
    pub fn blob(&self, address: &[u8; 32]) -> Option<&Arc<Blob>> {
        self.held.get(self.by_address.get(address)?)
    }

    /// Storage peers alive that claim shard `index` (ourselves included).
    pub fn holder_count(&self, index: u32, now_ms: u64) -> usize {
        let epoch = self.epoch();
        let others = self
            .alive(now_ms)
            .filter(|(_, h)| h.epoch == epoch && h.holds(index))
            .count();
        others + usize::from(self.store && self.held.contains_key(&index))
    }

    fn epoch(&self) -> u64 {
        self.manifest.as_ref().map_or(0, |(_, m)| m.epoch)
    }

    /// Storage peers whose claim is fresh and who have not failed their audits.
    fn alive(&self, now_ms: u64) -> impl Iterator<Item = (&P, &Holdings)> {
        self.holders
            .iter()
            .filter(move |(_, (_, at))| now_ms.saturating_sub(*at) < HOLDINGS_TTL_MS)
            .filter(move |(p, _)| {
                self.audits
                    .get(*p)
                    .is_none_or(|a| a.excluded_until <= now_ms)
            })
            .map(|(p, (h, _))| (p, h))
    }

    fn verified(&self, address: &[u8; 32], now_ms: u64) -> bool {
        self.alive(now_ms).any(|(p, h)| {
            &h.address == address
                && self
                    .audits
                    .get(p)
                    .is_some_and(|a| a.verified_until > now_ms)
        })
    }

    /// Storage peers left out of the ranking for failing audits.
    pub fn excluded(&self, now_ms: u64) -> usize {
        self.audits
            .values()
            .filter(|a| a.excluded_until > now_ms)
            .count()
    }

    /// Asks one storage peer for a chunk of a shard we both claim to hold, now and then:
    /// claims are free, and a peer claiming shards it does not hold would otherwise keep its
    /// slots in the ranking (no repair) and talk honest holders out of their copies.
    fn audit(&mut self, now_ms: u64, out: &mut Vec<Action<P>>) {
        if !self.store || !self.settled(now_ms) {
            return;
        }
        let late: Vec<P> = self
            .audits
            .iter()
            .filter(|(_, a)| {
                a.pending
                    .is_some_and(|(_, _, at)| now_ms.saturating_sub(at) >= AUDIT_TIMEOUT_MS)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in late {
            self.audit_failed(&p, now_ms);
        }
        if self
            .last_audit_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < AUDIT_EVERY_MS)
        {
            return;
        }
        let Some((_, m)) = &self.manifest else {
            return;
        };
        let epoch = m.epoch;
        // The least recently vouched-for peer that claims a shard we hold.
        let candidate = self
            .alive(now_ms)
            .filter(|(_, h)| h.epoch == epoch)
            .filter(|(p, _)| self.audits.get(*p).is_none_or(|a| a.pending.is_none()))
            .filter_map(|(p, h)| {
                let shard = self.held.keys().copied().find(|&i| h.holds(i))?;
                let since = self.audits.get(p).map_or(0, |a| a.verified_until);
                Some((since, p.clone(), shard))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let Some((_, peer, shard)) = candidate else {
            return;
        };
        let Some(blob) = self.held.get(&shard) else {
            return;
        };
        let chunks = blob.manifest.chunks.len().max(1) as u64;
        let chunk = (now_ms / AUDIT_EVERY_MS % chunks) as u32;
        let address = blob.manifest.hash();
        self.last_audit_ms = Some(now_ms);
        self.audits.entry(peer.clone()).or_default().pending = Some((shard, chunk, now_ms));
        out.push(Action::Ask(
            peer,
            Request::Chunk {
                address,
                index: chunk,
            },
        ));
    }

    /// The answer to an audit (`None`: refused or failed).
    pub fn on_audit(&mut self, from: &P, chunk: Option<&[u8]>, now_ms: u64) {
        let Some((shard, index, _)) = self.audits.get_mut(from).and_then(|a| a.pending.take())
        else {
            return;
        };
        let right = self.held.get(&shard).is_some_and(|blob| {
            blob.manifest
                .range(index as usize)
                .is_ok_and(|r| chunk == Some(&blob.bytes[r]))
        });
        if right {
            if let Some(a) = self.audits.get_mut(from) {
                a.verified_until = now_ms + VERIFIED_MS;
                a.strikes = 0;
            }
        } else {
            self.audit_failed(from, now_ms);
        }
    }

    fn audit_failed(&mut self, peer: &P, now_ms: u64) {
        let a = self.audits.entry(peer.clone()).or_default();
        a.pending = None;
        a.verified_until = 0;
        a.strikes += 1;
        if a.strikes >= AUDIT_STRIKES {
            a.strikes = 0;
            a.excluded_until = now_ms + EXCLUDED_MS;
            self.changed = true;
        }
    }

    /// Answers the data requests; `None` for other requests.
    pub fn answer(&self, request: &Request) -> Option<Response> {
        Some(match request {
            Request::DataManifest => self.manifest.as_ref().map_or(Response::NotFound, |(b, _)| {
                Response::DataManifest(ByteBuf::from(b.clone()))
            }),
            Request::Grant { member } => self.grants.get(member).map_or(Response::NotFound, |g| {
                Response::Grant(ByteBuf::from(g.clone()))
            }),
            Request::Grants { skip } => Response::Grants(
                self.grants
                    .values()
                    .skip(*skip as usize)
                    .take(MAX_GRANTS_PER_RESPONSE)
                    .map(|g| ByteBuf::from(g.clone()))
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// A holdings message from its publisher. `false`: malformed (reject it).
    pub fn on_holdings(&mut self, publisher: P, bytes: &[u8], now_ms: u64) -> bool {
        let Some(h) = Holdings::decode(bytes) else {
            return false;
        };
        // Claims in our name are not about us: we know what we hold.
        if h.address != self.me.0 {
            // A storage peer we did not know: say what we hold soon, so it learns of us
            // without waiting for our next round (peers that start together settle faster).
            if self.store && !self.holders.contains_key(&publisher) {
                self.changed = true;
            }
            self.holders.insert(publisher, (h, now_ms));
        }
        true
    }

    /// A manifest from `from`.
    pub fn on_manifest(&mut self, from: P, bytes: Vec<u8>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.asked_manifest_ms = None;
        if !self.adopt_manifest(bytes, &mut out, true) {
            out.push(Action::Penalise(from));
        }
        out
    }

    /// A page of a peer's grants (answering [`Request::Grants`]).
    pub fn on_grant_page(&mut self, from: P, grants: Vec<ByteBuf>) -> Vec<Action<P>> {
        let n = grants.len();
        self.grants_cursor = if n < MAX_GRANTS_PER_RESPONSE {
            0
        } else {
            self.grants_cursor.saturating_add(n as u32)
        };
        self.on_grants(from, grants)
    }

    /// Grants (ours or, for peers that keep them all, anyone's) from `from`.
    pub fn on_grants(&mut self, from: P, grants: Vec<ByteBuf>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.asked_grant_ms = None;
        self.asked_grants_ms = None;
        for g in grants {
            if !self.adopt_grant(&g, &mut out, true) {
                out.push(Action::Penalise(from));
                break;
            }
        }
        out
    }

    fn adopt_manifest(&mut self, bytes: Vec<u8>, out: &mut Vec<Action<P>>, persist: bool) -> bool {
        let Ok(signed) = SignedManifest::decode(&bytes) else {
            return false;
        };
        let Ok(manifest) = signed.verify(&self.owner, &self.run.0) else {
            return false;
        };
        if manifest.layout.train == 0 || manifest.layout.validation == 0 {
            // The owner signed a manifest no run can use: nothing to adopt, nobody to blame.
            return true;
        }
        if manifest.epoch <= self.epoch() {
            return true;
        }
        let manifest = manifest.clone();
        out.push(Action::Event(DataEvent::Manifest {
            epoch: manifest.epoch,
            shards: manifest.shards.len(),
        }));
        if persist {
            out.push(Action::Persist(DataRecord::Manifest(bytes.clone())));
            out.push(Action::Persist(DataRecord::Prune {
                epoch: manifest.epoch,
            }));
        }
        // A new epoch is a new key and newly sealed shards: nothing of the old one is of use.
        self.held.clear();
        self.opened.clear();
        self.grants.clear();
        self.members_changed = true;
        self.key = match self.policy.access {
            Access::Open { key } => {
                out.push(Action::Event(DataEvent::Key {
                    epoch: manifest.epoch,
                }));
                Some(DatasetKey::from_bytes(self.run.0, manifest.epoch, key))
            }
            Access::Closed => None,
        };
        self.plan_train = 0;
        self.manifest_at_ms = None;
        self.grants_cursor = 0;
        self.audits.clear();
        self.by_address = manifest
            .shards
            .iter()
            .enumerate()
            .map(|(i, e)| (e.address, i as u32))
            .collect();
        self.manifest = Some((bytes, manifest));
        self.changed = true;
        true
    }

    fn adopt_grant(&mut self, bytes: &[u8], out: &mut Vec<Action<P>>, persist: bool) -> bool {
        let Ok(grant) = Grant::decode(bytes) else {
            return false;
        };
        let Ok(body) = grant.verify(&self.owner, &self.run.0) else {
            return false;
        };
        let epoch = self.epoch();
        if body.epoch != epoch {
            // Another epoch's grant: stale or early, not a lie.
            return true;
        }
        let member = body.member;
        let new = !self.grants.contains_key(&member);
        if member == self.me.0 && self.key.is_none() {
            match grant.open(&self.owner, &self.run.0, &self.member) {
                Ok(key) if key.epoch() == epoch => {
                    out.push(Action::Event(DataEvent::Key { epoch }));
                    self.key = Some(key);
                    self.reopen(out);
                }
                _ => return false,
            }
        }
        if new && (self.all_grants || member == self.me.0) && self.grants.len() < MAX_GRANTS {
            self.grants.insert(member, bytes.to_vec());
            self.members_changed = true;
            self.changed = true;
            if persist {
                out.push(Action::Persist(DataRecord::Grant {
                    epoch,
                    bytes: bytes.to_vec(),
                }));
            }
        }
        true
    }

    /// Decrypts what we hold once the key arrives.
    fn reopen(&mut self, out: &mut Vec<Action<P>>) {
        let held: Vec<(u32, Arc<Blob>)> = self.held.iter().map(|(i, b)| (*i, b.clone())).collect();
        for (index, blob) in held {
            self.open(index, &blob, out);
        }
    }

    fn open(&mut self, index: u32, blob: &Blob, out: &mut Vec<Action<P>>) {
        let (Some((_, manifest)), Some(key)) = (&self.manifest, &self.key) else {
            return;
        };
        if self.opened.contains_key(&index) {
            return;
        }
        match manifest.open_shard(index, &blob.bytes, key) {
            Ok(data) => {
                self.opened.insert(index, Arc::new(data));
            }
            Err(e) => out.push(Action::Event(DataEvent::Unreadable {
                index,
                reason: e.to_string(),
            })),
        }
    }

    /// A fetched shard blob (its address was checked by the fetcher).
    pub fn on_shard(&mut self, index: u32, blob: Arc<Blob>) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.take_shard(index, blob, &mut out, true);
        out
    }

    fn take_shard(&mut self, index: u32, blob: Arc<Blob>, out: &mut Vec<Action<P>>, persist: bool) {
        let Some((_, manifest)) = &self.manifest else {
            return;
        };
        let Some(entry) = manifest.shards.get(index as usize) else {
            return;
        };
        if blob.manifest.hash() != entry.address || self.held.contains_key(&index) {
            return;
        }
        if persist {
            out.push(Action::Persist(DataRecord::Shard {
                epoch: manifest.epoch,
                address: entry.address,
                bytes: Arc::new(blob.bytes.clone()),
            }));
        }
        out.push(Action::Event(DataEvent::Stored {
            index,
            restored: !persist,
        }));
        self.open(index, &blob, out);
        self.held.insert(index, blob);
        self.changed = true;
    }

    /// Shards this peer wants, in the order it fetches them: what a reader needs (validation,
    /// test, then its own training shards), then what it stores for others.
    fn wanted(&self) -> Vec<u32> {
        let Some((_, m)) = &self.manifest else {
            return Vec::new();
        };
        if !self.read {
            return Vec::new();
        }
        let mut out: Vec<u32> = (0..m.shards.len() as u32)
            .filter(|&i| matches!(m.layout.part(i), Some(Part::Validation | Part::Test)))
            .collect();
        let mut train: Vec<u32> = (0..m.layout.train).collect();
        // Each reader starts on different training shards, so a thousand new tabs do not
        // all ask for shard 0.
        train.sort_by_key(|&i| rank(&m.shards[i as usize].address, &self.me.0));
        let take = if self.max_train == 0 {
            train.len()
        } else {
            self.max_train
        };
        out.extend(train.into_iter().take(take));
        out
    }

    /// The live storage peers of our epoch and ourselves (what shards are ranked among),
    /// gathered once per decision rather than once per shard.
    fn storage_peers(&self, now_ms: u64) -> Vec<[u8; 32]> {
        let epoch = self.epoch();
        let mut peers: BTreeSet<[u8; 32]> = self
            .alive(now_ms)
            .filter(|(_, h)| h.epoch == epoch)
            .map(|(_, h)| h.address)
            .collect();
        if self.store {
            peers.insert(self.me.0);
        }
        peers.into_iter().collect()
    }

    /// The storage peers ranked first for shard `index` (at most `replication`) among
    /// `peers` ([`Self::storage_peers`]).
    fn ranked_in(&self, index: u32, peers: &[[u8; 32]]) -> Vec<[u8; 32]> {
        let Some((_, m)) = &self.manifest else {
            return Vec::new();
        };
        let address = &m.shards[index as usize].address;
        let mut ranked = peers.to_vec();
        ranked.sort_by_key(|p| rank(address, p));
        ranked.truncate(self.policy.replication as usize);
        ranked
    }

    /// Whether a storage peer has heard every live storage peer by now: until then it does
    /// not know its rank, and fetching every shard at start would over-replicate for good.
    fn settled(&self, now_ms: u64) -> bool {
        self.manifest_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= SETTLE_MS)
    }

    /// Shards a storage peer should hold: those it ranks among the first `replication` of the
    /// live storage peers for. Holders that went away drop out of the ranking when their
    /// claim expires, so the next in rank takes their place: that is the repair.
    fn responsible(&self, now_ms: u64) -> Vec<u32> {
        let Some((_, m)) = &self.manifest else {
            return Vec::new();
        };
        if !self.store || !self.settled(now_ms) {
            return Vec::new();
        }
        let peers = self.storage_peers(now_ms);
        (0..m.shards.len() as u32)
            .filter(|&i| self.ranked_in(i, &peers).contains(&self.me.0))
            .collect()
    }

    /// Shards held that nobody needs from us: not ranked in, not read by us, and every peer
    /// ranked in holds them. The data owner keeps all of its data.
    fn surplus(&self, now_ms: u64) -> Vec<u32> {
        if !self.settled(now_ms) || self.policy.owner == self.me {
            return Vec::new();
        }
        let Some((_, m)) = &self.manifest else {
            return Vec::new();
        };
        let reading: BTreeSet<u32> = if self.key.is_some() {
            self.wanted().into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let claims: Vec<&Holdings> = self
            .alive(now_ms)
            .filter(|(_, h)| h.epoch == m.epoch)
            .map(|(_, h)| h)
            .collect();
        let peers = self.storage_peers(now_ms);
        self.held
            .keys()
            .copied()
            .filter(|i| !reading.contains(i))
            .filter(|&i| {
                let ranked = self.ranked_in(i, &peers);
                !ranked.contains(&self.me.0)
                    && ranked.len() == self.policy.replication as usize
                    && ranked.iter().all(|p| {
                        claims.iter().any(|h| h.address == *p && h.holds(i))
                            && (*p == self.policy.owner.0 || self.verified(p, now_ms))
                    })
            })
            .collect()
    }

    /// Time passed (and `peers` are connected): ask for what is missing, say what we hold.
    pub fn tick(&mut self, now_ms: u64, peers: &[P]) -> Vec<Action<P>> {
        let mut out = Vec::new();
        self.holders
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < HOLDINGS_TTL_MS);
        let epoch = self.epoch();
        let due = |at: Option<u64>| at.is_none_or(|t| now_ms.saturating_sub(t) >= ASK_AGAIN_MS);
        // A newer manifest, from a holder that says it has one (else anyone connected).
        let newer = self
            .alive(now_ms)
            .filter(|(_, h)| h.epoch > epoch)
            .map(|(p, _)| p.clone())
            .min();
        let ask_manifest = newer.or_else(|| {
            (self.manifest.is_none())
                .then(|| pick(peers, now_ms))
                .flatten()
        });
        if let Some(p) = ask_manifest
            && due(self.asked_manifest_ms)
        {
            self.asked_manifest_ms = Some(now_ms);
            out.push(Action::Ask(p, Request::DataManifest));
        }
        if self.manifest.is_some() {
            // Our grant, from a storage peer of our epoch with grants (else anyone).
            if self.read && self.key.is_none() && due(self.asked_grant_ms) {
                let from = self.grant_servers(epoch, now_ms);
                if let Some(p) = pick(&from, now_ms).or_else(|| pick(peers, now_ms)) {
                    self.asked_grant_ms = Some(now_ms);
                    out.push(Action::Ask(p, Request::Grant { member: self.me.0 }));
                }
            }
            // Storage peers keep every grant, to serve members when the owner is away;
            // validators, to know who the members are.
            if self.all_grants && due(self.asked_grants_ms) {
                let have = self.grants.len() as u32;
                let richest = self
                    .alive(now_ms)
                    .filter(|(_, h)| h.epoch == epoch && h.grants > have)
                    .max_by_key(|(p, h)| (h.grants, (*p).clone()))
                    .map(|(p, _)| p.clone());
                if let Some(p) = richest {
                    self.asked_grants_ms = Some(now_ms);
                    let skip = self.grants_cursor;
                    out.push(Action::Ask(p, Request::Grants { skip }));
                }
            }
            if self.manifest_at_ms.is_none() {
                self.manifest_at_ms = Some(now_ms);
            }
            self.fetch_missing(now_ms, &mut out);
            self.audit(now_ms, &mut out);
            self.drop_surplus(now_ms, &mut out);
        }
        let since = self
            .last_published_ms
            .map_or(u64::MAX, |t| now_ms.saturating_sub(t));
        if self.store
            && self.manifest.is_some()
            && (self.changed && since >= MIN_PUBLISH_GAP_MS || since >= HOLDINGS_EVERY_MS)
        {
            self.changed = false;
            self.last_published_ms = Some(now_ms);
            out.push(Action::Publish(self.holdings(now_ms).encode()));
        }
        out
    }

    fn drop_surplus(&mut self, now_ms: u64, out: &mut Vec<Action<P>>) {
        let epoch = self.epoch();
        for index in self.surplus(now_ms) {
            if let Some(blob) = self.held.remove(&index) {
                self.opened.remove(&index);
                self.changed = true;
                out.push(Action::Persist(DataRecord::Forget {
                    epoch,
                    address: blob.manifest.hash(),
                }));
            }
        }
    }

    fn grant_servers(&self, epoch: u64, now_ms: u64) -> Vec<P> {
        self.alive(now_ms)
            .filter(|(_, h)| h.epoch == epoch && h.grants > 0)
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn fetch_missing(&self, now_ms: u64, out: &mut Vec<Action<P>>) {
        let Some((_, m)) = &self.manifest else {
            return;
        };
        let mut want: Vec<u32> = if self.key.is_some() {
            self.wanted()
        } else {
            Vec::new()
        };
        for i in self.responsible(now_ms) {
            if !want.contains(&i) {
                want.push(i);
            }
        }
        for index in want {
            if self.held.contains_key(&index) {
                continue;
            }
            let holders: Vec<P> = self
                .alive(now_ms)
                .filter(|(_, h)| h.epoch == m.epoch && h.holds(index))
                .map(|(p, _)| p.clone())
                .collect();
            if !holders.is_empty() {
                out.push(Action::Fetch {
                    index,
                    address: m.shards[index as usize].address,
                    holders,
                });
            }
        }
    }

    fn holdings(&self, now_ms: u64) -> Holdings {
        let n = self.manifest.as_ref().map_or(0, |(_, m)| m.shards.len());
        let mut bits = vec![0u8; n.div_ceil(8)];
        for &i in self.held.keys() {
            bits[i as usize / 8] |= 1 << (i % 8);
        }
        Holdings {
            epoch: self.epoch(),
            address: self.me.0,
            grants: self.grants.len() as u32,
            shards: ByteBuf::from(bits),
            at_ms: now_ms,
        }
    }

    /// Whether everything this peer needs to train and score is decrypted.
    pub fn ready(&self) -> bool {
        let Some((_, m)) = &self.manifest else {
            return false;
        };
        let needed = (0..m.shards.len() as u32)
            .filter(|&i| matches!(m.layout.part(i), Some(Part::Validation | Part::Test)))
            .all(|i| self.opened.contains_key(&i));
        needed
            && self
                .opened
                .keys()
                .any(|&i| m.layout.part(i) == Some(Part::Train))
    }

    /// A new data plan when the decrypted training shards grew since the last one.
    pub fn take_plan(&mut self, rules: &TrainingRules) -> Option<Result<DataPlan, PlanError>> {
        if !self.ready() {
            return None;
        }
        let (_, m) = self.manifest.as_ref()?;
        // Called on every tick: count before copying anything.
        let trained = self
            .opened
            .keys()
            .filter(|i| m.layout.part(**i) == Some(Part::Train))
            .count();
        if trained <= self.plan_train {
            return None;
        }
        let part = |p: Part| -> Vec<Arc<Dataset>> {
            self.opened
                .iter()
                .filter(|(i, _)| m.layout.part(**i) == Some(p))
                .map(|(_, d)| d.clone())
                .collect()
        };
        let train = part(Part::Train);
        self.plan_train = train.len();
        Some(DataPlan::from_parts(
            rules,
            train,
            &part(Part::Validation),
            &part(Part::Test),
        ))
    }

    /// Why shard bytes were refused (for tests and tools).
    pub fn check_shard(&self, index: u32, bytes: &[u8]) -> Result<Dataset, ShardError> {
        let (Some((_, m)), Some(key)) = (&self.manifest, &self.key) else {
            return Err(ShardError::WrongRun);
        };
        m.open_shard(index, bytes, key)
    }
}

/// Rendezvous rank of `peer` for a shard: lower is first.
fn rank(shard: &[u8; 32], peer: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tabswarm/holder/v1\0");
    h.update(shard);
    h.update(peer);
    h.finalize().into()
}

/// One of `peers`, rotating with time so a silent one is not asked forever.
fn pick<P: Clone>(peers: &[P], now_ms: u64) -> Option<P> {
    if peers.is_empty() {
        return None;
    }
    Some(peers[(now_ms / ASK_AGAIN_MS) as usize % peers.len()].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use tabswarm_consensus::identity::Keypair;
    use tabswarm_core::vault::{Layout, seal_shards};

    const RUN: RunId = RunId([6; 32]);

    fn owner() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn samples(n: usize, seed: u8) -> Dataset {
        let labels = (0..n).map(|i| (i % 3) as u8).collect();
        let pixels = (0..n * 4)
            .map(|i| (i as u8).wrapping_mul(7) ^ seed)
            .collect();
        Dataset::from_parts(2, 2, 3, labels, pixels).unwrap()
    }

    fn policy(access: Access) -> DataPolicy {
        DataPolicy {
            owner: Address::of(&owner().verifying_key()),
            access,
            replication: 3,
        }
    }

    /// A sealed run: 4 training shards, 1 validation, 1 test; grants for `members`.
    struct Sealed {
        manifest: Vec<u8>,
        shards: Vec<Vec<u8>>,
        addresses: Vec<[u8; 32]>,
        grants: Vec<Vec<u8>>,
        key: DatasetKey,
    }

    fn seal(epoch: u64, members: &[u8]) -> Sealed {
        let mut rng = ChaCha20Rng::seed_from_u64(epoch);
        let key = DatasetKey::generate(RUN.0, epoch, &mut rng);
        let parts: Vec<Dataset> = (0..6).map(|i| samples(5 + i, i as u8)).collect();
        let layout = Layout {
            train: 4,
            validation: 1,
            test: 1,
        };
        let sealed = seal_shards(&parts, layout, &key, &mut rng).unwrap();
        let manifest = SignedManifest::sign(sealed.manifest.clone(), &owner())
            .unwrap()
            .encode();
        let grants = members
            .iter()
            .map(|&m| {
                let id = Keypair::from_seed([m; 32]);
                let member = MemberSecret::derive(&[m; 32]);
                Grant::seal(&owner(), &key, &id.public_key(), member.public(), &mut rng)
                    .unwrap()
                    .encode()
            })
            .collect();
        Sealed {
            manifest,
            addresses: sealed.manifest.shards.iter().map(|e| e.address).collect(),
            shards: sealed.shards.into_iter().map(|s| s.into_bytes()).collect(),
            grants,
            key,
        }
    }

    fn state(seed: u8, access: Access, store: bool) -> DataState<u8> {
        let me = Keypair::from_seed([seed; 32]).address();
        let uses = DataUses {
            store,
            read: true,
            max_train: 0,
            all_grants: false,
        };
        DataState::new(policy(access), RUN, me, &[seed; 32], uses).unwrap()
    }

    /// The owner's node: everything stored, its own grant among them.
    fn owner_node(s: &Sealed) -> DataState<u8> {
        let mut d = state(1, Access::Closed, true);
        let shards = s.addresses.iter().copied().zip(s.shards.clone()).collect();
        d.restore(vec![s.manifest.clone()], s.grants.clone(), shards);
        d
    }

    fn published(actions: &[Action<u8>]) -> Option<Vec<u8>> {
        actions.iter().find_map(|a| match a {
            Action::Publish(b) => Some(b.clone()),
            _ => None,
        })
    }

    fn fetches(actions: &[Action<u8>]) -> BTreeMap<u32, Vec<u8>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fetch { index, holders, .. } => Some((*index, holders.clone())),
                _ => None,
            })
            .collect()
    }

    fn blob(bytes: &[u8]) -> Arc<Blob> {
        Blob::new(bytes.to_vec()).0
    }

    #[test]
    fn holdings_round_trip_and_oversize_or_unknown_versions_are_refused() {
        let h = Holdings {
            epoch: 3,
            address: [2; 32],
            grants: 7,
            shards: ByteBuf::from(vec![0b101]),
            at_ms: 9,
        };
        let bytes = h.encode();
        assert_eq!(Holdings::decode(&bytes), Some(h.clone()));
        assert!(h.holds(0) && !h.holds(1) && h.holds(2) && !h.holds(900));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Holdings::decode(&other), None);
        assert_eq!(Holdings::decode(&vec![1; MAX_HOLDINGS_BYTES + 1]), None);
        assert_eq!(Holdings::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn the_owner_restores_everything_and_says_so() {
        let s = seal(1, &[1]);
        let mut d = owner_node(&s);
        assert!(d.has_key() && d.ready());
        assert_eq!(d.held().count(), 6);
        let out = d.tick(0, &[]);
        let h = Holdings::decode(&published(&out).expect("holdings published")).unwrap();
        assert_eq!((h.epoch, h.grants), (1, 1));
        assert!((0..6).all(|i| h.holds(i)));
        // Its manifest and shards are served.
        assert!(matches!(
            d.answer(&Request::DataManifest),
            Some(Response::DataManifest(_))
        ));
        assert!(d.blob(&s.addresses[2]).is_some());
        let plan = d.take_plan(&TrainingRules::default()).unwrap().unwrap();
        assert_eq!(plan.shards().len(), 4);
        assert_eq!(plan.validation().len(), 9);
        assert_eq!(plan.test().len(), 10);
        assert!(d.take_plan(&TrainingRules::default()).is_none(), "once");
    }

    #[test]
    fn the_owner_serves_its_data_even_without_the_storage_role() {
        let s = seal(1, &[1]);
        let mut d = state(1, Access::Closed, false);
        let shards = s.addresses.iter().copied().zip(s.shards.clone()).collect();
        d.restore(vec![s.manifest.clone()], s.grants.clone(), shards);
        let out = d.tick(0, &[]);
        let h = Holdings::decode(&published(&out).expect("the owner says what it holds")).unwrap();
        assert!((0..6).all(|i| h.holds(i)));
        // A reader without the storage role (not the owner) claims nothing.
        let mut reader = state(9, Access::Closed, false);
        reader.restore(vec![s.manifest.clone()], Vec::new(), Vec::new());
        assert_eq!(published(&reader.tick(0, &[])), None);
    }

    #[test]
    fn a_reader_asks_for_the_manifest_and_its_grant_then_fetches_what_it_needs() {
        let s = seal(1, &[1, 9]);
        let mut owner = owner_node(&s);
        let holdings = published(&owner.tick(0, &[])).unwrap();
        let mut d = state(9, Access::Closed, false);
        assert!(d.on_holdings(0, &holdings, 0));
        let out = d.tick(10, &[0]);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Ask(0, Request::DataManifest)))
        );
        let Some(Response::DataManifest(m)) = owner.answer(&Request::DataManifest) else {
            panic!()
        };
        let out = d.on_manifest(0, m.into_vec());
        assert!(out.iter().all(|a| !matches!(a, Action::Penalise(_))));
        // No key yet: it asks for its grant and fetches nothing.
        let out = d.tick(20, &[0]);
        let ask = out.iter().find_map(|a| match a {
            Action::Ask(0, r @ Request::Grant { .. }) => Some(r.clone()),
            _ => None,
        });
        assert!(fetches(&out).is_empty());
        let Some(Response::Grant(g)) = owner.answer(&ask.expect("asks for its grant")) else {
            panic!("the owner serves it")
        };
        let out = d.on_grants(0, vec![g]);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Event(DataEvent::Key { epoch: 1 })))
        );
        let wanted = fetches(&d.tick(30, &[0]));
        assert_eq!(wanted.keys().copied().collect::<Vec<_>>().len(), 6);
        for (&i, holders) in &wanted {
            assert_eq!(holders, &[0]);
            d.on_shard(i, blob(&s.shards[i as usize]));
        }
        assert!(d.ready());
        // A reader stores nothing for others and says nothing.
        assert!(published(&d.tick(40, &[0])).is_none());
    }

    #[test]
    fn without_a_grant_a_storage_peer_holds_and_serves_ciphertext_it_cannot_read() {
        let s = seal(1, &[1]);
        let mut node = owner_node(&s);
        let holdings = published(&node.tick(0, &[])).unwrap();
        let mut d = state(5, Access::Closed, true);
        d.on_holdings(0, &holdings, 0);
        d.restore(vec![s.manifest.clone()], Vec::new(), Vec::new());
        d.tick(0, &[0]);
        d.on_holdings(0, &holdings, SETTLE_MS);
        let wanted = fetches(&d.tick(SETTLE_MS, &[0]));
        assert_eq!(
            wanted.len(),
            6,
            "fewer than 3 storage peers: it holds every shard"
        );
        for &i in wanted.keys() {
            d.on_shard(i, blob(&s.shards[i as usize]));
        }
        assert_eq!(d.held().count(), 6);
        assert!(d.blob(&s.addresses[0]).is_some(), "serves the ciphertext");
        assert!(!d.has_key() && !d.ready());
        assert!(d.take_plan(&TrainingRules::default()).is_none());
        assert_eq!(
            d.check_shard(0, &s.shards[0]).unwrap_err(),
            ShardError::WrongRun,
            "no key: nothing opens"
        );
        // The owner's grant for someone else does not open it either; its own does.
        let other = seal(1, &[7]);
        let grant_for_7 = other.grants[0].clone();
        let out = d.on_grants(0, vec![grant_for_7.into()]);
        assert!(!d.has_key());
        assert!(out.iter().all(|a| !matches!(a, Action::Penalise(_))));
        let mine = {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let m = MemberSecret::derive(&[5; 32]);
            let id = Keypair::from_seed([5; 32]).public_key();
            Grant::seal(&owner(), &s.key, &id, m.public(), &mut rng)
                .unwrap()
                .encode()
        };
        d.on_grants(0, vec![mine.into()]);
        assert!(
            d.has_key() && d.ready(),
            "the shards it held open once the key arrives"
        );
    }

    #[test]
    fn a_forged_manifest_or_grant_costs_the_sender() {
        let mut d = state(9, Access::Closed, false);
        let s = seal(1, &[9]);
        let mut forged = s.manifest.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let out = d.on_manifest(3, forged);
        assert!(out.iter().any(|a| matches!(a, Action::Penalise(3))));
        assert!(d.manifest().is_none());
        d.on_manifest(4, s.manifest.clone());
        let mut g = s.grants[0].clone();
        g[40] ^= 1;
        let out = d.on_grants(4, vec![g.into()]);
        assert!(out.iter().any(|a| matches!(a, Action::Penalise(4))));
        assert!(!d.has_key());
    }

    #[test]
    fn a_new_epoch_drops_the_old_key_and_a_revoked_member_cannot_read_it() {
        let one = seal(1, &[1, 9]);
        let two = seal(2, &[1]);
        let mut d = state(9, Access::Closed, false);
        d.on_manifest(0, one.manifest.clone());
        d.on_grants(0, vec![one.grants[1].clone().into()]);
        assert!(d.has_key());
        for i in 0..6 {
            d.on_shard(i, blob(&one.shards[i as usize]));
        }
        assert!(d.ready());
        let out = d.on_manifest(0, two.manifest.clone());
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Event(DataEvent::Manifest { epoch: 2, .. })))
        );
        assert!(!d.has_key() && !d.ready() && d.held().next().is_none());
        // Epoch 1's grant no longer opens anything; there is no grant for us in epoch 2.
        d.on_grants(0, vec![one.grants[1].clone().into()]);
        assert!(!d.has_key());
        let node = owner_node(&two);
        assert_eq!(
            node.answer(&Request::Grant {
                member: Keypair::from_seed([9; 32]).address().0
            }),
            Some(Response::NotFound)
        );
        // Epoch 2's shards under epoch 1's key: refused by the AEAD (and the epoch check).
        let old = one.key.clone();
        let m = SignedManifest::decode(&two.manifest).unwrap();
        let m = m.verify(&owner().verifying_key(), &RUN.0).unwrap().clone();
        assert!(m.open_shard(0, &two.shards[0], &old).is_err());
        // An older manifest never replaces a newer one.
        d.on_manifest(0, one.manifest.clone());
        assert_eq!(d.manifest().unwrap().epoch, 2);
    }

    #[test]
    fn a_shard_damaged_on_disk_is_reported_and_fetched_again() {
        let s = seal(1, &[1]);
        let mut d = state(1, Access::Closed, true);
        let mut shards: Vec<([u8; 32], Vec<u8>)> =
            s.addresses.iter().copied().zip(s.shards.clone()).collect();
        shards[2].1[100] ^= 0x10;
        let out = d.restore(vec![s.manifest.clone()], s.grants.clone(), shards);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Event(DataEvent::Damaged { index: 2 })))
        );
        assert_eq!(d.held().count(), 5);
        let mut other = state(20, Access::Closed, true);
        other.restore(
            vec![s.manifest.clone()],
            Vec::new(),
            s.addresses.iter().copied().zip(s.shards.clone()).collect(),
        );
        d.on_holdings(7, &published(&other.tick(0, &[])).unwrap(), 0);
        let wanted = fetches(&d.tick(0, &[7]));
        assert_eq!(wanted.keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn an_open_run_reads_with_the_genesis_key_and_needs_no_grant() {
        let s = seal(1, &[]);
        let mut d = state(
            9,
            Access::Open {
                key: *s.key.secret_bytes(),
            },
            false,
        );
        d.on_manifest(0, s.manifest.clone());
        assert!(d.has_key());
        for i in 0..6 {
            d.on_shard(i, blob(&s.shards[i as usize]));
        }
        assert!(d.ready());
        assert!(d.check_shard(4, &s.shards[4]).is_ok());
    }

    #[test]
    fn a_reader_capped_at_one_training_shard_fetches_one_and_readers_spread_over_shards() {
        let s = seal(1, &[]);
        let firsts: BTreeSet<u32> = (30..50)
            .map(|seed| {
                let me = Keypair::from_seed([seed; 32]).address();
                let mut d = DataState::<u8>::new(
                    policy(Access::Open {
                        key: *s.key.secret_bytes(),
                    }),
                    RUN,
                    me,
                    &[seed; 32],
                    DataUses {
                        store: false,
                        read: true,
                        max_train: 1,
                        all_grants: false,
                    },
                )
                .unwrap();
                d.on_manifest(0, s.manifest.clone());
                let mut owner = owner_node(&s);
                d.on_holdings(0, &published(&owner.tick(0, &[])).unwrap(), 0);
                let wanted: Vec<u32> = fetches(&d.tick(0, &[0])).into_keys().collect();
                assert_eq!(wanted.len(), 3, "validation, test and one training shard");
                let train: Vec<u32> = wanted.into_iter().filter(|&i| i < 4).collect();
                train[0]
            })
            .collect();
        assert!(firsts.len() >= 3, "twenty readers start on {firsts:?}");
    }

    /// Grants come in member order and ours may sort anywhere: a validator that holds its own
    /// grant and asks for "the rest" by its count would skip one member for good.
    #[test]
    fn a_validator_collects_every_grant_whatever_the_order_of_its_own() {
        let members: Vec<u8> = (2..140).collect();
        let s = seal(1, &members);
        let owner = owner_node(&s);
        for me in [2u8, 70, 139] {
            let id = Keypair::from_seed([me; 32]).address();
            let uses = DataUses {
                store: false,
                read: true,
                max_train: 0,
                all_grants: true,
            };
            let mut d =
                DataState::<u8>::new(policy(Access::Closed), RUN, id, &[me; 32], uses).unwrap();
            d.on_manifest(0, s.manifest.clone());
            let mine = s.grants[usize::from(me - 2)].clone();
            d.on_grants(0, vec![mine.into()]);
            let holdings = Holdings {
                epoch: 1,
                address: [0xee; 32],
                grants: owner.grants.len() as u32,
                shards: ByteBuf::new(),
                at_ms: 0,
            }
            .encode();
            for step in 0..20u64 {
                let now = step * ASK_AGAIN_MS;
                d.on_holdings(0, &holdings, now);
                for action in d.tick(now, &[0]) {
                    if let Action::Ask(_, r @ Request::Grants { .. }) = action {
                        let Some(Response::Grants(page)) = owner.answer(&r) else {
                            panic!("the owner pages its grants")
                        };
                        d.on_grant_page(0, page);
                    }
                }
            }
            assert_eq!(d.members().len(), owner.grants.len(), "member {me}");
        }
    }

    /// Storage peers on a perfect network, one step per simulated second: holdings reach
    /// everyone, fetches are served by the first holder that has the bytes, audits are
    /// answered by honest peers; `liars` claim every shard and answer nothing.
    struct Net {
        peers: Vec<(u8, DataState<u8>)>,
        down: BTreeSet<u8>,
        liars: Vec<(u8, [u8; 32])>,
        shards: usize,
        forgotten: usize,
        now: u64,
    }

    impl Net {
        fn new(s: &Sealed, storage: std::ops::Range<u8>) -> Self {
            let mut peers = vec![(0, owner_node(s))];
            for seed in storage {
                let mut d = state(seed, Access::Closed, true);
                d.restore(vec![s.manifest.clone()], Vec::new(), Vec::new());
                peers.push((seed, d));
            }
            Self {
                peers,
                down: BTreeSet::new(),
                liars: Vec::new(),
                shards: s.shards.len(),
                forgotten: 0,
                now: 0,
            }
        }

        fn step(&mut self) {
            self.now += 1_000;
            let now = self.now;
            let mut said = Vec::new();
            let mut asks = Vec::new();
            let mut wants = Vec::new();
            for (id, d) in &mut self.peers {
                if self.down.contains(id) {
                    continue;
                }
                for action in d.tick(now, &[0]) {
                    match action {
                        Action::Publish(b) => said.push((*id, b)),
                        Action::Ask(to, r @ Request::Chunk { .. }) => asks.push((*id, to, r)),
                        Action::Fetch { index, holders, .. } => wants.push((*id, index, holders)),
                        Action::Persist(DataRecord::Forget { .. }) => self.forgotten += 1,
                        _ => {}
                    }
                }
            }
            for (liar, address) in &self.liars {
                let h = Holdings {
                    epoch: 1,
                    address: *address,
                    grants: 0,
                    shards: ByteBuf::from(vec![0xff; self.shards.div_ceil(8)]),
                    at_ms: now,
                };
                said.push((*liar, h.encode()));
            }
            for (from, bytes) in &said {
                for (id, d) in &mut self.peers {
                    if id != from && !self.down.contains(id) {
                        d.on_holdings(*from, bytes, now);
                    }
                }
            }
            for (asker, to, request) in asks {
                let answer = self
                    .peers
                    .iter()
                    .find(|(id, _)| *id == to && !self.down.contains(id))
                    .and_then(|(_, d)| match &request {
                        Request::Chunk { address, index } => d.blob(address).and_then(|b| {
                            b.manifest
                                .range(*index as usize)
                                .ok()
                                .map(|r| b.bytes[r].to_vec())
                        }),
                        _ => None,
                    });
                self.peer(asker).on_audit(&to, answer.as_deref(), now);
            }
            for (asker, index, holders) in wants {
                let blob = holders.iter().find_map(|h| {
                    self.peers
                        .iter()
                        .find(|(id, _)| id == h && !self.down.contains(id))
                        .and_then(|(_, d)| d.held.get(&index).cloned())
                });
                if let Some(blob) = blob {
                    self.peer(asker).on_shard(index, blob);
                }
            }
        }

        fn peer(&mut self, id: u8) -> &mut DataState<u8> {
            &mut self.peers.iter_mut().find(|(p, _)| *p == id).unwrap().1
        }

        /// Live storage peers other than the owner holding shard `i`.
        fn holders(&self, i: u32) -> Vec<u8> {
            self.peers
                .iter()
                .filter(|(id, d)| *id != 0 && !self.down.contains(id) && d.held().any(|x| x == i))
                .map(|(id, _)| *id)
                .collect()
        }
    }

    /// Five storage peers and the owner: each shard's holders are the first three in rank;
    /// when two of them go quiet the next in rank fetches it.
    #[test]
    fn each_shard_gets_r_holders_and_lost_holders_are_replaced_when_their_claims_expire() {
        let s = seal(1, &[1]);
        let mut net = Net::new(&s, 20..25);
        for _ in 0..20 {
            net.step();
        }
        // The owner ranks like any storage peer: it is one of the three where it ranks in.
        for i in 0..6 {
            let n = net.holders(i).len();
            assert!((2..=3).contains(&n), "shard {i}: {n} storage holders");
            let owner = &net.peers[0].1;
            assert!(
                (3..=4).contains(&owner.holder_count(i, net.now)),
                "shard {i}"
            );
        }
        let gone: Vec<u8> = net.holders(0)[..2].to_vec();
        net.down.extend(gone.iter().copied());
        let t0 = net.now;
        let mut repaired_at = None;
        for _ in 0..40 {
            net.step();
            if net.holders(0).len() + 1 >= 3 && repaired_at.is_none() {
                repaired_at = Some(net.now - t0);
            }
        }
        let took = repaired_at.expect("shard 0 is back on three live storage peers");
        assert!(
            took > 1_000 && took <= HOLDINGS_TTL_MS + 2_000,
            "repaired after {took} ms"
        );
    }

    #[test]
    fn a_storage_peer_waits_to_hear_the_others_and_drops_what_the_ranked_peers_hold() {
        let s = seal(1, &[1]);
        let mut net = Net::new(&s, 20..24);
        // Four storage peers already holding everything (an old replication factor, say).
        let all: Vec<([u8; 32], Vec<u8>)> =
            s.addresses.iter().copied().zip(s.shards.clone()).collect();
        for (_, d) in net.peers.iter_mut().skip(1) {
            d.restore(Vec::new(), Vec::new(), all.clone());
        }
        for _ in 0..10 {
            net.step();
        }
        assert_eq!(net.forgotten, 0, "nothing dropped before settling");
        for _ in 0..30 {
            net.step();
        }
        assert!(net.forgotten > 0);
        for i in 0..6u32 {
            let n = net.holders(i).len();
            assert!(
                (2..=3).contains(&n),
                "shard {i}: {n} holders besides the owner"
            );
        }
        assert_eq!(
            net.peers[0].1.held().count(),
            6,
            "the owner keeps all of its data"
        );
    }

    /// Claims are free: three identities claiming every shard would take the first ranks of
    /// most shards, so the honest peers behind them would neither fetch (no repair) nor keep
    /// their copies. Audits find them out; the honest peers hold the data.
    #[test]
    fn peers_claiming_shards_they_do_not_hold_are_found_out_and_lose_their_ranks() {
        let s = seal(1, &[1]);
        let mut net = Net::new(&s, 20..24);
        net.liars = (0..3u8)
            .map(|i| (50 + i, Keypair::from_seed([90 + i; 32]).address().0))
            .collect();
        for _ in 0..60 {
            net.step();
        }
        for i in 0..6 {
            let n = net.holders(i).len();
            assert!(
                n >= 2,
                "shard {i}: only {n} honest storage holders besides the owner"
            );
        }
        for (id, d) in &net.peers {
            if *id != 0 {
                assert_eq!(d.excluded(net.now), 3, "peer {id} excludes every liar");
            }
        }
    }
}
