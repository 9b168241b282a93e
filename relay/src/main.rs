//! `tabswarm-relay`: gives browser tabs and NATed nodes a way to reach each other.
//!
//! A circuit-relay v2 server with limits sized for training traffic (a model update is
//! hundreds of KiB, so libp2p's 128 KiB / 2 min circuit default would cut every transfer),
//! plus identify, ping and a kad server so it doubles as the bootstrap peer.

mod behaviour;
mod cli;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use libp2p::Multiaddr;
use libp2p::swarm::SwarmEvent;
use tabswarm_net::{load_or_create_certificate, load_or_create_keypair, with_peer};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format_json);
    tabswarm_net::install_crypto_provider();
    run(cli).await
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.home)
        .with_context(|| format!("creating the relay's home {}", cli.home.display()))?;
    let key = load_or_create_keypair(&cli.home.join("identity.key"))?;
    let cert = load_or_create_certificate(&cli.home.join("webrtc.pem"))?;
    let relay_config = cli.relay_config();
    let limits = cli.connection_limits();
    let mut swarm = tabswarm_net::server_transports!(key, cert)
        .with_behaviour(|key| Behaviour::new(key, relay_config, limits))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(cli.idle_timeout_secs))
        })
        .build();

    for addr in cli.listen().multiaddrs() {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    for addr in &cli.external_address {
        swarm.add_external_address(addr.clone());
    }
    let peer_id = *swarm.local_peer_id();
    info!(%peer_id, "relay starting");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down");
                return Ok(());
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    // libp2p turns on the relay's HOP protocol only for confirmed external
                    // addresses; what we listen on is what we serve, so confirm it.
                    if cli.external_address.is_empty() {
                        swarm.add_external_address(address.clone());
                    }
                    let full: Multiaddr = with_peer(address, peer_id);
                    // stdout carries only addresses, one per line, for scripts and tests; a
                    // reader that went away must not take the relay down with it.
                    let _ = writeln!(std::io::stdout(), "{full}");
                    info!(address = %full, "listening");
                }
                SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => log_relay_event(e),
                SwarmEvent::Behaviour(BehaviourEvent::Identify(libp2p::identify::Event::Received { peer_id, info, .. })) => {
                    tabswarm_net::replace_kad_addresses(&mut swarm.behaviour_mut().kad, &peer_id, info.listen_addrs);
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    debug!(%peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                    debug!(%peer_id, ?cause, "disconnected");
                }
                SwarmEvent::IncomingConnectionError { error, .. } => debug!(%error, "incoming connection failed"),
                SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
                _ => {}
            }
        }
    }
}

fn log_relay_event(event: libp2p::relay::Event) {
    use libp2p::relay::Event as E;
    match event {
        E::ReservationReqAccepted { src_peer_id, .. } => {
            info!(peer = %src_peer_id, "reservation accepted")
        }
        E::ReservationReqDenied { src_peer_id, .. } => {
            warn!(peer = %src_peer_id, "reservation denied (limits)")
        }
        E::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened"),
        E::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => {
            warn!(src = %src_peer_id, dst = %dst_peer_id, "circuit denied (limits or no reservation)")
        }
        E::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "circuit closed"),
        other => debug!(?other, "relay"),
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
