//! What kad remembers of a peer's addresses.
//!
//! kad appends every address it is told and forgets one only when dialling it fails. A relay
//! (the bootstrap peer everyone asks) never dials the peers it serves, so each restart of a
//! node on new ports left one more set of dead addresses ahead of the live ones in the
//! relay's answers. After a few restarts of every validator at once, peers that asked it
//! spent their dials on the dead ones (a QUIC or WebRTC dial to a closed port waits for its
//! timeout) and the validators, each connected to the relay alone, never met again: the
//! height stalled for good.

use libp2p::kad::{self, store::MemoryStore};
use libp2p::{Multiaddr, PeerId};

/// Makes `addrs` (what `peer` just said it listens on, in identify) all that `kad` knows of
/// `peer`'s addresses. identify's list is the whole current set, so any other address is
/// from an earlier life of the peer.
pub fn replace_kad_addresses(
    kad: &mut kad::Behaviour<MemoryStore>,
    peer: &PeerId,
    addrs: impl IntoIterator<Item = Multiaddr>,
) {
    let addrs: Vec<Multiaddr> = addrs.into_iter().collect();
    if addrs.is_empty() {
        return;
    }
    kad.remove_peer(peer);
    for addr in addrs {
        kad.add_address(peer, addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(kad: &mut kad::Behaviour<MemoryStore>, peer: &PeerId) -> Vec<Multiaddr> {
        kad.kbuckets()
            .flat_map(|b| {
                b.iter()
                    .filter(|e| e.node.key.preimage() == peer)
                    .flat_map(|e| e.node.value.iter().cloned().collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            // kad keeps them with `/p2p/<peer>` at the end.
            .map(|a| {
                a.into_iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_restarted_peer_is_known_only_at_its_new_addresses() {
        let me = PeerId::random();
        let mut kad = kad::Behaviour::new(me, MemoryStore::new(me));
        let peer = PeerId::random();
        let old: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let new: Multiaddr = "/ip4/127.0.0.1/udp/4002/quic-v1".parse().unwrap();
        kad.add_address(&peer, old.clone());
        // What kad does by itself: the new address goes after the dead one.
        kad.add_address(&peer, new.clone());
        assert_eq!(known(&mut kad, &peer), vec![old.clone(), new.clone()]);
        replace_kad_addresses(&mut kad, &peer, [new.clone()]);
        assert_eq!(known(&mut kad, &peer), vec![new]);
        // An empty list (a peer that listens nowhere yet) is no reason to forget it.
        replace_kad_addresses(&mut kad, &peer, []);
        assert_eq!(known(&mut kad, &peer).len(), 1);
    }
}
