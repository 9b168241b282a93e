//! Prometheus metrics and the `/status` JSON, served over HTTP for operators and
//! `tabswarm-node status`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Every metric the node exports.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) height: Gauge,
    pub(crate) round: Gauge,
    pub(crate) commits: Counter,
    pub(crate) peers: Gauge,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) loss: Gauge<f64, AtomicU64>,
    pub(crate) accuracy: Gauge<f64, AtomicU64>,
    pub(crate) round_seconds: Histogram,
    pub(crate) train_seconds: Gauge<f64, AtomicU64>,
    pub(crate) network_seconds: Gauge<f64, AtomicU64>,
    pub(crate) consensus_seconds: Gauge<f64, AtomicU64>,
    pub(crate) updates_published: Counter,
    pub(crate) messages_rejected: Counter,
    pub(crate) credit: Gauge,
    pub(crate) shards_held: Gauge,
    pub(crate) shards_damaged: Counter,
    pub(crate) queue_length: Family<QueueLabel, Gauge>,
}

/// The label of a queue's length.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    pub(crate) queue: &'static str,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            height: Gauge::default(),
            round: Gauge::default(),
            commits: Counter::default(),
            peers: Gauge::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            loss: Gauge::default(),
            accuracy: Gauge::default(),
            round_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            train_seconds: Gauge::default(),
            network_seconds: Gauge::default(),
            consensus_seconds: Gauge::default(),
            updates_published: Counter::default(),
            messages_rejected: Counter::default(),
            credit: Gauge::default(),
            shards_held: Gauge::default(),
            shards_damaged: Counter::default(),
            queue_length: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("tabswarm");
        r.register(
            "queue_length",
            "Entries in each of the node's buffers (see /status \"queues\" for their bounds)",
            m.queue_length.clone(),
        );
        r.register(
            "shards_held",
            "Shards of the run's data held and checked against the manifest",
            m.shards_held.clone(),
        );
        r.register(
            "shards_damaged",
            "Stored shards found damaged at start (dropped and fetched again)",
            m.shards_damaged.clone(),
        );
        r.register("height", "Committed ledger height", m.height.clone());
        r.register(
            "round",
            "Consensus round within the height being decided",
            m.round.clone(),
        );
        r.register("commits", "Blocks committed since start", m.commits.clone());
        r.register("peers", "Connected peers", m.peers.clone());
        r.register(
            "app_bytes_received",
            "Gossip and fetch payload bytes received",
            m.bytes_in.clone(),
        );
        r.register(
            "app_bytes_sent",
            "Gossip and fetch payload bytes sent",
            m.bytes_out.clone(),
        );
        r.register(
            "test_loss",
            "Test loss of the committed model",
            m.loss.clone(),
        );
        r.register(
            "test_accuracy",
            "Test accuracy of the committed model",
            m.accuracy.clone(),
        );
        r.register(
            "round_duration_seconds",
            "Wall time between commits",
            m.round_seconds.clone(),
        );
        r.register(
            "last_round_train_seconds",
            "Local training time in the last round",
            m.train_seconds.clone(),
        );
        r.register(
            "last_round_network_seconds",
            "Time waiting for updates and payloads in the last round",
            m.network_seconds.clone(),
        );
        r.register(
            "last_round_consensus_seconds",
            "Time from proposal to commit in the last round",
            m.consensus_seconds.clone(),
        );
        r.register(
            "updates_published",
            "Updates this node trained and announced",
            m.updates_published.clone(),
        );
        r.register(
            "messages_rejected",
            "Gossip messages refused by validation",
            m.messages_rejected.clone(),
        );
        r.register(
            "credit",
            "This node's credit in the ledger (included updates)",
            m.credit.clone(),
        );
        m
    }
}

/// What `/status` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) peer_id: String,
    pub(crate) address: String,
    pub(crate) run_id: String,
    pub(crate) roles: Vec<String>,
    pub(crate) height: u64,
    pub(crate) round: i64,
    pub(crate) head_hash: String,
    pub(crate) param_hash: String,
    pub(crate) peers: usize,
    pub(crate) test_loss: Option<f32>,
    pub(crate) test_accuracy: Option<f32>,
    pub(crate) last_round_updates: usize,
    pub(crate) last_round_samples: u64,
    /// Announcements of trainers slower than the chain that this node now waits for when
    /// it proposes (DESIGN.md, "A round", item 9).
    pub(crate) late_announcements: u64,
    pub(crate) credit: u64,
    pub(crate) listen: Vec<String>,
    /// Peers with a direct connection.
    pub(crate) direct_peers: Vec<String>,
    /// Peers reached only through a relay circuit.
    pub(crate) relayed_peers: Vec<String>,
    /// Peers whose gossip score went negative (they sent messages our validation refused).
    pub(crate) penalised_peers: Vec<(String, f64)>,
    pub(crate) syncing: bool,
    /// Gossip and fetch payload bytes received and sent since start.
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) signer: SignerStatus,
    pub(crate) rejected: Rejected,
    /// The run's data held here (runs that keep it on the network).
    pub(crate) data: Option<DataStatus>,
    /// Each buffer's length and the most it may hold (null: bounded only indirectly).
    pub(crate) queues: std::collections::BTreeMap<String, QueueStatus>,
    /// Every trainer's credit in the committed ledger, by hex address (`/credits/{address}`;
    /// left out of `/status`, whose size must not grow with the number of trainers).
    #[serde(skip)]
    pub(crate) credits: std::collections::BTreeMap<String, u64>,
}

/// One buffer's fill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct QueueStatus {
    pub(crate) len: usize,
    pub(crate) bound: Option<usize>,
}

/// What the node holds of the run's data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DataStatus {
    pub(crate) epoch: u64,
    pub(crate) shards: usize,
    /// Indices of the shards held.
    pub(crate) held: Vec<u32>,
    /// Whether this node can read them (a grant, or an open run).
    pub(crate) readable: bool,
    /// Whether training and scoring have what they need.
    pub(crate) ready: bool,
}

/// The persisted signer state, for checking no double signature happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SignerStatus {
    pub(crate) height: u64,
    pub(crate) round: i64,
    pub(crate) step: String,
    pub(crate) refused_to_sign: u64,
}

/// What this node refused, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Rejected {
    pub(crate) malformed: u64,
    pub(crate) bad_signature: u64,
    pub(crate) wrong_run_or_stale: u64,
    pub(crate) consensus_bad_signatures: u64,
    pub(crate) consensus_stale: u64,
    pub(crate) proposals_refused: u64,
    pub(crate) updates_refused: u64,
    /// Announcements and proposals naming a trainer that is not a member of a closed run.
    pub(crate) non_members_refused: u64,
    /// Announcements turned away because the pool had no room (fresh keys over their share).
    pub(crate) announcements_dropped: u64,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    status: Arc<Mutex<Status>>,
}

/// Serves `/metrics` and `/status` on `addr`; returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    registry: Registry,
    status: Arc<Mutex<Status>>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the metrics address {addr} (choose another with --metrics)")
    })?;
    let bound = listener.local_addr()?;
    let shared = Arc::new(Shared { registry, status });
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route("/credits/{address}", get(credit_handler))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &shared.registry).is_err() {
        body.clear();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// One trainer's credit, read from the committed ledger: how a volunteer (or a test) checks
/// what a tab shows about itself against a node.
async fn credit_handler(
    State(shared): State<Arc<Shared>>,
    Path(address): Path<String>,
) -> impl IntoResponse {
    let address = address.to_ascii_lowercase();
    if address.len() != 64 || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (
            StatusCode::BAD_REQUEST,
            "an address is 64 hex digits (the tab shows its own under 'Your address')",
        )
            .into_response();
    }
    let (height, credit) = shared
        .status
        .lock()
        .map(|s| (s.height, s.credits.get(&address).copied().unwrap_or(0)))
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "address": address, "credit": credit, "height": height }))
        .into_response()
}

async fn status_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let status = shared.status.lock().map(|s| s.clone()).unwrap_or_default();
    axum::Json(status)
}
