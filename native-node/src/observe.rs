//! What the operator sees of the peer: its events as log lines and Prometheus metrics, and
//! the JSON `/status` snapshot.

use tabswarm_consensus::genesis::hex;
use tabswarm_peer::data::DataEvent;
use tabswarm_peer::{Event, Queue, Snapshot};
use tracing::{debug, info, warn};

use crate::metrics::{DataStatus, Metrics, QueueLabel, QueueStatus, Status};

/// Logs one peer event and updates the metrics it moves.
pub(crate) fn on_event(metrics: &Metrics, credit: u64, event: Event) {
    match event {
        Event::Committed {
            report,
            applied,
            round_ms,
            train_ms,
            network_ms,
            consensus_ms,
        } => {
            metrics.commits.inc();
            metrics.height.set(report.height as i64);
            metrics.round_seconds.observe(round_ms as f64 / 1e3);
            metrics.train_seconds.set(train_ms as f64 / 1e3);
            metrics.network_seconds.set(network_ms as f64 / 1e3);
            metrics.consensus_seconds.set(consensus_ms as f64 / 1e3);
            metrics.credit.set(credit as i64);
            info!(
                height = report.height,
                applied,
                updates = report.updates,
                samples = report.samples,
                train_loss = format_args!("{:.4}", report.mean_train_loss),
                round_ms,
                train_ms,
                network_ms,
                consensus_ms,
                "committed"
            );
        }
        Event::Tested {
            height,
            loss,
            accuracy,
        } => {
            metrics.loss.set(f64::from(loss));
            metrics.accuracy.set(f64::from(accuracy));
            info!(
                height,
                test_loss = format_args!("{loss:.4}"),
                test_accuracy = format_args!("{:.2}%", accuracy * 100.0),
                "evaluated"
            );
        }
        Event::InSync { height, validator } => {
            info!(height, validator, "in sync; taking part");
        }
        Event::CatchingUp { height } => {
            info!(height, "catching up: blocks verified and stored");
        }
        Event::CheckpointAdopted { height } => info!(
            height,
            "parameters restored from a peer's checkpoint (hash checked against the ledger)"
        ),
        Event::UpdatePublished { height, .. } => {
            metrics.updates_published.inc();
            debug!(height, "update announced");
        }
        Event::TrainingFailed(e) => warn!(error = %e, "local training failed"),
        Event::Data(e) => on_data(metrics, e),
        other => debug!(?other, "peer event"),
    }
}

fn on_data(metrics: &Metrics, event: DataEvent) {
    match event {
        DataEvent::Manifest { epoch, shards } => {
            info!(
                epoch,
                shards, "data manifest verified (signed by the run's data owner)"
            );
        }
        DataEvent::Key { epoch } => info!(epoch, "dataset key received: shards can be read"),
        DataEvent::Stored { index, restored } => debug!(index, restored, "shard stored"),
        DataEvent::Damaged { index } => {
            metrics.shards_damaged.inc();
            warn!(
                index,
                "stored shard damaged (does not match the manifest): dropped, fetching it again"
            );
        }
        DataEvent::Unreadable { index, reason } => {
            warn!(index, %reason, "a shard matching the manifest does not decrypt");
        }
        DataEvent::Ready { train } => info!(train_shards = train, "the run's data is here"),
    }
}

/// What the node's network side knows, for the status page.
#[derive(Debug)]
pub(crate) struct NetView {
    pub(crate) peers: usize,
    pub(crate) listen: Vec<String>,
    pub(crate) direct: Vec<String>,
    pub(crate) relayed: Vec<String>,
    /// Connected peers with a negative gossip score, and the score.
    pub(crate) penalised: Vec<(String, f64)>,
}

/// Fills the status page from the peer's snapshot and the network view.
pub(crate) fn update_status(
    s: &mut Status,
    snap: Snapshot,
    queues: Vec<Queue>,
    net: NetView,
    metrics: &Metrics,
) {
    // Consensus's buffers exist only while it runs: none left over from before a catch-up.
    s.queues.clear();
    for q in queues {
        metrics
            .queue_length
            .get_or_create(&QueueLabel { queue: q.name })
            .set(q.len as i64);
        s.queues.insert(
            q.name.to_owned(),
            QueueStatus {
                len: q.len,
                bound: q.bound,
            },
        );
    }
    metrics.round.set(snap.round);
    s.direct_peers = net.direct;
    s.relayed_peers = net.relayed;
    s.penalised_peers = net.penalised;
    s.peers = net.peers;
    s.listen = net.listen;
    s.height = snap.height;
    s.round = snap.round;
    s.head_hash = hex(&snap.head_hash);
    s.param_hash = hex(&snap.param_hash);
    s.test_loss = snap.report.test.map(|t| t.0);
    s.test_accuracy = snap.report.test.map(|t| t.1);
    s.last_round_updates = snap.report.updates;
    s.last_round_samples = snap.report.samples;
    s.late_announcements = snap.app.late_announcements;
    s.credit = snap.credit;
    s.syncing = snap.syncing;
    if let Some(d) = &snap.data {
        metrics.shards_held.set(d.held.len() as i64);
    }
    s.data = snap.data.map(|d| DataStatus {
        epoch: d.epoch,
        shards: d.shards,
        held: d.held,
        readable: d.has_key,
        ready: d.ready,
    });
    s.bytes_received = metrics.bytes_in.get();
    s.bytes_sent = metrics.bytes_out.get();
    s.rejected.malformed = snap.rejected.malformed;
    s.rejected.bad_signature = snap.rejected.bad_signature;
    s.rejected.wrong_run_or_stale = snap.rejected.wrong_run_or_stale;
    s.rejected.proposals_refused = snap.app.proposals_refused;
    s.rejected.updates_refused = snap.app.updates_refused;
    s.rejected.non_members_refused = snap.app.non_members_refused;
    s.rejected.announcements_dropped = snap.app.announcements_dropped;
    if let Some(st) = snap.consensus {
        s.rejected.consensus_bad_signatures = st.bad_signatures;
        s.rejected.consensus_stale = st.stale;
        s.signer.refused_to_sign = st.refused_to_sign;
    }
    if let Some((h, r, step)) = snap.signer.and_then(|st| st.last) {
        s.signer.height = h.0;
        s.signer.round = r.as_i64();
        s.signer.step = format!("{step:?}");
    }
}
