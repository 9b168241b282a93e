//! Command line of `tabswarm-relay`. Every flag can also come from a `TABSWARM_RELAY_*`
//! environment variable.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use libp2p::{Multiaddr, connection_limits::ConnectionLimits, relay};
use tabswarm_net::Listen;

/// Relay for tabswarm: lets browser tabs and nodes behind NAT reach each other, and serves as
/// the bootstrap peer. Prints its full multiaddrs (with /p2p and /certhash) on stdout, one per
/// line; logs go to stderr (RUST_LOG filters them).
#[derive(Debug, Parser)]
#[command(name = "tabswarm-relay", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Directory for the identity key and webrtc certificate; keeping it keeps the relay's
    /// peer id and /certhash, so addresses handed out stay valid across restarts.
    #[arg(long, env = "TABSWARM_RELAY_HOME", default_value = "relay-home")]
    pub(crate) home: PathBuf,

    /// Interface to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "TABSWARM_RELAY_IP", default_value = "0.0.0.0")]
    pub(crate) ip: IpAddr,

    /// TCP port (0 = any free port).
    #[arg(long, env = "TABSWARM_RELAY_TCP_PORT", default_value_t = 4001)]
    pub(crate) tcp_port: u16,

    /// UDP port for QUIC.
    #[arg(long, env = "TABSWARM_RELAY_QUIC_PORT", default_value_t = 4001)]
    pub(crate) quic_port: u16,

    /// TCP port for WebSocket (the browser fallback).
    #[arg(long, env = "TABSWARM_RELAY_WS_PORT", default_value_t = 4002)]
    pub(crate) ws_port: u16,

    /// UDP port for WebRTC-direct (what browsers use first).
    #[arg(long, env = "TABSWARM_RELAY_WEBRTC_PORT", default_value_t = 4003)]
    pub(crate) webrtc_port: u16,

    /// Public address to announce (repeatable); without it every listen address is announced.
    #[arg(
        long = "external-address",
        env = "TABSWARM_RELAY_EXTERNAL_ADDRESS",
        value_delimiter = ','
    )]
    pub(crate) external_address: Vec<Multiaddr>,

    /// Most reservations held at once (each is a peer reachable through this relay).
    #[arg(long, env = "TABSWARM_RELAY_MAX_RESERVATIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_reservations: u32,

    /// Most reservations one peer may hold.
    #[arg(long, env = "TABSWARM_RELAY_MAX_RESERVATIONS_PER_PEER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_reservations_per_peer: u32,

    /// How long a reservation lasts before the peer must renew it, in seconds.
    #[arg(long, env = "TABSWARM_RELAY_RESERVATION_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) reservation_secs: u64,

    /// Most circuits relayed at once.
    #[arg(long, env = "TABSWARM_RELAY_MAX_CIRCUITS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_circuits: u32,

    /// Most circuits one peer may open at once.
    #[arg(long, env = "TABSWARM_RELAY_MAX_CIRCUITS_PER_PEER", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_circuits_per_peer: u32,

    /// Longest a circuit lives, in seconds (training peers hold theirs for a whole session).
    #[arg(long, env = "TABSWARM_RELAY_MAX_CIRCUIT_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_circuit_secs: u64,

    /// Most bytes through one circuit, both directions together, in MiB (an MLP update is
    /// ~0.4 MiB and a peer moves several per round).
    #[arg(long, env = "TABSWARM_RELAY_MAX_CIRCUIT_MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub(crate) max_circuit_mib: u64,

    /// Reservations and circuits each source IP may open per minute (0 = no per-IP limit;
    /// use 0 only when every peer shares an address, as on one test machine).
    #[arg(long, env = "TABSWARM_RELAY_PER_IP_PER_MINUTE", default_value_t = 60)]
    pub(crate) per_ip_per_minute: u32,

    /// Most connections in total.
    #[arg(long, env = "TABSWARM_RELAY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,

    /// Close a connection after this many idle seconds.
    #[arg(long, env = "TABSWARM_RELAY_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub(crate) idle_timeout_secs: u64,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "TABSWARM_RELAY_LOG_JSON")]
    pub(crate) log_format_json: bool,
}

impl Cli {
    pub(crate) fn listen(&self) -> Listen {
        Listen {
            ip: self.ip,
            tcp_port: self.tcp_port,
            quic_port: self.quic_port,
            ws_port: self.ws_port,
            webrtc_port: self.webrtc_port,
        }
    }

    pub(crate) fn relay_config(&self) -> relay::Config {
        let mut config = relay::Config {
            max_reservations: self.max_reservations as usize,
            max_reservations_per_peer: self.max_reservations_per_peer as usize,
            reservation_duration: Duration::from_secs(self.reservation_secs),
            reservation_rate_limiters: Vec::new(),
            max_circuits: self.max_circuits as usize,
            max_circuits_per_peer: self.max_circuits_per_peer as usize,
            max_circuit_duration: Duration::from_secs(self.max_circuit_secs),
            max_circuit_bytes: self.max_circuit_mib * 1024 * 1024,
            circuit_src_rate_limiters: Vec::new(),
        };
        // Per peer: libp2p's defaults (30 per 2 minutes) bound a misbehaving peer.
        let per_peer = NonZeroU32::new(30).expect("30 > 0");
        config = config
            .reservation_rate_per_peer(per_peer, Duration::from_secs(120))
            .circuit_src_per_peer(per_peer, Duration::from_secs(120));
        if let Some(per_ip) = NonZeroU32::new(self.per_ip_per_minute) {
            config = config
                .reservation_rate_per_ip(per_ip, Duration::from_secs(60))
                .circuit_src_per_ip(per_ip, Duration::from_secs(60));
        }
        config
    }

    pub(crate) fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits::default()
            .with_max_established(Some(self.max_connections))
            .with_max_established_per_peer(Some(8))
            .with_max_pending_incoming(Some(256))
    }
}
