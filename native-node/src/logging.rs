use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Our own info lines; libp2p and webrtc only when something is wrong.
const DEFAULT_FILTER: &str = "info,arc_malachitebft_core_consensus=warn,arc_malachitebft_core_driver=warn,libp2p_gossipsub=error,libp2p_swarm=warn,libp2p_kad=warn,libp2p_webrtc=warn,webrtc=error,webrtc_ice=error,webrtc_mdns=error";

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays for results.
pub(crate) fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
