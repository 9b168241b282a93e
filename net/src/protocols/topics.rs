//! The run's gossip topics as libp2p sees them (names come from `tabswarm_peer::wire`).

use libp2p::gossipsub::{IdentTopic, TopicHash};
use tabswarm_consensus::genesis::RunId;
use tabswarm_peer::wire::Topic;

/// A run's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    topics: Vec<(Topic, IdentTopic)>,
}

impl Topics {
    /// The topics of run `run`.
    pub fn new(run: &RunId) -> Self {
        Self {
            topics: Topic::ALL
                .iter()
                .map(|t| (*t, IdentTopic::new(t.name(run))))
                .collect(),
        }
    }

    /// Every topic (what a peer subscribes to).
    pub fn all(&self) -> impl Iterator<Item = &IdentTopic> {
        self.topics.iter().map(|(_, t)| t)
    }

    /// The libp2p topic of `topic`.
    pub fn get(&self, topic: Topic) -> &IdentTopic {
        // `topics` holds every `Topic`, built from `Topic::ALL`.
        &self
            .topics
            .iter()
            .find(|(t, _)| *t == topic)
            .unwrap_or(&self.topics[0])
            .1
    }

    /// Which of the run's topics `hash` is, if any.
    pub fn kind(&self, hash: &TopicHash) -> Option<Topic> {
        self.topics
            .iter()
            .find(|(_, t)| &t.hash() == hash)
            .map(|(k, _)| *k)
    }
}
