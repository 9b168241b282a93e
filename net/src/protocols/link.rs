//! Between libp2p and the peer: protocol events become [`tabswarm_peer::Input`]s and the
//! peer's network effects become gossip publishes, validation results, requests and
//! responses. The server node and the browser tab both drive their peer through a [`Link`],
//! so the two map the wire the same way (which topic is which, which answer belongs to which
//! question, what a verdict means to gossipsub).

use std::collections::HashMap;

use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, identify};
use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::RunId;
use tabswarm_peer::wire::{Request, Response};
use tabswarm_peer::{Effect, Input, RequestId};

use super::{Protocols, ProtocolsEvent, Topics};

/// What the input being handled came with, for the effect that answers it.
#[derive(Debug)]
pub enum Reply {
    /// Nothing to answer.
    None,
    /// A gossip message awaiting its verdict.
    Gossip(MessageId, PeerId),
    /// A request awaiting its response.
    Request(ResponseChannel<Response>),
}

/// Where a protocol event goes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made and consumed once per event, never stored
pub enum Routed {
    /// Feed it to the peer; the effects that answer it need `Reply`.
    Input(Input<PeerId>, Reply),
    /// What a peer said about itself: the driver's connectivity decides what it means
    /// (a relay to reserve a slot on, addresses to remember).
    Identified(PeerId, Box<identify::Info>),
    /// Nothing for the peer.
    Nothing,
}

/// The run's topics and our outstanding requests.
#[derive(Debug)]
pub struct Link {
    topics: Topics,
    requests: HashMap<OutboundRequestId, RequestId>,
}

impl Link {
    /// For run `run`.
    pub fn new(run: &RunId) -> Self {
        Self {
            topics: Topics::new(run),
            requests: HashMap::new(),
        }
    }

    /// The run's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Subscribes to every topic of the run.
    pub fn subscribe(&self, protocols: &mut Protocols) -> Result<(), gossipsub::SubscriptionError> {
        for topic in self.topics.all() {
            protocols.gossipsub.subscribe(topic)?;
        }
        Ok(())
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Turns `event` into an input for the peer. A gossip message on a topic not of this run
    /// is rejected here (we never subscribed to it; a peer pushing it is misbehaving), and a
    /// response to a question we did not ask is dropped.
    pub fn route(&mut self, protocols: &mut Protocols, event: ProtocolsEvent) -> Routed {
        match event {
            ProtocolsEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => match self.topics.kind(&message.topic) {
                Some(topic) => Routed::Input(
                    Input::Gossip {
                        source: propagation_source,
                        publisher: message.source,
                        topic,
                        data: message.data,
                    },
                    Reply::Gossip(message_id, propagation_source),
                ),
                None => {
                    protocols.gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Reject,
                    );
                    Routed::Nothing
                }
            },
            ProtocolsEvent::Fetch(event) => self.route_fetch(event),
            ProtocolsEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                Routed::Identified(peer_id, Box::new(info))
            }
            _ => Routed::Nothing,
        }
    }

    fn route_fetch(&mut self, event: request_response::Event<Request, Response>) -> Routed {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Routed::Input(
                    Input::Request {
                        from: peer,
                        request,
                    },
                    Reply::Request(channel),
                ),
                request_response::Message::Response {
                    request_id,
                    response,
                } => match self.requests.remove(&request_id) {
                    Some(id) => Routed::Input(
                        Input::Response {
                            from: peer,
                            id,
                            response,
                        },
                        Reply::None,
                    ),
                    None => Routed::Nothing,
                },
            },
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "request failed");
                match self.requests.remove(&request_id) {
                    Some(id) => Routed::Input(Input::RequestFailed { id }, Reply::None),
                    None => Routed::Nothing,
                }
            }
            _ => Routed::Nothing,
        }
    }

    /// Carries out `effect` if it is the network's (publish, verdict, request, response) and
    /// returns `None`; any other effect comes back for the driver. `reply` is what the input
    /// that produced the effects came with; a response consumes it.
    pub fn carry_out(
        &mut self,
        protocols: &mut Protocols,
        effect: Effect<PeerId>,
        reply: &mut Reply,
    ) -> Option<Effect<PeerId>> {
        match effect {
            Effect::Publish { topic, data } => {
                let topic = self.topics.get(topic).clone();
                if let Err(e) = protocols.gossipsub.publish(topic, data) {
                    tracing::debug!(error = %e, "publish failed (no peers yet?)");
                }
            }
            Effect::Validated(verdict) => {
                if let Reply::Gossip(id, source) = reply {
                    let acceptance = match verdict {
                        Verdict::Accept => MessageAcceptance::Accept,
                        Verdict::Ignore => MessageAcceptance::Ignore,
                        Verdict::Reject => MessageAcceptance::Reject,
                    };
                    protocols
                        .gossipsub
                        .report_message_validation_result(id, source, acceptance);
                }
            }
            Effect::Send { to, id, request } => {
                let out = protocols.fetch.send_request(&to, request);
                self.requests.insert(out, id);
            }
            Effect::Respond(response) => {
                if let Reply::Request(channel) = std::mem::replace(reply, Reply::None) {
                    // Err: the asker went away; nothing to do.
                    let _ = protocols.fetch.send_response(channel, response);
                }
            }
            other => return Some(other),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::Mesh;
    use libp2p::gossipsub::{IdentTopic, Message};
    use tabswarm_consensus::genesis::Genesis;
    use tabswarm_consensus::identity::Keypair;
    use tabswarm_peer::wire::Topic;

    fn setup() -> (Protocols, Link) {
        let key = Keypair::from_seed([1; 32]);
        let genesis = Genesis::from_json(&tabswarm_consensus::testkit::genesis_json(&[(
            key.address(),
            1,
        )]))
        .unwrap();
        let libp2p_key = libp2p::identity::Keypair::generate_ed25519();
        let protocols = Protocols::new(&libp2p_key, &genesis, "test".into(), Mesh::SMALL).unwrap();
        (protocols, Link::new(&genesis.run_id()))
    }

    fn gossip(topic: &IdentTopic) -> ProtocolsEvent {
        let from = PeerId::random();
        ProtocolsEvent::Gossipsub(gossipsub::Event::Message {
            propagation_source: from,
            message_id: MessageId::new(b"m"),
            message: Message {
                source: Some(from),
                data: b"hello".to_vec(),
                sequence_number: None,
                topic: topic.hash(),
            },
        })
    }

    #[test]
    fn gossip_on_a_run_topic_reaches_the_peer_with_its_kind() {
        let (mut p, mut link) = setup();
        let votes = link.topics().get(Topic::Votes).clone();
        match link.route(&mut p, gossip(&votes)) {
            Routed::Input(Input::Gossip { topic, data, .. }, Reply::Gossip(..)) => {
                assert_eq!(topic, Topic::Votes);
                assert_eq!(data, b"hello");
            }
            other => panic!("expected a gossip input, got {other:?}"),
        }
    }

    #[test]
    fn gossip_on_a_foreign_topic_never_reaches_the_peer() {
        let (mut p, mut link) = setup();
        let foreign = IdentTopic::new("/tabswarm/0000000000000000/votes/1");
        assert!(matches!(
            link.route(&mut p, gossip(&foreign)),
            Routed::Nothing
        ));
    }

    #[test]
    fn a_response_maps_back_to_our_request_id_once() {
        let (mut p, mut link) = setup();
        let to = PeerId::random();
        let mut reply = Reply::None;
        let left = link.carry_out(
            &mut p,
            Effect::Send {
                to,
                id: RequestId(77),
                request: Request::Status,
            },
            &mut reply,
        );
        assert!(left.is_none());
        assert_eq!(link.in_flight(), 1);
        let out = *link.requests.keys().next().unwrap();
        let response = || {
            ProtocolsEvent::Fetch(request_response::Event::Message {
                peer: to,
                connection_id: libp2p::swarm::ConnectionId::new_unchecked(0),
                message: request_response::Message::Response {
                    request_id: out,
                    response: Response::NotFound,
                },
            })
        };
        match link.route(&mut p, response()) {
            Routed::Input(Input::Response { id, from, .. }, _) => {
                assert_eq!(id, RequestId(77));
                assert_eq!(from, to);
            }
            other => panic!("expected a response input, got {other:?}"),
        }
        // A second answer to the same question (a replay) is nobody's.
        assert!(matches!(link.route(&mut p, response()), Routed::Nothing));
        assert_eq!(link.in_flight(), 0);
    }

    #[test]
    fn effects_that_are_not_the_networks_come_back() {
        let (mut p, mut link) = setup();
        let left = link.carry_out(&mut p, Effect::Penalise(PeerId::random()), &mut Reply::None);
        assert!(matches!(left, Some(Effect::Penalise(_))));
    }
}
