//! Getting an answer from upstream: attempts on the route's pool, retries that prefer another
//! lane, feedback to each lane's health, and the route's fallbacks.
//!
//! The commit point: everything here happens before the first byte goes to the client. Once a
//! success is returned, its body is relayed as it comes and nothing is retried.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use laneway_admission::{
    acquire, acquire_with_key, AdmissionError, Ask, Feedback, KeyPermit, Lane, Permit,
};
use laneway_config::RetryConfig;
use laneway_core::wire::{Endpoint, RequestMeta};
use laneway_core::{glob, ApiError, ErrorCode};
use laneway_upstream::classify::{classify, is_quota_error, Outcome};
use laneway_upstream::{Hints, UpstreamRequest};
use tokio::time::Instant;

use crate::ledger::Ledger;
use crate::metrics::{LaneLabel, LaneReason};
use crate::respond::{self, GatewayError};
use crate::runtime::{KeyRt, LaneRt, RouteRt, Runtime};
use crate::table::Entry;
use crate::{retry, App};

/// Largest upstream error body read to classify it (a quota error versus a rate limit).
const MAX_ERROR_BODY: usize = 1 << 20;

/// Everything about the request that every attempt needs.
pub struct Plan<'a> {
    pub app: &'a Arc<App>,
    pub rt: &'a Runtime,
    pub entry: &'a Arc<Entry>,
    pub key: &'a KeyRt,
    pub meta: &'a RequestMeta,
    pub body: &'a Bytes,
    pub endpoint: Endpoint,
    pub priority: i32,
    pub tokens: u64,
    pub deadline: Instant,
}

/// An upstream success, with the slot it holds.
pub struct Forwarded {
    pub response: http::Response<Incoming>,
    pub permit: Permit,
    /// Laneway asked for a usage chunk the client did not want; the relay removes it.
    pub strip_usage: bool,
}

/// A failure, and whether the route's fallbacks should be tried.
struct Failure {
    error: GatewayError,
    fallback: bool,
}

impl Failure {
    fn last(error: GatewayError) -> Self {
        Self {
            error,
            fallback: false,
        }
    }

    fn route_down(error: GatewayError) -> Self {
        Self {
            error,
            fallback: true,
        }
    }
}

fn cancelled() -> GatewayError {
    ApiError::new(
        ErrorCode::RequestCancelled,
        "an operator stopped this request; send it again if it is still needed",
    )
    .into()
}

fn deadline_exceeded() -> GatewayError {
    ApiError::new(
        ErrorCode::DeadlineExceeded,
        "the request's deadline passed before the upstream answered; raise x-laneway-timeout or server.request_timeout if it needs longer",
    )
    .into()
}

/// Serves the request from its route, then from each fallback in order.
pub async fn forward(
    plan: &Plan<'_>,
    route: &RouteRt,
    ledger: &mut Ledger,
) -> Result<Forwarded, GatewayError> {
    let mut failure = match serve_route(plan, route, None, ledger).await {
        Ok(f) => return Ok(f),
        Err(f) => f,
    };
    for pattern in &route.fallbacks {
        if !failure.fallback || plan.entry.cancel.is_cancelled() {
            break;
        }
        let Some(next) = plan.rt.route_for_pattern(pattern) else {
            continue;
        };
        // A literal fallback names the model to ask for; a pattern keeps the client's model
        // (the fallback lanes' `model` setting may still rewrite it).
        let model = glob::is_literal(pattern).then_some(pattern.as_str());
        tracing::info!(id = %plan.entry.id, fallback = %pattern, "route unavailable, trying its fallback");
        failure = match serve_route(plan, next, model, ledger).await {
            Ok(f) => return Ok(f),
            Err(f) => f,
        };
    }
    Err(failure.error)
}

/// Lanes to try next: the pool without the lanes that already failed this request, or the whole
/// pool when every lane failed once. The first attempt borrows the pool as it is.
fn candidates<'p>(pool: &'p [Arc<Lane>], failed: &[Arc<Lane>]) -> Cow<'p, [Arc<Lane>]> {
    if failed.is_empty() {
        return Cow::Borrowed(pool);
    }
    let fresh: Vec<_> = pool
        .iter()
        .filter(|l| !failed.iter().any(|f| Arc::ptr_eq(f, l)))
        .cloned()
        .collect();
    if fresh.is_empty() {
        Cow::Borrowed(pool)
    } else {
        Cow::Owned(fresh)
    }
}

/// Serves the request from one route's pool: admission, an attempt, its verdict, and a retry
/// after a delay while the verdict, the budget and the deadline allow.
async fn serve_route(
    plan: &Plan<'_>,
    route: &RouteRt,
    model: Option<&str>,
    ledger: &mut Ledger,
) -> Result<Forwarded, Failure> {
    let retry = &plan.rt.config.retry;
    let mut failed: Vec<Arc<Lane>> = Vec::new();
    let mut attempt = 0;
    // After the first attempt the request keeps its key's share across retries: it is still one
    // request to its key's limits.
    let mut key_share: Option<KeyPermit> = None;
    loop {
        let permit = admit(plan, route, &failed, key_share.take()).await?;
        let lane = granted(plan, &permit)?;
        attempt += 1;
        started(plan, lane, &permit, attempt, ledger);
        if !failed.iter().any(|f| Arc::ptr_eq(f, permit.lane())) {
            lane.budget.deposit(retry);
        }
        let (verdict, permit) = attempt_once(plan, lane, model, permit).await?;
        let (error, hint, reason) = match verdict {
            Verdict::Success {
                response,
                strip_usage,
            } => {
                return Ok(Forwarded {
                    response,
                    permit,
                    strip_usage,
                })
            }
            Verdict::Final(e) => return Err(Failure::last(e)),
            Verdict::Retry {
                error,
                hint,
                reason,
            } => (error, hint, reason),
        };
        failed.push(permit.lane().clone());
        key_share = permit.into_key();
        let may_retry = attempt < retry.max_attempts.get() && lane.budget.withdraw(retry);
        let another_lane = route.pool.len() > failed.len();
        let remaining = plan.deadline.saturating_duration_since(Instant::now());
        let Some(delay) = may_retry
            .then(|| retry_delay(retry, attempt, another_lane, hint, remaining))
            .flatten()
        else {
            return Err(Failure::route_down(error));
        };
        plan.app
            .metrics
            .retries
            .get_or_create(&LaneReason {
                lane: lane.label.clone(),
                reason,
            })
            .inc();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = plan.entry.cancel.cancelled() => return Err(Failure::last(cancelled())),
        }
    }
}

/// The delay before retry number `attempt`, or `None` when it would not finish before the
/// deadline. Another lane of the pool is tried after a short backoff; the same lane only once
/// its hint (bounded by `retry.max_pause`) has passed.
pub fn retry_delay(
    retry: &RetryConfig,
    attempt: u32,
    another_lane: bool,
    hint: Option<Duration>,
    remaining: Duration,
) -> Option<Duration> {
    let mut delay = retry::backoff(retry, attempt);
    if !another_lane {
        delay = delay.max(hint.unwrap_or_default().min(retry.max_pause));
    }
    (delay < remaining).then_some(delay)
}

/// Waits for a slot on the lanes not yet failed (all of them once every lane failed).
async fn admit(
    plan: &Plan<'_>,
    route: &RouteRt,
    failed: &[Arc<Lane>],
    key_share: Option<KeyPermit>,
) -> Result<Permit, Failure> {
    let entry = plan.entry;
    entry.set_waiting();
    let lanes = candidates(&route.pool, failed);
    let ask = Ask {
        key: &plan.key.key,
        priority: plan.priority,
        tokens: plan.tokens,
        deadline: plan.deadline,
        cancel: &entry.cancel,
        tag: entry.tag,
    };
    let admitted = match key_share {
        Some(k) => acquire_with_key(&lanes, ask, k).await,
        None => acquire(&lanes, ask).await,
    };
    admitted.map_err(|e| match e {
        AdmissionError::NoLaneAvailable { .. } => Failure::route_down(e.into()),
        e => Failure::last(e.into()),
    })
}

/// The gateway's side of the lane a permit was granted on.
fn granted<'r>(plan: &Plan<'r>, permit: &Permit) -> Result<&'r LaneRt, Failure> {
    plan.rt.lane(permit.lane().name()).ok_or_else(|| {
        Failure::last(
            ApiError::new(ErrorCode::Internal, "the granted lane is not configured").into(),
        )
    })
}

/// Records that an attempt starts on `lane`: the request table, the queue-wait metric, the log.
fn started(plan: &Plan<'_>, lane: &LaneRt, permit: &Permit, attempt: u32, ledger: &mut Ledger) {
    let entry = plan.entry;
    entry.set_running(lane.label.clone());
    entry.attempt.store(attempt, Ordering::Relaxed);
    plan.app
        .metrics
        .queue_wait
        .get_or_create(&LaneLabel {
            lane: lane.label.clone(),
        })
        .observe(permit.queued_for.as_secs_f64());
    ledger.lane = Some(lane.label.clone());
    ledger.queue_wait = Some(ledger.queue_wait.unwrap_or_default() + permit.queued_for);
    ledger.upstream_start = Some(Instant::now());
    ledger.attempts = attempt;
}

/// What one attempt's answer means for the request.
enum Verdict {
    Success {
        response: http::Response<Incoming>,
        strip_usage: bool,
    },
    /// Passed to the client as it is, no retry.
    Final(GatewayError),
    /// Worth another attempt; `error` is what the client gets if none follows.
    Retry {
        error: GatewayError,
        hint: Option<Duration>,
        reason: Cow<'static, str>,
    },
}

/// Sends one attempt on the permit's lane and judges the answer, feeding the lane's health.
async fn attempt_once(
    plan: &Plan<'_>,
    lane: &LaneRt,
    model: Option<&str>,
    permit: Permit,
) -> Result<(Verdict, Permit), Failure> {
    let entry = plan.entry;
    // Ask for usage on streams when a token limit needs settling and the client did not.
    let meta = plan.meta;
    let strip_usage = meta.stream
        && !meta.include_usage
        && (lane.has_tpm
            || plan
                .key
                .config
                .as_ref()
                .is_some_and(|k| k.limits.tpm.is_some()));
    let mut body = match model.or(lane.config.model.as_deref()) {
        Some(m) => meta.rewrite_model(plan.body, m),
        None => plan.body.clone(),
    };
    if strip_usage {
        body = RequestMeta::with_stream_usage(&body);
    }
    let now = Instant::now();
    let request = UpstreamRequest {
        url: lane.url(plan.endpoint),
        api_key: lane.config.api_key.as_ref().map(|k| k.expose().as_str()),
        body,
        request_id: &entry.id,
        first_byte_timeout: lane
            .config
            .first_byte_timeout
            .min(plan.deadline.saturating_duration_since(now)),
    };
    let client = plan.app.client();
    let sent = tokio::select! {
        r = client.send(request) => r,
        () = entry.cancel.cancelled() => return Err(Failure::last(cancelled())),
        () = tokio::time::sleep_until(plan.deadline) => return Err(Failure::last(deadline_exceeded())),
    };
    let latency = now.elapsed();
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.retryable() => {
            tracing::debug!(lane = %lane.label, error = %e, "upstream attempt failed");
            permit.lane().feedback(Feedback::Failed);
            let verdict = Verdict::Retry {
                error: GatewayError::from(e),
                hint: None,
                reason: Cow::Borrowed("connect"),
            };
            return Ok((verdict, permit));
        }
        Err(e) => return Err(Failure::last(e.into())),
    };
    let status = resp.status();
    let hints = Hints::from_headers(resp.headers());
    if !(status.is_client_error() || status.is_server_error()) {
        permit.lane().feedback(Feedback::Success { latency });
        if let Some(reset) = hints.exhausted_for() {
            permit.lane().feedback(Feedback::Exhausted { reset });
        }
        return Ok((
            Verdict::Success {
                response: resp,
                strip_usage,
            },
            permit,
        ));
    }
    let (parts, incoming) = resp.into_parts();
    let read = tokio::select! {
        b = http_body_util::Limited::new(incoming, MAX_ERROR_BODY).collect() => b,
        () = entry.cancel.cancelled() => return Err(Failure::last(cancelled())),
        () = tokio::time::sleep_until(plan.deadline) => return Err(Failure::last(deadline_exceeded())),
    };
    let Ok(bytes) = read.map(|c| c.to_bytes()) else {
        // An error answer that cannot be read whole is not passed on cut short.
        permit.lane().feedback(Feedback::Failed);
        return Err(Failure::last(GatewayError::Api(ApiError::new(
            ErrorCode::UpstreamUnreachable,
            format!(
                "the upstream answered {} with an error body that is broken or larger \
                 than {} KiB; the lane's upstream misbehaves",
                status.as_u16(),
                MAX_ERROR_BODY >> 10
            ),
        ))));
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        plan.app
            .metrics
            .upstream_429
            .get_or_create(&LaneLabel {
                lane: lane.label.clone(),
            })
            .inc();
    }
    let outcome = classify(status, is_quota_error(&bytes));
    let passthrough = respond::upstream_error(parts, bytes, hints.retry_after);
    let verdict = match outcome {
        Outcome::Retryable { overloaded } => {
            permit.lane().feedback(if overloaded {
                Feedback::Overloaded {
                    retry_after: hints.retry_after,
                }
            } else {
                Feedback::Failed
            });
            Verdict::Retry {
                error: passthrough,
                hint: hints.retry_after,
                reason: Cow::Owned(format!("status_{}", status.as_u16())),
            }
        }
        _ => {
            // The upstream answered; the request itself was refused.
            permit.lane().feedback(Feedback::Success { latency });
            Verdict::Final(passthrough)
        }
    };
    Ok((verdict, permit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_pause: Duration::from_secs(5),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn another_lane_is_tried_after_backoff_only() {
        for attempt in 1..6 {
            let d = retry_delay(
                &cfg(),
                attempt,
                true,
                Some(Duration::from_secs(60)),
                Duration::MAX,
            )
            .unwrap();
            assert!(
                d <= Duration::from_secs(1),
                "the hint is for the lane that gave it"
            );
        }
    }

    #[test]
    fn the_same_lane_waits_for_its_bounded_hint() {
        let d = retry_delay(
            &cfg(),
            1,
            false,
            Some(Duration::from_secs(2)),
            Duration::MAX,
        )
        .unwrap();
        assert!(d >= Duration::from_secs(2));
        let d = retry_delay(
            &cfg(),
            1,
            false,
            Some(Duration::from_secs(3600)),
            Duration::MAX,
        );
        assert_eq!(
            d,
            Some(Duration::from_secs(5)),
            "retry.max_pause bounds a hint"
        );
    }

    #[test]
    fn no_retry_that_cannot_finish_before_the_deadline() {
        let hint = Some(Duration::from_secs(2));
        assert_eq!(
            retry_delay(&cfg(), 1, false, hint, Duration::from_secs(1)),
            None
        );
        assert!(retry_delay(&cfg(), 1, false, hint, Duration::from_secs(3)).is_some());
    }
}
