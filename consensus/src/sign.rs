//! Signing domains: every signed message is `ed25519(domain || run id || canonical bytes)`.
//!
//! The domain names the message kind, so a signature for one kind can never be replayed as
//! another; the run id (hash of the genesis) keeps signatures from crossing runs; height and
//! round are inside the canonical bytes. DESIGN.md, "Signing, wire format, limits".

use crate::genesis::RunId;

/// The kinds of signed message, one domain string each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Domain {
    /// A Tendermint prevote or precommit (the vote type is inside the signed bytes).
    Vote,
    /// A proposer's signed round proposal.
    Proposal,
    /// A trainer's update announcement.
    Update,
}

impl Domain {
    /// The domain string, fixed forever for a given kind and version.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::Vote => b"tabswarm/consensus/vote/v1\0",
            Domain::Proposal => b"tabswarm/consensus/proposal/v1\0",
            Domain::Update => b"tabswarm/update/v1\0",
        }
    }
}

/// The exact bytes that get signed for `canonical` of kind `domain` in run `run`.
pub fn signing_bytes(domain: Domain, run: &RunId, canonical: &[u8]) -> Vec<u8> {
    let tag = domain.tag();
    let mut out = Vec::with_capacity(tag.len() + 32 + canonical.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(&run.0);
    out.extend_from_slice(canonical);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_distinct_and_prefix_free() {
        let a = Domain::Vote.tag();
        let b = Domain::Proposal.tag();
        assert_ne!(a, b);
        assert!(!a.starts_with(b) && !b.starts_with(a));
    }

    #[test]
    fn run_id_and_domain_change_the_signed_bytes() {
        let r1 = RunId([1; 32]);
        let r2 = RunId([2; 32]);
        assert_ne!(
            signing_bytes(Domain::Vote, &r1, b"x"),
            signing_bytes(Domain::Vote, &r2, b"x")
        );
        assert_ne!(
            signing_bytes(Domain::Vote, &r1, b"x"),
            signing_bytes(Domain::Proposal, &r1, b"x")
        );
    }
}
