//! The node's libp2p side. The vocabulary (requests, responses, topic names) is
//! `tabswarm_peer::wire` and the protocols are `tabswarm_net::protocols`, shared with every
//! other driver; what is here is server-only.

pub(crate) mod behaviour;
pub(crate) mod connectivity;
