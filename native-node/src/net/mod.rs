//! The node's libp2p side: protocols and topics. The vocabulary itself (requests, responses,
//! topic names) is `tabswarm_peer::wire`, shared with every other driver.

pub(crate) mod behaviour;
pub(crate) mod topics;
