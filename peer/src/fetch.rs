//! Blobs this peer holds and serves, and downloads of blobs it needs: manifest first, then up
//! to [`WINDOW`] chunks in flight spread over every peer known to hold the blob.
//!
//! Every answer is checked against the blob's address (manifest hash, then chunk hashes), so a
//! peer can waste our time but never corrupt a blob. A peer that sends a bad manifest or chunk
//! gets a strike; after [`MAX_STRIKES`] it is never asked again and the host is told
//! ([`Fetcher::take_banned`]), so it can lower the peer's score. A request unanswered after
//! [`REQUEST_TIMEOUT_MS`] counts as a failure, so a silent peer cannot stall a download.
//! Downloads nobody needs any more (their height was decided) are cancelled by the owner with
//! [`Fetcher::retain`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use tabswarm_core::chunks::{Assembly, Manifest};

use crate::RequestId;
use crate::wire::Request;

/// Chunk requests in flight per download.
pub const WINDOW: usize = 8;
/// Blobs kept for serving (updates of recent heights and recent parameters).
pub const KEEP_BLOBS: usize = 96;
/// Failed requests before a download is abandoned.
pub const MAX_FAILURES: u32 = 12;
/// Bad answers (wrong manifest or chunk) before a peer is never asked again.
pub const MAX_STRIKES: u32 = 3;
/// A request unanswered for this long has failed.
pub const REQUEST_TIMEOUT_MS: u64 = 8_000;

/// A blob with its manifest.
#[derive(Debug)]
pub struct Blob {
    /// Its chunk hashes.
    pub manifest: Manifest,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes` and its address.
    pub fn new(bytes: Vec<u8>) -> (Arc<Self>, [u8; 32]) {
        let manifest = Manifest::of(&bytes);
        let address = manifest.hash();
        (Arc::new(Self { manifest, bytes }), address)
    }
}

/// Blobs held for serving, oldest dropped first.
#[derive(Debug, Default)]
pub struct Blobs {
    map: HashMap<[u8; 32], Arc<Blob>>,
    order: VecDeque<[u8; 32]>,
}

impl Blobs {
    /// Keeps `blob` for serving under `address`.
    pub fn insert(&mut self, address: [u8; 32], blob: Arc<Blob>) {
        if self.map.insert(address, blob).is_none() {
            self.order.push_back(address);
        }
        while self.order.len() > KEEP_BLOBS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Blobs held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The blob at `address`, if held.
    pub fn get(&self, address: &[u8; 32]) -> Option<&Arc<Blob>> {
        self.map.get(address)
    }
}

/// Why a blob is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An update payload, by update id.
    Update([u8; 32]),
    /// Parameters committed at a height.
    Checkpoint(u64),
    /// A shard of the run's data, by index in the manifest.
    Shard(u32),
}

#[derive(Debug)]
struct Download<P> {
    purpose: Purpose,
    assembly: Option<Assembly>,
    peers: Vec<P>,
    next_peer: usize,
    in_flight: HashMap<u32, P>,
    manifest_from: Option<P>,
    failures: u32,
}

/// A request of a download: which blob, which chunk (`None`: the manifest), sent to whom, when.
#[derive(Debug)]
struct Sent<P> {
    address: [u8; 32],
    index: Option<u32>,
    peer: P,
    at_ms: u64,
}

/// A finished download.
#[derive(Debug)]
pub struct Done {
    /// Why it was wanted.
    pub purpose: Purpose,
    /// Its address.
    pub address: [u8; 32],
    /// With the manifest already checked chunk by chunk: no need to hash it again.
    pub blob: Arc<Blob>,
}

/// Downloads in progress.
#[derive(Debug)]
pub struct Fetcher<P> {
    downloads: HashMap<[u8; 32], Download<P>>,
    requests: BTreeMap<RequestId, Sent<P>>,
    strikes: HashMap<P, u32>,
    banned: HashSet<P>,
    newly_banned: Vec<P>,
}

impl<P> Default for Fetcher<P> {
    fn default() -> Self {
        Self {
            downloads: HashMap::new(),
            requests: BTreeMap::new(),
            strikes: HashMap::new(),
            banned: HashSet::new(),
            newly_banned: Vec::new(),
        }
    }
}

impl<P: Clone + Eq + Hash> Fetcher<P> {
    /// Wants `address` from `peer` (and any peer added later). Returns requests to send; the
    /// caller reports each one's id with [`Fetcher::sent`].
    pub fn want(&mut self, address: [u8; 32], purpose: Purpose, peer: P) -> Vec<(P, Request)> {
        if self.banned.contains(&peer) {
            return Vec::new();
        }
        let d = self.downloads.entry(address).or_insert_with(|| Download {
            purpose,
            assembly: None,
            peers: Vec::new(),
            next_peer: 0,
            in_flight: HashMap::new(),
            manifest_from: None,
            failures: 0,
        });
        if !d.peers.contains(&peer) {
            d.peers.push(peer);
        }
        Self::pump(address, d)
    }

    /// Whether a download of `address` is in progress.
    pub fn is_fetching(&self, address: &[u8; 32]) -> bool {
        self.downloads.contains_key(address)
    }

    /// Chunk requests in flight, over every download.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Downloads in progress.
    pub fn len(&self) -> usize {
        self.downloads.len()
    }

    /// Whether nothing is being downloaded.
    pub fn is_empty(&self) -> bool {
        self.downloads.is_empty()
    }

    /// Records the id given to a request [`Fetcher::want`] (or a later call) returned.
    pub fn sent(&mut self, id: RequestId, peer: P, request: &Request, now_ms: u64) {
        let (address, index) = match request {
            Request::Manifest { address } => (*address, None),
            Request::Chunk { address, index } => (*address, Some(*index)),
            _ => return,
        };
        self.requests.insert(
            id,
            Sent {
                address,
                index,
                peer,
                at_ms: now_ms,
            },
        );
    }

    /// Whether a response id belongs to a download.
    pub fn owns(&self, id: &RequestId) -> bool {
        self.requests.contains_key(id)
    }

    /// Peers banned since the last call (for the host to penalise).
    pub fn take_banned(&mut self) -> Vec<P> {
        std::mem::take(&mut self.newly_banned)
    }

    /// Whether `peer` sent too many bad answers to be asked again.
    pub fn is_banned(&self, peer: &P) -> bool {
        self.banned.contains(peer)
    }

    fn pump(address: [u8; 32], d: &mut Download<P>) -> Vec<(P, Request)> {
        let mut out = Vec::new();
        if d.peers.is_empty() {
            return out;
        }
        let Some(assembly) = &d.assembly else {
            if d.manifest_from.is_none() {
                let peer = d.peers[d.next_peer % d.peers.len()].clone();
                d.next_peer += 1;
                d.manifest_from = Some(peer.clone());
                out.push((peer, Request::Manifest { address }));
            }
            return out;
        };
        let missing: Vec<u32> = assembly
            .missing()
            .map(|i| i as u32)
            .filter(|i| !d.in_flight.contains_key(i))
            .take(WINDOW.saturating_sub(d.in_flight.len()))
            .collect();
        for index in missing {
            let peer = d.peers[d.next_peer % d.peers.len()].clone();
            d.next_peer += 1;
            d.in_flight.insert(index, peer.clone());
            out.push((peer, Request::Chunk { address, index }));
        }
        out
    }

    /// A bad answer from `peer`: a strike, and after [`MAX_STRIKES`] a ban from every
    /// download.
    fn strike(&mut self, peer: &P) {
        let s = self.strikes.entry(peer.clone()).or_default();
        *s += 1;
        if *s >= MAX_STRIKES && self.banned.insert(peer.clone()) {
            self.newly_banned.push(peer.clone());
            for d in self.downloads.values_mut() {
                d.peers.retain(|p| p != peer);
            }
        }
    }

    /// A manifest arrived.
    pub fn on_manifest(&mut self, id: RequestId, manifest: Manifest) -> Vec<(P, Request)> {
        let Some(Sent {
            address,
            index: None,
            peer,
            ..
        }) = self.requests.remove(&id)
        else {
            return Vec::new();
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return Vec::new();
        };
        d.manifest_from = None;
        let mut bad = false;
        if d.assembly.is_none() {
            match Assembly::new(manifest, &address) {
                Ok(a) => d.assembly = Some(a),
                Err(_) => {
                    d.failures += 1;
                    bad = true;
                }
            }
        }
        if bad {
            self.strike(&peer);
        }
        self.pump_or_drop(address)
    }

    /// A chunk arrived. Returns requests to send and, when complete, the blob.
    pub fn on_chunk(&mut self, id: RequestId, bytes: &[u8]) -> (Vec<(P, Request)>, Option<Done>) {
        let Some(Sent {
            address,
            index: Some(index),
            peer,
            ..
        }) = self.requests.remove(&id)
        else {
            return (Vec::new(), None);
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return (Vec::new(), None);
        };
        d.in_flight.remove(&index);
        let Some(a) = &mut d.assembly else {
            return (self.pump_or_drop(address), None);
        };
        if a.add(index as usize, bytes).is_err() {
            d.failures += 1;
            self.strike(&peer);
            return (self.pump_or_drop(address), None);
        }
        if a.missing().next().is_some() {
            return (self.pump_or_drop(address), None);
        }
        let Some(d) = self.downloads.remove(&address) else {
            return (Vec::new(), None);
        };
        self.requests.retain(|_, s| s.address != address);
        let purpose = d.purpose;
        let Some(Ok((manifest, bytes))) = d.assembly.map(Assembly::finish) else {
            return (Vec::new(), None);
        };
        let blob = Arc::new(Blob { manifest, bytes });
        (
            Vec::new(),
            Some(Done {
                purpose,
                address,
                blob,
            }),
        )
    }

    /// A request failed, timed out or was answered "not found": retry elsewhere, or give up.
    pub fn on_failure(&mut self, id: RequestId) -> Vec<(P, Request)> {
        let Some(Sent {
            address,
            index,
            peer,
            ..
        }) = self.requests.remove(&id)
        else {
            return Vec::new();
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return Vec::new();
        };
        d.failures += 1;
        match index {
            None => d.manifest_from = None,
            Some(i) => {
                d.in_flight.remove(&i);
            }
        }
        // Leave a peer that failed us once there is another to ask.
        if d.peers.len() > 1 {
            d.peers.retain(|p| *p != peer);
        }
        self.pump_or_drop(address)
    }

    /// Fails every request older than [`REQUEST_TIMEOUT_MS`]; returns the retries to send.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(P, Request)> {
        let late: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.at_ms) >= REQUEST_TIMEOUT_MS)
            .map(|(id, _)| *id)
            .collect();
        late.into_iter()
            .flat_map(|id| self.on_failure(id))
            .collect()
    }

    fn pump_or_drop(&mut self, address: [u8; 32]) -> Vec<(P, Request)> {
        let Some(d) = self.downloads.get_mut(&address) else {
            return Vec::new();
        };
        if d.failures > MAX_FAILURES || d.peers.is_empty() {
            tracing::debug!(purpose = ?d.purpose, "giving up a download");
            self.downloads.remove(&address);
            self.requests.retain(|_, s| s.address != address);
            return Vec::new();
        }
        Self::pump(address, d)
    }

    /// Drops downloads the caller no longer needs, with their requests: late answers to them
    /// are ignored.
    pub fn retain(&mut self, keep: impl Fn(&Purpose) -> bool) {
        self.downloads.retain(|_, d| keep(&d.purpose));
        let live = &self.downloads;
        self.requests.retain(|_, s| live.contains_key(&s.address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabswarm_core::chunks::CHUNK_SIZE;

    /// A blob of three chunks and a fetcher wanting it from peers 1 and 2.
    fn setup() -> (Fetcher<u8>, Vec<u8>, [u8; 32], u64) {
        let bytes: Vec<u8> = (0..CHUNK_SIZE * 2 + 100).map(|i| (i % 251) as u8).collect();
        let address = Manifest::of(&bytes).hash();
        (Fetcher::default(), bytes, address, 0)
    }

    /// Gives each request an id, as a host would.
    fn send(
        out: Vec<(u8, Request)>,
        f: &mut Fetcher<u8>,
        next: &mut u64,
    ) -> Vec<(RequestId, u8, Request)> {
        out.into_iter()
            .map(|(p, r)| {
                *next += 1;
                f.sent(RequestId(*next), p, &r, 0);
                (RequestId(*next), p, r)
            })
            .collect()
    }

    #[test]
    fn a_blob_arrives_from_two_peers_checked_chunk_by_chunk() {
        let (mut f, bytes, address, mut next) = setup();
        let m = Manifest::of(&bytes);
        let mut out = send(
            f.want(address, Purpose::Checkpoint(3), 1),
            &mut f,
            &mut next,
        );
        out.extend(send(
            f.want(address, Purpose::Checkpoint(3), 2),
            &mut f,
            &mut next,
        ));
        assert_eq!(out.len(), 1, "one manifest request");
        let (id, _, _) = out[0].clone();
        let chunks = send(f.on_manifest(id, m.clone()), &mut f, &mut next);
        assert_eq!(chunks.len(), 3);
        let peers: HashSet<u8> = chunks.iter().map(|c| c.1).collect();
        assert_eq!(peers.len(), 2, "spread over both holders");
        let mut done = None;
        for (id, _, r) in chunks {
            let Request::Chunk { index, .. } = r else {
                panic!()
            };
            let range = m.range(index as usize).unwrap();
            let (more, d) = f.on_chunk(id, &bytes[range]);
            assert!(more.is_empty());
            done = done.or(d);
        }
        let done = done.expect("complete");
        assert_eq!(done.blob.bytes, bytes);
        assert_eq!(done.purpose, Purpose::Checkpoint(3));
        assert!(f.is_empty());
    }

    #[test]
    fn a_peer_serving_bad_chunks_is_banned_and_the_blob_comes_from_another() {
        let (mut f, _, _, mut next) = setup();
        // Ten chunks, so the liar is asked often enough to use up its strikes.
        let bytes: Vec<u8> = (0..CHUNK_SIZE * 9 + 5).map(|i| (i % 13) as u8).collect();
        let address = Manifest::of(&bytes).hash();
        let m = Manifest::of(&bytes);
        let out = send(
            f.want(address, Purpose::Update([1; 32]), 1),
            &mut f,
            &mut next,
        );
        send(
            f.want(address, Purpose::Update([1; 32]), 2),
            &mut f,
            &mut next,
        );
        let mut pending = send(f.on_manifest(out[0].0, m.clone()), &mut f, &mut next);
        let mut done = None;
        for _ in 0..100 {
            let Some((id, peer, r)) = pending.pop() else {
                break;
            };
            let Request::Chunk { index, .. } = r else {
                panic!()
            };
            let range = m.range(index as usize).unwrap();
            let (more, d) = if peer == 1 {
                // Peer 1 lies about every chunk.
                f.on_chunk(id, &vec![0u8; range.len()])
            } else {
                f.on_chunk(id, &bytes[range])
            };
            pending.extend(send(more, &mut f, &mut next));
            if d.is_some() {
                done = d;
            }
        }
        assert_eq!(done.expect("complete").blob.bytes, bytes);
        assert!(f.is_banned(&1));
        assert!(!f.is_banned(&2));
        assert_eq!(f.take_banned(), vec![1]);
        // A banned peer is not asked again, for any blob.
        assert!(f.want([9; 32], Purpose::Checkpoint(1), 1).is_empty());
    }

    #[test]
    fn a_silent_peer_times_out_and_another_is_asked() {
        let (mut f, _bytes, address, mut next) = setup();
        let out = send(
            f.want(address, Purpose::Checkpoint(1), 1),
            &mut f,
            &mut next,
        );
        send(
            f.want(address, Purpose::Checkpoint(1), 2),
            &mut f,
            &mut next,
        );
        assert_eq!(out[0].1, 1);
        assert!(f.expire(REQUEST_TIMEOUT_MS - 1).is_empty(), "not yet");
        let retry = f.expire(REQUEST_TIMEOUT_MS);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].0, 2, "asked the other holder");
        // The silent peer's late answer is ignored.
        assert!(f.on_manifest(out[0].0, Manifest::of(b"x")).is_empty());
    }

    #[test]
    fn downloads_are_abandoned_after_too_many_failures_and_cancelled_on_demand() {
        let (mut f, _bytes, address, mut next) = setup();
        let mut out = send(
            f.want(address, Purpose::Checkpoint(1), 1),
            &mut f,
            &mut next,
        );
        for _ in 0..=MAX_FAILURES {
            let Some((id, _, _)) = out.pop() else { break };
            out = send(f.on_failure(id), &mut f, &mut next);
        }
        assert!(!f.is_fetching(&address), "given up");
        send(
            f.want([3; 32], Purpose::Checkpoint(5), 1),
            &mut f,
            &mut next,
        );
        send(
            f.want([4; 32], Purpose::Update([4; 32]), 1),
            &mut f,
            &mut next,
        );
        f.retain(|p| !matches!(p, Purpose::Checkpoint(h) if *h <= 5));
        assert!(!f.is_fetching(&[3; 32]));
        assert!(f.is_fetching(&[4; 32]));
    }
}
