//! Gossip topics: one per message kind, scoped to the run so runs never mix.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use tabswarm_consensus::genesis::{RunId, hex};
use tabswarm_consensus::wire::Message;

/// A run's topics.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub(crate) updates: IdentTopic,
    pub(crate) proposals: IdentTopic,
    pub(crate) votes: IdentTopic,
    pub(crate) evidence: IdentTopic,
    pub(crate) blocks: IdentTopic,
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicKind {
    Updates,
    Consensus,
}

impl Topics {
    pub(crate) fn new(run: &RunId) -> Self {
        let id = hex(&run.0[..8]);
        let t = |kind: &str| IdentTopic::new(format!("/tabswarm/{id}/{kind}/1"));
        Self {
            updates: t("updates"),
            proposals: t("proposals"),
            votes: t("votes"),
            evidence: t("evidence"),
            blocks: t("blocks"),
        }
    }

    pub(crate) fn all(&self) -> [&IdentTopic; 5] {
        [
            &self.updates,
            &self.proposals,
            &self.votes,
            &self.evidence,
            &self.blocks,
        ]
    }

    /// The topic a consensus message goes out on.
    pub(crate) fn for_message(&self, msg: &Message) -> &IdentTopic {
        match msg {
            Message::Proposal(_) => &self.proposals,
            Message::Evidence(_) => &self.evidence,
            Message::Block(_) => &self.blocks,
            _ => &self.votes,
        }
    }

    pub(crate) fn kind(&self, hash: &TopicHash) -> Option<TopicKind> {
        if hash == &self.updates.hash() {
            Some(TopicKind::Updates)
        } else if self.all()[1..].iter().any(|t| &t.hash() == hash) {
            Some(TopicKind::Consensus)
        } else {
            None
        }
    }
}
