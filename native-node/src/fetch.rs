//! Blobs this node holds and serves, and downloads of blobs it needs: manifest first, then
//! up to [`WINDOW`] chunks in flight spread over every peer known to hold the blob. A peer
//! that answers with a bad manifest or chunk, or not at all, is skipped for that blob.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;
use tabswarm_core::chunks::{Assembly, Manifest};

use crate::net::proto::Request;

/// Chunk requests in flight per download.
const WINDOW: usize = 8;
/// Blobs kept for serving (updates of recent heights and recent parameters).
const KEEP_BLOBS: usize = 96;
/// Failed requests before a download is abandoned.
const MAX_FAILURES: u32 = 12;

/// A blob with its manifest.
#[derive(Debug)]
pub(crate) struct Blob {
    pub(crate) manifest: Manifest,
    pub(crate) bytes: Vec<u8>,
}

impl Blob {
    pub(crate) fn new(bytes: Vec<u8>) -> (Arc<Self>, [u8; 32]) {
        let manifest = Manifest::of(&bytes);
        let address = manifest.hash();
        (Arc::new(Self { manifest, bytes }), address)
    }
}

/// Blobs held for serving, oldest dropped first.
#[derive(Debug, Default)]
pub(crate) struct Blobs {
    map: HashMap<[u8; 32], Arc<Blob>>,
    order: VecDeque<[u8; 32]>,
}

impl Blobs {
    pub(crate) fn insert(&mut self, address: [u8; 32], blob: Arc<Blob>) {
        if self.map.insert(address, blob).is_none() {
            self.order.push_back(address);
        }
        while self.order.len() > KEEP_BLOBS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, address: &[u8; 32]) -> Option<&Arc<Blob>> {
        self.map.get(address)
    }
}

/// Why a blob is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// An update payload, by update id.
    Update([u8; 32]),
    /// Parameters committed at a height.
    Checkpoint(u64),
}

#[derive(Debug)]
struct Download {
    purpose: Purpose,
    assembly: Option<Assembly>,
    peers: Vec<PeerId>,
    next_peer: usize,
    in_flight: HashMap<u32, PeerId>,
    manifest_in_flight: bool,
    failures: u32,
}

/// What the runner must send.
pub(crate) type Send = (PeerId, Request);

/// Downloads in progress.
#[derive(Debug, Default)]
pub(crate) struct Fetcher {
    downloads: HashMap<[u8; 32], Download>,
    requests: HashMap<OutboundRequestId, ([u8; 32], Option<u32>)>,
}

/// A finished download.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) purpose: Purpose,
    pub(crate) address: [u8; 32],
    /// With the manifest already checked chunk by chunk: no need to hash it again.
    pub(crate) blob: Arc<Blob>,
}

impl Fetcher {
    /// Wants `address` from `peer` (and any peer added later). Returns requests to send.
    pub(crate) fn want(&mut self, address: [u8; 32], purpose: Purpose, peer: PeerId) -> Vec<Send> {
        let d = self.downloads.entry(address).or_insert_with(|| Download {
            purpose,
            assembly: None,
            peers: Vec::new(),
            next_peer: 0,
            in_flight: HashMap::new(),
            manifest_in_flight: false,
            failures: 0,
        });
        if !d.peers.contains(&peer) {
            d.peers.push(peer);
        }
        Self::pump(address, d)
    }

    /// Records the id libp2p gave a request the runner sent.
    pub(crate) fn sent(&mut self, id: OutboundRequestId, request: &Request) {
        match request {
            Request::Manifest { address } => {
                self.requests.insert(id, (*address, None));
            }
            Request::Chunk { address, index } => {
                self.requests.insert(id, (*address, Some(*index)));
            }
            _ => {}
        }
    }

    /// Whether a response id belongs to a download.
    pub(crate) fn owns(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id)
    }

    fn pump(address: [u8; 32], d: &mut Download) -> Vec<Send> {
        let mut out = Vec::new();
        if d.peers.is_empty() {
            return out;
        }
        let Some(assembly) = &d.assembly else {
            if !d.manifest_in_flight {
                d.manifest_in_flight = true;
                let peer = d.peers[d.next_peer % d.peers.len()];
                d.next_peer += 1;
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
            let peer = d.peers[d.next_peer % d.peers.len()];
            d.next_peer += 1;
            d.in_flight.insert(index, peer);
            out.push((peer, Request::Chunk { address, index }));
        }
        out
    }

    /// A manifest arrived.
    pub(crate) fn on_manifest(&mut self, id: OutboundRequestId, manifest: Manifest) -> Vec<Send> {
        let Some((address, None)) = self.requests.remove(&id) else {
            return Vec::new();
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return Vec::new();
        };
        d.manifest_in_flight = false;
        if d.assembly.is_none() {
            match Assembly::new(manifest, &address) {
                Ok(a) => d.assembly = Some(a),
                Err(_) => d.failures += 1,
            }
        }
        Self::pump(address, d)
    }

    /// A chunk arrived. Returns requests to send and, when complete, the blob.
    pub(crate) fn on_chunk(
        &mut self,
        id: OutboundRequestId,
        bytes: &[u8],
    ) -> (Vec<Send>, Option<Done>) {
        let Some((address, Some(index))) = self.requests.remove(&id) else {
            return (Vec::new(), None);
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return (Vec::new(), None);
        };
        d.in_flight.remove(&index);
        if let Some(a) = &mut d.assembly {
            if a.add(index as usize, bytes).is_err() {
                d.failures += 1;
            }
            if a.missing().next().is_none() {
                let d = self.downloads.remove(&address).expect("present");
                let purpose = d.purpose;
                let Some(Ok((manifest, bytes))) = d.assembly.map(Assembly::finish) else {
                    return (Vec::new(), None);
                };
                let blob = Arc::new(Blob { manifest, bytes });
                return (
                    Vec::new(),
                    Some(Done {
                        purpose,
                        address,
                        blob,
                    }),
                );
            }
        }
        (Self::pump(address, d), None)
    }

    /// A request failed or was answered "not found": retry elsewhere, or give up.
    pub(crate) fn on_failure(&mut self, id: OutboundRequestId) -> Vec<Send> {
        let Some((address, index)) = self.requests.remove(&id) else {
            return Vec::new();
        };
        let Some(d) = self.downloads.get_mut(&address) else {
            return Vec::new();
        };
        d.failures += 1;
        match index {
            None => d.manifest_in_flight = false,
            Some(i) => {
                if let Some(peer) = d.in_flight.remove(&i) {
                    // Leave a peer that failed us once there is another to ask.
                    if d.peers.len() > 1 {
                        d.peers.retain(|p| *p != peer);
                    }
                }
            }
        }
        if d.failures > MAX_FAILURES {
            tracing::debug!(purpose = ?d.purpose, "giving up a download");
            self.downloads.remove(&address);
            return Vec::new();
        }
        Self::pump(address, d)
    }

    /// Drops downloads the caller no longer needs.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Purpose) -> bool) {
        self.downloads.retain(|_, d| keep(&d.purpose));
        let live = &self.downloads;
        self.requests.retain(|_, (a, _)| live.contains_key(a));
    }
}
