//! Limits shared by every replica (`[limits] store = "redis://…"`): once a request holds its
//! local permit, it asks the shared store for the same lane and key, and waits there or is
//! refused as the local limits would. With the store down it is served on local limits
//! (`on_store_error = "open"`) or refused with 503 `store_unavailable` ("closed").

use std::time::Duration;

use laneway_admission::shared::{SharedLimits, Side, Terms, Verdict};
use laneway_admission::{AdmissionError, Feedback, Mode, Permit, RateKind, Scope};
use tokio::time::Instant;

use crate::error::cancelled;
use crate::plan::Plan;
use crate::topology::{rates, LaneLive};
use crate::Error;

/// When a closed store refuses, clients come back after about this long: the probe checks a
/// down store twice a second.
const DOWN_RETRY: Duration = Duration::from_secs(1);

/// Takes the request's share of the shared limits and attaches it to `permit`.
pub async fn hold(
    plan: &Plan<'_>,
    store: &dyn SharedLimits,
    live: &LaneLive,
    permit: &mut Permit,
) -> Result<(), Error> {
    let start = Instant::now();
    let key = plan.key.key.spec();
    let lane_rates = rates(&live.config.limits);
    let key_rates = plan.key.config.as_ref().map(|c| rates(&c.limits));
    loop {
        let lane = Terms {
            name: permit.lane().name(),
            limit: permit.lane().limit_in_force(),
            rates: lane_rates,
        };
        let key_terms = key_rates.map(|rates| Terms {
            name: &key.name,
            limit: key.max_concurrent,
            rates,
        });
        let verdict = store.admit(lane, key_terms, permit.tokens()).await;
        let (side, wait) = match verdict {
            Verdict::Granted(h) => {
                permit.hold_shared(h, start.elapsed());
                return Ok(());
            }
            Verdict::Local => return Ok(()),
            Verdict::Down(reason) => {
                return Err(AdmissionError::StoreUnavailable {
                    reason,
                    retry_after: DOWN_RETRY,
                }
                .into());
            }
            Verdict::Full(side) => (side, None),
            Verdict::Wait { side, after, kind } => (side, Some((after, kind))),
        };
        let (scope, mode) = match side {
            Side::Lane => (
                Scope::Lane(permit.lane().name().to_owned()),
                permit.lane().mode(),
            ),
            Side::Key => (Scope::Key(key.name.clone()), key.on_limit),
        };
        if mode == Mode::Reject {
            return Err(refusal(scope, wait).into());
        }
        let name = match side {
            Side::Lane => permit.lane().name().to_owned(),
            Side::Key => key.name.clone(),
        };
        let until = match wait {
            Some((after, _)) => Instant::now() + after,
            None => plan.deadline,
        };
        if until > plan.deadline && wait.is_some() {
            return Err(AdmissionError::DeadlineExceeded.into());
        }
        tokio::select! {
            () = store.freed(side, &name), if wait.is_none() => {}
            () = tokio::time::sleep_until(until), if wait.is_some() => {}
            () = tokio::time::sleep_until(plan.deadline) => return Err(AdmissionError::DeadlineExceeded.into()),
            () = plan.entry.cancel.cancelled() => return Err(cancelled()),
        }
    }
}

fn refusal(scope: Scope, wait: Option<(Duration, Option<RateKind>)>) -> AdmissionError {
    match wait {
        Some((retry_after, Some(kind))) => AdmissionError::RateLimited {
            scope,
            kind,
            retry_after,
        },
        Some((retry_after, None)) => AdmissionError::NoLaneAvailable { retry_after },
        // Slots free when requests end: a second is an honest order of magnitude.
        None => AdmissionError::ConcurrencyLimited {
            scope,
            retry_after: Duration::from_secs(1),
        },
    }
}

/// Feeds the lane an upstream answer and shares any pause it asked for (Retry-After, a spent
/// rate budget) with the other replicas, so they do not each collect the same 429.
pub fn feedback(plan: &Plan<'_>, permit: &Permit, fb: Feedback) {
    let pause = permit.feedback(fb);
    if let (Some(store), Some(pause)) = (plan.engine.store.clone(), pause) {
        let name = permit.lane().name().to_owned();
        tokio::spawn(async move { store.cool(&name, pause).await });
    }
}
