//! Which addresses a process listens on: one IP, one port per transport (0 = any free port).

use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;

/// The listen plan shared by relay and node.
#[derive(Clone, Debug)]
pub struct Listen {
    /// Interface to bind.
    pub ip: IpAddr,
    /// TCP port.
    pub tcp_port: u16,
    /// UDP port for QUIC.
    pub quic_port: u16,
    /// TCP port for WebSocket (what browsers fall back to).
    pub ws_port: u16,
    /// UDP port for WebRTC-direct (what browsers use first).
    pub webrtc_port: u16,
}

impl Listen {
    /// One multiaddr per transport.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        let ip = match self.ip {
            IpAddr::V4(v4) => Protocol::Ip4(v4),
            IpAddr::V6(v6) => Protocol::Ip6(v6),
        };
        let base = Multiaddr::empty().with(ip);
        vec![
            base.clone().with(Protocol::Tcp(self.tcp_port)),
            base.clone()
                .with(Protocol::Udp(self.quic_port))
                .with(Protocol::QuicV1),
            base.clone()
                .with(Protocol::Tcp(self.ws_port))
                .with(Protocol::Ws("/".into())),
            base.with(Protocol::Udp(self.webrtc_port))
                .with(Protocol::WebRTCDirect),
        ]
    }
}

/// `addr` ending in `/p2p/<peer>` (unchanged if it already names a peer).
pub fn with_peer(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        addr
    } else {
        addr.with(Protocol::P2p(peer))
    }
}

/// Whether an address is on this machine or a private network (what a demo prints first).
pub fn is_loopback_or_private(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_private(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_per_transport() {
        let listen = Listen {
            ip: "127.0.0.1".parse().unwrap(),
            tcp_port: 1,
            quic_port: 2,
            ws_port: 3,
            webrtc_port: 4,
        };
        let addrs: Vec<String> = listen.multiaddrs().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/127.0.0.1/udp/2/quic-v1",
                "/ip4/127.0.0.1/tcp/3/ws",
                "/ip4/127.0.0.1/udp/4/webrtc-direct"
            ]
        );
        let peer = PeerId::random();
        let a = with_peer(addrs[0].parse().unwrap(), peer);
        assert_eq!(with_peer(a.clone(), peer), a);
    }
}
