//! Getting an answer from upstream: attempts on the route's pool, retries that prefer another
//! lane, feedback to each lane's health, and the route's fallbacks.
//!
//! The commit point: everything here happens before the first byte goes to the client. Once a
//! success is returned, its body is relayed as it comes and nothing is retried.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use laneway_admission::{
    acquire, acquire_with_key, AdmissionError, Ask, Feedback, KeyPermit, Lane, Permit,
};
use laneway_core::wire::{Endpoint, RequestMeta};
use laneway_core::{glob, ApiError, ErrorCode};
use laneway_upstream::classify::{classify, is_quota_error, Outcome};
use laneway_upstream::{Hints, UpstreamRequest};
use tokio::time::Instant;

use crate::ledger::Ledger;
use crate::metrics::{LaneLabel, LaneReason};
use crate::respond::{self, GatewayError};
use crate::runtime::{KeyRt, RouteRt, Runtime};
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
    ledger: &mut Option<Ledger>,
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

async fn serve_route(
    plan: &Plan<'_>,
    route: &RouteRt,
    model: Option<&str>,
    ledger: &mut Option<Ledger>,
) -> Result<Forwarded, Failure> {
    let retry = &plan.rt.config.retry;
    let entry = plan.entry;
    let mut failed: Vec<Arc<Lane>> = Vec::new();
    let mut attempt = 0;
    // After the first attempt the request keeps its key's share across retries: it is still one
    // request to its key's limits.
    let mut key_share: Option<KeyPermit> = None;
    loop {
        entry.set_waiting();
        let lanes = candidates(&route.pool, &failed);
        let ask = Ask {
            key: &plan.key.key,
            priority: plan.priority,
            tokens: plan.tokens,
            deadline: plan.deadline,
            cancel: &entry.cancel,
            tag: entry.tag,
        };
        let admitted = match key_share.take() {
            Some(k) => acquire_with_key(&lanes, ask, k).await,
            None => acquire(&lanes, ask).await,
        };
        let permit = match admitted {
            Ok(p) => p,
            Err(e @ AdmissionError::NoLaneAvailable { .. }) => {
                return Err(Failure::route_down(e.into()))
            }
            Err(e) => return Err(Failure::last(e.into())),
        };
        let name = permit.lane().name();
        let Some(lane) = plan.rt.lane(name) else {
            return Err(Failure::last(
                ApiError::new(ErrorCode::Internal, "the granted lane is not configured").into(),
            ));
        };
        let lane_name = lane.label.clone();
        entry.set_running(lane_name.clone());
        attempt += 1;
        entry.attempt.store(attempt, Ordering::Relaxed);
        plan.app
            .metrics
            .queue_wait
            .get_or_create(&LaneLabel {
                lane: lane_name.clone(),
            })
            .observe(permit.queued_for.as_secs_f64());
        if let Some(l) = ledger.as_mut() {
            l.lane = Some(lane_name.clone());
            l.queue_wait = Some(l.queue_wait.unwrap_or_default() + permit.queued_for);
            l.upstream_start = Some(Instant::now());
            l.attempts = attempt;
        }
        if !failed.iter().any(|f| Arc::ptr_eq(f, permit.lane())) {
            lane.budget.deposit(retry);
        }

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
        let (error, hint, reason) = match sent {
            Ok(resp) if !(resp.status().is_client_error() || resp.status().is_server_error()) => {
                let hints = Hints::from_headers(resp.headers());
                permit.lane().feedback(Feedback::Success { latency });
                if let Some(reset) = hints.exhausted_for() {
                    permit.lane().feedback(Feedback::Exhausted { reset });
                }
                return Ok(Forwarded {
                    response: resp,
                    permit,
                    strip_usage,
                });
            }
            Ok(resp) => {
                let status = resp.status();
                let hints = Hints::from_headers(resp.headers());
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
                            lane: lane_name.clone(),
                        })
                        .inc();
                }
                let outcome = classify(status, is_quota_error(&bytes));
                let passthrough = respond::upstream_error(parts, bytes, hints.retry_after);
                match outcome {
                    Outcome::Retryable { overloaded: true } => {
                        permit.lane().feedback(Feedback::Overloaded {
                            retry_after: hints.retry_after,
                        });
                    }
                    Outcome::Retryable { overloaded: false } => {
                        permit.lane().feedback(Feedback::Failed)
                    }
                    _ => {
                        // The upstream answered; the request itself was refused.
                        permit.lane().feedback(Feedback::Success { latency });
                        return Err(Failure::last(passthrough));
                    }
                }
                (
                    passthrough,
                    hints.retry_after,
                    Cow::Owned(format!("status_{}", status.as_u16())),
                )
            }
            Err(e) if e.retryable() => {
                tracing::debug!(lane = %lane_name, error = %e, "upstream attempt failed");
                permit.lane().feedback(Feedback::Failed);
                (GatewayError::from(e), None, Cow::Borrowed("connect"))
            }
            Err(e) => return Err(Failure::last(e.into())),
        };
        failed.push(permit.lane().clone());
        key_share = permit.into_key();
        if attempt >= retry.max_attempts.get() || !lane.budget.withdraw(retry) {
            return Err(Failure::route_down(error));
        }
        // Another lane of the pool can be tried after a short backoff; the same lane only once
        // its hint has passed.
        let another = route.pool.len() > failed.len();
        let mut delay = retry::backoff(retry, attempt);
        if !another {
            delay = delay.max(hint.unwrap_or_default().min(retry.max_pause));
        }
        if Instant::now() + delay >= plan.deadline {
            return Err(Failure::route_down(error));
        }
        plan.app
            .metrics
            .retries
            .get_or_create(&LaneReason {
                lane: lane_name.clone(),
                reason,
            })
            .inc();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = entry.cancel.cancelled() => return Err(Failure::last(cancelled())),
        }
    }
}
