//! tabswarm on libp2p.
//!
//! - Feature `peer`: [`protocols`], what every peer speaks beside its transports (gossipsub
//!   configured for the run, the fetch protocol, identify, ping), composed once for the
//!   server node and the browser tab. Builds for `wasm32-unknown-unknown`.
//! - Feature `server`: what the native relay and node share: persisted identity and webrtc
//!   certificate (so multiaddrs with `/certhash` survive restarts), the listen plan, and the
//!   swarm's transports ([`server_transports!`]).

#[cfg(feature = "server")]
mod kad_addresses;
#[cfg(feature = "server")]
mod keyfile;
#[cfg(feature = "server")]
mod listen;
#[cfg(feature = "peer")]
pub mod protocols;

#[cfg(feature = "server")]
pub use kad_addresses::replace_kad_addresses;
#[cfg(feature = "server")]
pub use keyfile::{load_or_create_certificate, load_or_create_keypair};
#[cfg(feature = "server")]
pub use listen::{Listen, is_loopback_or_private, with_peer};

#[cfg(feature = "server")]
/// Chooses rustls's crypto provider for the process. Call once at start, before any QUIC
/// connection: our dependency tree enables two providers, and rustls then refuses to guess
/// (every QUIC handshake would panic).
pub fn install_crypto_provider() {
    // Err only means one is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(feature = "server")]
#[doc(hidden)]
pub use {libp2p as __libp2p, libp2p_webrtc as __webrtc};

/// A `SwarmBuilder` with every transport a tabswarm server listens on: tcp (Noise, yamux),
/// quic, webrtc-direct (with the given certificate), dns and websocket. The relay adds its
/// behaviour next; the node adds the relay client first. A macro because libp2p's type-state
/// builder cannot be returned from a function; use it inside an `async` function returning
/// `anyhow::Result` (it uses `?` and `.await`).
#[cfg(feature = "server")]
#[macro_export]
macro_rules! server_transports {
    ($key:expr, $certificate:expr) => {
        $crate::__libp2p::SwarmBuilder::with_existing_identity($key)
            .with_tokio()
            .with_tcp(
                $crate::__libp2p::tcp::Config::default().nodelay(true),
                $crate::__libp2p::noise::Config::new,
                $crate::__libp2p::yamux::Config::default,
            )?
            .with_quic()
            .with_other_transport(|key| {
                $crate::__webrtc::tokio::Transport::new(key.clone(), $certificate.clone())
            })?
            .with_dns()?
            .with_websocket(
                $crate::__libp2p::noise::Config::new,
                $crate::__libp2p::yamux::Config::default,
            )
            .await?
    };
}

/// Protocol names every tabswarm peer speaks.
pub mod protocol {
    use libp2p::StreamProtocol;

    /// tabswarm's own kad DHT (kept apart from the public IPFS one).
    pub const KAD: StreamProtocol = StreamProtocol::new("/tabswarm/kad/1.0.0");
    /// What identify advertises as the protocol family.
    pub const IDENTIFY: &str = "/tabswarm/id/1.0.0";
}
