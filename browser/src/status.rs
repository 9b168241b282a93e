//! What the volunteer page shows, kept up to date from the peer's events and snapshots and
//! handed to JavaScript as JSON. The tab's contribution is read from committed blocks (the
//! peer's credit), never from what the tab itself claims.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use tabswarm_consensus::genesis::hex;
use tabswarm_peer::data::DataEvent;
use tabswarm_peer::{Event, Snapshot};

/// The problem shown while a closed run's data cannot be read (cleared by a grant).
const NO_GRANT: &str = "this run's data is closed and this tab holds no grant";

/// Committed heights whose test figures are kept for the chart.
pub const HISTORY: usize = 500;

/// Where the tab is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No peer reached yet.
    #[default]
    Connecting,
    /// Fetching blocks and parameters.
    Syncing,
    /// In sync: training when not paused.
    Running,
    /// In sync, training paused by the volunteer.
    Paused,
    /// Stopped for good (the page asked, or a fatal error).
    Stopped,
}

/// One committed height on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Height.
    pub height: u64,
    /// Test loss of its parameters.
    pub loss: f32,
    /// Test accuracy of its parameters.
    pub accuracy: f32,
}

/// The page's view of the tab.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TabStatus {
    /// Where the tab is.
    pub state: State,
    /// libp2p peer id.
    pub peer_id: String,
    /// Consensus address (what blocks credit).
    pub address: String,
    /// Transport of the newest connection: `webrtc-direct`, `websocket` or `relay`.
    pub transport: Option<String>,
    /// Peers connected.
    pub peers: usize,
    /// Relays among them.
    pub relays: usize,
    /// Whether other tabs can reach this one through a relay circuit.
    pub reachable_via_relay: bool,
    /// Peers (other tabs) connected through a relay circuit.
    pub circuit_peers: Vec<String>,
    /// Gossip messages, requests and answers that came over such a circuit.
    pub circuit_messages: u64,
    /// Committed height held.
    pub height: u64,
    /// Height of the parameters held: below `height` for a moment when a block committed
    /// before its updates arrived (the parameters then come with the next checkpoint).
    pub params_height: u64,
    /// Height this load resumed from (the cache of an earlier load; 0 without one).
    pub restored_height: u64,
    /// Hex hash of the parameters held.
    pub param_hash: String,
    /// Updates of this tab included in committed blocks.
    pub credit: u64,
    /// Examples behind them (credit x the run's weight per update).
    pub samples: u64,
    /// Updates announced (included or not).
    pub updates_announced: u64,
    /// Last local training's wall time (ms).
    pub last_train_ms: u64,
    /// Jobs running in workers.
    pub jobs_running: usize,
    /// Test loss and accuracy of committed parameters, oldest first, at most [`HISTORY`].
    pub history: Vec<Point>,
    /// The newest problem worth showing (cleared when things work again).
    pub problem: Option<String>,
    /// Ping round trips by transport (`webrtc-direct`, `websocket`, `relay`).
    pub rtt: BTreeMap<String, RttSummary>,
    /// The run's data, in a run that keeps it on the network (`None` otherwise: the page
    /// brought its own copy).
    pub data: Option<TabData>,
}

/// What the tab holds of a run's data on the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TabData {
    /// The owner-signed manifest's epoch (0: none yet).
    pub epoch: u64,
    /// Shards the manifest lists.
    pub shards: usize,
    /// Shards the tab holds (its training shards, the validation and test shards).
    pub held: usize,
    /// Of those, fetched from peers during this load.
    pub fetched: usize,
    /// Of those, taken from the page's cache of an earlier load.
    pub restored: usize,
    /// Whether the tab can read them (the run is open, or its owner granted this tab).
    pub has_key: bool,
    /// Whether training has the data it needs.
    pub ready: bool,
    /// Hex X25519 key a closed run's owner grants the dataset key to
    /// (`tabswarm-node data grant --member <address>:<member_key>`).
    pub member_key: String,
}

/// Round trips kept per transport for [`RttSummary`].
pub const RTT_SAMPLES: usize = 1_000;

/// The distribution of one transport's ping round trips (the newest [`RTT_SAMPLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RttSummary {
    /// Samples behind the figures.
    pub samples: usize,
    /// Median (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Largest (ms).
    pub max_ms: f64,
}

/// Round trips of one transport, newest last.
#[derive(Debug, Clone, Default)]
pub struct RttSamples(VecDeque<f64>);

impl RttSamples {
    /// Adds one round trip (ms), forgetting the oldest beyond [`RTT_SAMPLES`].
    pub fn push(&mut self, ms: f64) {
        if self.0.len() == RTT_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(ms);
    }

    /// Percentiles by nearest rank.
    pub fn summary(&self) -> RttSummary {
        let mut v: Vec<f64> = self.0.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            v.get(((q * v.len() as f64).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        RttSummary {
            samples: v.len(),
            p50_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            max_ms: v.last().copied().unwrap_or(0.0),
        }
    }
}

impl TabStatus {
    /// Takes in one of the peer's events.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Tested {
                height,
                loss,
                accuracy,
            } => {
                if self.history.last().is_some_and(|p| p.height >= *height) {
                    return;
                }
                self.history.push(Point {
                    height: *height,
                    loss: *loss,
                    accuracy: *accuracy,
                });
                if self.history.len() > HISTORY {
                    self.history.remove(0);
                }
            }
            Event::UpdatePublished { .. } => self.updates_announced += 1,
            Event::Committed { train_ms, .. } if *train_ms > 0 => self.last_train_ms = *train_ms,
            Event::TrainingFailed(why) => self.problem = Some(format!("training failed: {why}")),
            Event::Data(DataEvent::Stored { restored, .. }) => {
                if let Some(d) = &mut self.data {
                    if *restored {
                        d.restored += 1;
                    } else {
                        d.fetched += 1;
                    }
                }
            }
            Event::Data(DataEvent::Unreadable { index, reason }) => {
                self.problem = Some(format!("the run's shard {index} cannot be read: {reason}"));
            }
            _ => {}
        }
    }

    /// Takes in the peer's state.
    pub fn on_snapshot(&mut self, s: &Snapshot, weight: u32, paused: bool) {
        if let (Some(d), Some(held)) = (&mut self.data, &s.data) {
            d.epoch = held.epoch;
            d.shards = held.shards;
            d.held = held.held.len();
            d.has_key = held.has_key;
            d.ready = held.ready;
            let waiting = self
                .problem
                .as_deref()
                .is_some_and(|p| p.starts_with(NO_GRANT));
            if held.epoch > 0 && !held.has_key && !waiting {
                self.problem = Some(format!(
                    "{NO_GRANT}: its owner grants this tab with `tabswarm-node data grant --member {}:{}`",
                    self.address, d.member_key
                ));
            } else if held.has_key && waiting {
                self.problem = None;
            }
        }
        self.height = s.height;
        self.param_hash = hex(&s.param_hash);
        self.credit = s.credit;
        self.samples = s.credit * u64::from(weight);
        if self.state != State::Stopped {
            self.state = if self.peers == 0 && s.height == 0 {
                State::Connecting
            } else if s.syncing {
                State::Syncing
            } else if paused {
                State::Paused
            } else {
                State::Running
            };
        }
    }

    /// The JSON the page reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"problem\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_percentiles_by_nearest_rank_over_the_newest_samples() {
        let mut r = RttSamples::default();
        assert_eq!(r.summary(), RttSummary::default());
        for ms in 1..=100 {
            r.push(f64::from(ms));
        }
        let s = r.summary();
        assert_eq!(
            (s.samples, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        for _ in 0..RTT_SAMPLES {
            r.push(5.0);
        }
        let s = r.summary();
        assert_eq!(
            (s.samples, s.max_ms),
            (RTT_SAMPLES, 5.0),
            "old samples forgotten"
        );
    }

    #[test]
    fn the_chart_keeps_each_height_once_in_order_and_at_most_history_points() {
        let mut s = TabStatus::default();
        for h in 0..(HISTORY as u64 + 10) {
            for _ in 0..2 {
                s.on_event(&Event::Tested {
                    height: h,
                    loss: 1.0,
                    accuracy: 0.5,
                });
            }
        }
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history.first().unwrap().height, 10);
        assert!(s.history.windows(2).all(|w| w[0].height < w[1].height));
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["state"], "connecting");
        assert_eq!(json["history"].as_array().unwrap().len(), HISTORY);
    }

    #[test]
    fn the_data_block_counts_restored_and_fetched_shards_and_says_how_to_get_a_grant() {
        let mut s = TabStatus {
            address: "ab".repeat(32),
            data: Some(TabData {
                member_key: "cd".repeat(32),
                ..TabData::default()
            }),
            ..TabStatus::default()
        };
        for (index, restored) in [(0, true), (1, true), (2, false)] {
            s.on_event(&Event::Data(DataEvent::Stored { index, restored }));
        }
        let mut snap = Snapshot {
            data: Some(tabswarm_peer::DataSnapshot {
                epoch: 2,
                shards: 18,
                held: vec![0, 1, 2],
                has_key: false,
                ready: false,
            }),
            ..Snapshot::default()
        };
        s.on_snapshot(&snap, 1, false);
        let d = s.data.clone().unwrap();
        assert_eq!((d.restored, d.fetched, d.held, d.shards), (2, 1, 3, 18));
        let problem = s.problem.clone().unwrap();
        assert!(
            problem.contains(&format!(
                "data grant --member {}:{}",
                "ab".repeat(32),
                "cd".repeat(32)
            )),
            "{problem}"
        );
        // A grant arrives: the problem goes; other problems are left alone.
        snap.data.as_mut().unwrap().has_key = true;
        s.on_snapshot(&snap, 1, false);
        assert_eq!(s.problem, None);
        s.problem = Some("training failed: x".into());
        s.on_snapshot(&snap, 1, false);
        assert_eq!(s.problem.as_deref(), Some("training failed: x"));
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(json["data"]["fetched"], 1);
        assert!(TabStatus::default().to_json().contains("\"data\":null"));
    }
}
