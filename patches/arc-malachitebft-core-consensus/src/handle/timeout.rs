use crate::handle::driver::apply_driver_input;
use crate::handle::finalize::finalize_height;
use crate::handle::rebroadcast_timeout::on_rebroadcast_timeout;
use crate::prelude::*;

pub async fn on_timeout_elapsed<Ctx>(
    co: &Co<Ctx>,
    state: &mut State<Ctx>,
    metrics: &Metrics,
    timeout: Timeout,
) -> Result<(), Error<Ctx>>
where
    Ctx: Context,
{
    let (height, round) = (state.height(), state.round());

    if timeout.round != round {
        debug!(
            %height,
            %round,
            timeout.round = %timeout.round,
            "Ignoring timeout for different round",
        );

        return Ok(());
    }

    info!(
        step = ?timeout.kind,
        %timeout.round,
        %height,
        %round,
        "Timeout elapsed"
    );

    match timeout.kind {
        TimeoutKind::FinalizeHeight(_) => {
            if state.driver.step_is_commit() {
                finalize_height(co, state, metrics).await?;
            }
        }

        TimeoutKind::Rebroadcast => {
            on_rebroadcast_timeout(co, state, metrics).await?;
        }

        // Consensus timeouts go to the driver
        TimeoutKind::Propose | TimeoutKind::Prevote | TimeoutKind::Precommit => {
            // Persist the timeout in the Write-ahead Log.
            perform!(
                co,
                Effect::WalAppend(height, Input::TimeoutElapsed(timeout), Default::default())
            );

            apply_driver_input(co, state, metrics, DriverInput::TimeoutElapsed(timeout)).await?;
        }
    }

    Ok(())
}
