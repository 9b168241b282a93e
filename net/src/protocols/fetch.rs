//! The fetch protocol on request-response: cbor-encoded `tabswarm_peer::wire` requests and
//! responses, with the sizes the wire allows (a request is a few dozen bytes; a response at
//! most a chunk, a block batch or a manifest) instead of the codec's defaults (1 MiB and
//! 10 MiB), so a peer cannot make another buffer more than the protocol ever needs.

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response::{self, ProtocolSupport};
use tabswarm_peer::wire::{
    FETCH_PROTOCOL, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Request, Response,
};

/// The behaviour.
pub type Behaviour = request_response::cbor::Behaviour<Request, Response>;

/// How long a request may take before it fails (the peer has its own, longer, deadline per
/// download; this one frees the stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams open at once per connection.
pub const MAX_CONCURRENT_STREAMS: usize = 256;

/// The fetch behaviour.
pub fn behaviour() -> Behaviour {
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(MAX_RESPONSE_BYTES);
    Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(FETCH_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
    )
}
