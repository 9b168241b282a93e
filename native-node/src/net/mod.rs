//! The node's libp2p side: protocols, topics, the request-response vocabulary.

pub(crate) mod behaviour;
pub(crate) mod proto;
pub(crate) mod topics;
