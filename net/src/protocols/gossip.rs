//! gossipsub as tabswarm configures it.
//!
//! - **Message id = hash of the content and of the time window it is seen in.** The same
//!   vote, block or announcement reaching a peer from several publishers or paths within a
//!   window is one message: every node publishes each block it commits, and those copies are
//!   suppressed instead of flooding the mesh N times. A replay in a later window is a new
//!   message to gossipsub, and the peer's own check (`tabswarm_peer`: a vote it holds,
//!   `Verdict::Ignore` for stale messages) keeps it from being forwarded.
//! - The window (and the duplicate cache) lasts a little less than the run's rebroadcast
//!   interval (at least 3 s, past the message cache's 2.5 s), so every re-publish of a vote
//!   that consensus asks for falls in a new window and goes out. Content alone is not enough:
//!   gossipsub refuses to publish an id still in its duplicate cache, and that cache only
//!   forgets ids when a new one arrives; in a stalled round nothing new arrives, so the
//!   rebroadcasts that would end the stall were refused forever (two relay-only validators
//!   whose circuit closed for a few seconds never committed again).
//! - **Validation before forwarding**: nothing is relayed until the peer's verdict comes back
//!   (strict mode: signed by the libp2p key of its publisher).
//! - **Peer scoring**: each message the peer rejects costs its sender (P4, squared per topic),
//!   so a peer that keeps sending forged or malformed messages drops below the graylist
//!   threshold (-80) after about four in one topic and is ignored; one glitch decays away.
//!   Sharing an IP address costs nothing (P6 off): a NAT, a machine or a relay puts many
//!   honest peers behind one address.
//!   Delivery-rate terms are off: rounds are bursty and small networks would punish honest
//!   peers for being quiet between rounds. Slowness costs nothing either (gossipsub 0.50's
//!   slow-peer penalty and the broken-promise penalty P7 are off), and a message waits in a
//!   connection's queue as long as a duplicate window before it is abandoned (gossipsub
//!   forwards for 1 s by default): see [`behaviour`]. Positive terms are off too (no credit
//!   for time in the mesh or first deliveries), so good behaviour cannot be banked against
//!   rejections.

use std::time::Duration;

use libp2p::gossipsub::{self, MessageId};
use libp2p::identity::Keypair;
use sha2::{Digest, Sha256};

use super::{Mesh, Topics};

/// Largest gossip message: a block with a full certificate and evidence (consensus's own
/// per-kind limits are checked again on receipt).
pub const MAX_GOSSIP: usize = tabswarm_consensus::wire::MAX_MESSAGE;

/// Heartbeat of the mesh.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Shortest duplicate cache, whatever the run's rebroadcast interval: longer than a message
/// stays in the message cache (gossipsub's `history_length`, 5 heartbeats), so one that comes
/// back through IHAVE/IWANT gossip is still known as a duplicate.
const MIN_DUPLICATE_CACHE: Duration = Duration::from_secs(3);

/// The id of a gossip message: SHA-256 of its data and of the index of the time `window`
/// it is seen in.
pub fn message_id(data: &[u8], window: u64) -> MessageId {
    let mut h = Sha256::new();
    h.update(data);
    h.update(window.to_le_bytes());
    MessageId::new(&h.finalize())
}

/// The index of the window of length `window` that the wall clock is in now. Peers' clocks
/// differ, so a copy seen near a window's edge may count twice: one more validation, no
/// more.
pub fn window_now(window: Duration) -> u64 {
    let since_epoch = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_epoch.as_millis() / window.as_millis().max(1)) as u64
}

/// How long a message id is remembered: four fifths of the run's rebroadcast interval, at
/// least [`MIN_DUPLICATE_CACHE`].
pub fn duplicate_cache(rebroadcast: Duration) -> Duration {
    (rebroadcast * 4 / 5).max(MIN_DUPLICATE_CACHE)
}

/// gossipsub for a run's `topics`.
pub fn behaviour(
    key: &Keypair,
    topics: &Topics,
    mesh: Mesh,
    rebroadcast: Duration,
) -> Result<gossipsub::Behaviour, String> {
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        config(mesh, rebroadcast)?,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    gossipsub
        .with_peer_score(
            score_params(topics),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(|e| format!("gossipsub scoring: {e}"))?;
    Ok(gossipsub)
}

/// gossipsub's settings for a run whose votes are rebroadcast every `rebroadcast`.
fn config(mesh: Mesh, rebroadcast: Duration) -> Result<gossipsub::Config, String> {
    let window = duplicate_cache(rebroadcast);
    // A busy machine does not poll a connection for a second now and then (32 nodes and 4
    // tabs on 2 cores in the soak). gossipsub then abandoned the votes it was forwarding
    // after 1 s and charged the connection's peer as slow, each drop; peers graylisted one
    // another, and with every validator connected to every other one a height took 10
    // minutes. A vote forwarded late is still useful until its rebroadcast goes out.
    gossipsub::ConfigBuilder::default()
        .forward_queue_duration(window)
        .publish_queue_duration(window.max(Duration::from_secs(5)))
        .max_transmit_size(MAX_GOSSIP)
        .message_id_fn(move |m: &gossipsub::Message| message_id(&m.data, window_now(window)))
        .duplicate_cache_time(window)
        .validate_messages()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(HEARTBEAT)
        .mesh_n_low(mesh.low)
        .mesh_n(mesh.target)
        .mesh_n_high(mesh.high)
        .mesh_outbound_min(1.min(mesh.low))
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))
}

/// Peer scores: rejected messages cost their sender (see the module docs).
pub fn score_params(topics: &Topics) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    for topic in topics.all() {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -5.0,
            invalid_message_deliveries_decay: 0.9,
            // No credit for time in the mesh: libp2p's default (1 point per ms, up to 3,600
            // per topic) let a peer that sat in the mesh for a few seconds absorb any number
            // of rejections and never be graylisted.
            time_in_mesh_weight: 0.0,
            first_message_deliveries_weight: 0.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            ..gossipsub::TopicScoreParams::default()
        };
        params.topics.insert(topic.hash(), topic_params);
    }
    // No penalty for sharing an IP address (P6). Volunteers behind one NAT, tabs and nodes
    // on one machine, and every peer reached through a relay share an address; libp2p's
    // default (-5 x (peers - 10)^2) put the 16 validators of one machine at -180, under the
    // graylist threshold, so they ignored each other and never committed a block. Identities
    // are bounded by stake and by the update pool's rules instead (DESIGN.md, threat model).
    params.ip_colocation_factor_weight = 0.0;
    // No penalty for being slow: volunteers' tabs and busy servers are, and gossipsub's
    // default (-0.2 per message their queue could not take) graylisted honest validators
    // of an overloaded network at 400 drops, so their votes were ignored (see `behaviour`).
    params.slow_peer_weight = 0.0;
    // Nor for broken promises (P7: an IHAVE whose message did not come within 3 s of our
    // IWANT, or a GRAFT too soon after a PRUNE), for the same reason: in the 32-peer soak,
    // with the slow-peer penalty already off, one validator held another at -67,240 (82
    // broken promises within about a second, squared, x -10) and a height took minutes.
    // What an IHAVE flood can cost is bounded by gossipsub's per-heartbeat caps instead
    // (`max_ihave_length`, `max_ihave_messages`).
    params.behaviour_penalty_weight = 0.0;
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_has_one_id_whoever_publishes_it_within_a_window() {
        assert_eq!(message_id(b"block 7", 5), message_id(b"block 7", 5));
        assert_ne!(message_id(b"block 7", 5), message_id(b"block 8", 5));
    }

    #[test]
    fn every_rebroadcast_falls_in_a_new_window() {
        // Runs with intervals under 3.75 s get the 3 s minimum window: a rebroadcast then
        // goes out once the window turns, at most 3 s late.
        for rebroadcast_ms in [3_750, 5_000, 60_000] {
            let rebroadcast = Duration::from_millis(rebroadcast_ms);
            let window = duplicate_cache(rebroadcast).as_millis() as u64;
            // A vote first published at any time t and again one interval later.
            for t in (0..3 * window).step_by(97) {
                let again = t + rebroadcast_ms;
                assert_ne!(
                    t / window,
                    again / window,
                    "a rebroadcast {rebroadcast_ms} ms later shares the window"
                );
            }
            assert_ne!(message_id(b"vote", 1), message_id(b"vote", 2));
        }
    }

    #[test]
    fn the_duplicate_cache_ends_before_the_next_rebroadcast() {
        assert_eq!(
            duplicate_cache(Duration::from_secs(5)),
            Duration::from_secs(4)
        );
        assert_eq!(
            duplicate_cache(Duration::from_millis(400)),
            MIN_DUPLICATE_CACHE
        );
        assert!(
            MIN_DUPLICATE_CACHE > HEARTBEAT * 5,
            "outlives the message cache"
        );
    }

    #[test]
    fn a_slow_peer_keeps_a_clean_score_and_forwarded_votes_wait_a_window() {
        let topics = Topics::new(&tabswarm_consensus::genesis::RunId([3; 32]));
        let params = score_params(&topics);
        let thresholds = gossipsub::PeerScoreThresholds::default();
        // A thousand messages its queue could not take, say in a minute on a busy machine,
        // and a hundred promises it could not keep in a second.
        let slow = params.slow_peer_weight * 1_000.0;
        assert!(
            slow > thresholds.graylist_threshold,
            "graylisted for slowness"
        );
        let broken = params.behaviour_penalty_weight * 100f64.powi(2);
        assert!(
            broken > thresholds.graylist_threshold,
            "graylisted for lateness"
        );
        let rebroadcast = Duration::from_secs(5);
        let config = config(Mesh::SMALL, rebroadcast).unwrap();
        assert!(config.forward_queue_duration() >= duplicate_cache(rebroadcast));
        assert!(config.publish_queue_duration() >= duplicate_cache(rebroadcast));
    }

    #[test]
    fn no_peer_can_bank_credit_against_rejections() {
        let topics = Topics::new(&tabswarm_consensus::genesis::RunId([3; 32]));
        let params = score_params(&topics);
        for t in topics.all() {
            let p = &params.topics[&t.hash()];
            let most = p.topic_weight
                * (p.time_in_mesh_weight * p.time_in_mesh_cap
                    + p.first_message_deliveries_weight * p.first_message_deliveries_cap);
            assert!(most <= 0.0, "a peer could earn {most} in {t}");
        }
    }

    #[test]
    fn many_honest_peers_behind_one_address_keep_a_clean_score() {
        let topics = Topics::new(&tabswarm_consensus::genesis::RunId([3; 32]));
        let params = score_params(&topics);
        let thresholds = gossipsub::PeerScoreThresholds::default();
        // gossipsub's P6: weight x (peers on the address - threshold)^2.
        let on_one_address = 1_000.0_f64;
        let p6 = params.ip_colocation_factor_weight
            * (on_one_address - params.ip_colocation_factor_threshold)
                .max(0.0)
                .powi(2);
        assert!(
            p6 > thresholds.gossip_threshold,
            "{on_one_address} peers on one address score {p6}"
        );
    }

    #[test]
    fn four_rejections_in_a_topic_graylist_a_peer() {
        let topics = Topics::new(&tabswarm_consensus::genesis::RunId([3; 32]));
        let params = score_params(&topics);
        let thresholds = gossipsub::PeerScoreThresholds::default();
        for t in topics.all() {
            let p = &params.topics[&t.hash()];
            let score = |n: f64| p.topic_weight * p.invalid_message_deliveries_weight * n * n;
            assert!(
                score(1.0) > thresholds.graylist_threshold,
                "one glitch is forgiven"
            );
            assert!(score(4.0) <= thresholds.graylist_threshold);
        }
    }
}
