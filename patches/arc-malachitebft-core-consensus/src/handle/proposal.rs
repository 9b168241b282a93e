use crate::handle::driver::apply_driver_input;
use crate::handle::signature::verify_signature;
use crate::input::Input;
use crate::params::exceeds_future_round_lookahead;
use crate::prelude::*;
use crate::types::{ConsensusMsg, ProposedValue};
use crate::util::pretty::PrettyProposal;

/// Handles an incoming consensus proposal message.
///
/// This handler processes proposals that can arrive from three sources:
/// 1. Network messages from other nodes
/// 2. Local proposals when this node is the proposer
/// 3. WAL replay during node restart
///
/// When acting as proposer (2), consensus core interacts with the application to get a proposed value for the current height and round.
/// In this case the proposal message is sent out to the network but also back to the consensus core.
///
/// # Arguments
/// * `co` - The context object containing configuration and external dependencies
/// * `state` - The current consensus state
/// * `metrics` - Metrics collection for monitoring
/// * `signed_proposal` - The signed proposal message to process
///
/// # Flow
/// 1. Validates proposal height and signature
/// 2. Queues messages if not ready to process (wrong height/round)
/// 3. Stores valid proposals and updates WAL if needed
/// 4. Processes the proposal through the driver if a full proposal is available
pub async fn on_proposal<Ctx>(
    co: &Co<Ctx>,
    state: &mut State<Ctx>,
    metrics: &Metrics,
    signed_proposal: SignedProposal<Ctx>,
) -> Result<(), Error<Ctx>>
where
    Ctx: Context,
{
    let consensus_height = state.height();
    let consensus_round = state.round();
    let proposal_height = signed_proposal.height();
    let proposal_round = signed_proposal.round();
    let pol_round = signed_proposal.pol_round();
    let proposer_address = signed_proposal.validator_address();

    // Discard proposals for heights lower than the current height.
    if proposal_height < consensus_height {
        debug!(
            consensus.height = %consensus_height,
            consensus.round = %consensus_round,
            proposal.height = %proposal_height,
            proposer = %proposer_address,
            "Received proposal for lower height, dropping"
        );

        return Ok(());
    }

    // Queue proposals for heights higher than the current height.
    if proposal_height > consensus_height {
        debug!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            "Received proposal for higher height {proposal_height}, queuing for later"
        );

        state.buffer_input(proposal_height, Input::Proposal(signed_proposal), metrics);

        return Ok(());
    }

    debug_assert_eq!(proposal_height, consensus_height);

    // Queue messages if driver is not initialized.
    // Process messages received for the current height.
    // Drop all others.
    if state.driver.round() == Round::Nil {
        debug!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            "Received proposal at round -1, queuing for later"
        );

        state.buffer_input(proposal_height, Input::Proposal(signed_proposal), metrics);

        return Ok(());
    }

    // Drop proposals whose round is too far ahead of the current consensus round.
    // This bounds per-height proposal-keeper state, signature verification work,
    // and WAL I/O when proposals carry arbitrarily high round numbers.
    //
    // Replayed proposals are exempt: they were admitted and applied by an earlier run,
    // and a round certificate can carry them arbitrarily far ahead of the round replay
    // has reached.
    if !state.is_replaying_wal() && exceeds_future_round_lookahead(consensus_round, proposal_round)
    {
        debug!(
            consensus.height = %consensus_height,
            consensus.round = %consensus_round,
            proposal.height = %proposal_height,
            proposal.round = %proposal_round,
            proposer = %proposer_address,
            "Received proposal for round beyond the future-round lookahead, dropping"
        );

        #[cfg(feature = "metrics")]
        metrics.dropped_future_round_proposals.inc();

        return Ok(());
    }

    // A correct proposer never sends a pol_round that is not lower than its round (L19).
    // Keeping one would make the driver read a polka in its own round as a polka from an
    // earlier round (L28), so the node could stall in prevote.
    //
    // Replayed proposals are exempt: an earlier version may have stored one and signed votes
    // based on it, and replay must derive the same votes.
    if !state.is_replaying_wal() && pol_round.is_defined() && pol_round >= proposal_round {
        debug!(
            consensus.height = %consensus_height,
            consensus.round = %consensus_round,
            proposal.height = %proposal_height,
            proposal.round = %proposal_round,
            proposal.pol_round = %pol_round,
            proposer = %proposer_address,
            "Received proposal with pol_round not lower than its round, dropping"
        );

        return Ok(());
    }

    if !verify_signed_proposal(co, state, &signed_proposal).await? {
        return Ok(());
    }

    info!(
        consensus.height = %consensus_height,
        consensus.round = %consensus_round,
        proposal.height = %proposal_height,
        proposal.round = %proposal_round,
        proposal.msg = %PrettyProposal::<Ctx>(&signed_proposal.message),
        proposer = %proposer_address,
        "Received proposal"
    );

    // Drop proposals that would grow the keeper, and therefore the WAL, past the
    // per-(height, round) cap, before persisting anything. Proposals for a value that already
    // holds a polka certificate at this round are exempt: the certificate carries a quorum of
    // signed prevotes.
    if state.exceeds_per_round_cap(
        proposal_height,
        proposal_round,
        &signed_proposal.value().id(),
    ) {
        warn!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            proposal.round = %proposal_round,
            proposer = %proposer_address,
            "Rejecting proposal: per-(height, round) cap reached"
        );

        #[cfg(feature = "metrics")]
        metrics.dropped_capped_proposals.inc();

        return Ok(());
    }

    // Persist only proposals that contribute retained consensus state.
    if state.store_proposal(signed_proposal.clone(), metrics) == ProposalPersistence::Required {
        perform!(
            co,
            Effect::WalAppend(
                signed_proposal.height(),
                Input::Proposal(signed_proposal.clone()),
                Default::default()
            )
        );
    }

    if state.params.value_payload.proposal_only() {
        // TODO - pass the received value up to the host that will verify and give back validity and extension.
        let new_value = ProposedValue {
            height: signed_proposal.height(),
            round: signed_proposal.round(),
            valid_round: signed_proposal.pol_round(),
            proposer: signed_proposal.validator_address().clone(),
            value: signed_proposal.value().clone(),
            validity: Validity::Valid,
        };

        state.store_value(&new_value);
    }

    if let Some(full_proposal) = state.full_proposal_at_round_and_value(
        &proposal_height,
        proposal_round,
        signed_proposal.value(),
    ) {
        apply_driver_input(
            co,
            state,
            metrics,
            DriverInput::Proposal(full_proposal.proposal.clone(), full_proposal.validity),
        )
        .await?;
    } else {
        debug!(
            proposal.height = %proposal_height,
            proposal.round = %proposal_round,
            "No full proposal for this round yet, stored proposal for later"
        );
    }

    Ok(())
}

pub async fn verify_signed_proposal<Ctx>(
    co: &Co<Ctx>,
    state: &State<Ctx>,
    signed_proposal: &SignedProposal<Ctx>,
) -> Result<bool, Error<Ctx>>
where
    Ctx: Context,
{
    let consensus_height = state.height();
    let proposal_height = signed_proposal.height();
    let proposal_round = signed_proposal.round();
    let proposer_address = signed_proposal.validator_address();

    assert_eq!(proposal_height, consensus_height);

    let validator_set = state.validator_set();

    let Some(proposer) = validator_set.get_by_address(proposer_address) else {
        warn!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            proposer = %proposer_address,
            "Received proposal from unknown validator"
        );

        return Ok(false);
    };

    let expected_proposer = state.get_proposer(proposal_height, proposal_round);

    if expected_proposer != proposer_address {
        warn!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            proposer = %proposer_address,
            expected = %expected_proposer,
            "Received proposal from a non-proposer"
        );

        return Ok(false);
    };

    let signed_msg = signed_proposal.clone().map(ConsensusMsg::Proposal);
    if !verify_signature(co, signed_msg, proposer).await? {
        warn!(
            consensus.height = %consensus_height,
            proposal.height = %proposal_height,
            proposer = %proposer_address,
            "Received invalid signature for proposal: {}",
            PrettyProposal::<Ctx>(&signed_proposal.message)
        );

        return Ok(false);
    }

    Ok(true)
}
