//! libp2p pieces the relay and the node share: persisted identity and webrtc certificate (so
//! multiaddrs with `/certhash` survive restarts), the listen plan, and the swarm's transports.

mod keyfile;
mod listen;

pub use keyfile::{load_or_create_certificate, load_or_create_keypair};
pub use listen::{Listen, is_loopback_or_private, with_peer};

/// Chooses rustls's crypto provider for the process. Call once at start, before any QUIC
/// connection: our dependency tree enables two providers, and rustls then refuses to guess
/// (every QUIC handshake would panic).
pub fn install_crypto_provider() {
    // Err only means one is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Protocol names every tabswarm peer speaks.
pub mod protocol {
    use libp2p::StreamProtocol;

    /// tabswarm's own kad DHT (kept apart from the public IPFS one).
    pub const KAD: StreamProtocol = StreamProtocol::new("/tabswarm/kad/1.0.0");
    /// What identify advertises as the protocol family.
    pub const IDENTIFY: &str = "/tabswarm/id/1.0.0";
}
