//! One attempt on one lane: the upstream call and what its answer means for the request
//! (a success to relay, a final error, or one worth retrying), with feedback to the lane's
//! health. It decides nothing about retries; `forward` does.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use laneway_admission::{Feedback, Permit};
use laneway_core::wire::RequestMeta;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::classify::{classify, is_quota_error, Outcome};
use laneway_upstream::UpstreamBody;
use laneway_upstream::{Hints, UpstreamRequest};
use tokio::time::Instant;

use crate::plan::Plan;
use crate::render;
use crate::topology::LaneLive;
use crate::Error;

/// Largest upstream error body read to classify it (a quota error versus a rate limit).
const MAX_ERROR_BODY: usize = 1 << 20;

/// What one attempt's answer means for the request.
pub enum Verdict {
    Success {
        response: http::Response<UpstreamBody>,
        strip_usage: bool,
    },
    /// Passed to the client as it is, no retry.
    Final(Error),
    /// Worth another attempt; `error` is what the client gets if none follows.
    Retry {
        error: Error,
        hint: Option<Duration>,
        reason: Cow<'static, str>,
    },
}

/// The body one attempt sends on `lane`: the model rewritten when the fallback or the lane
/// names one, and usage requested on every stream whose client did not ask for it, so that
/// token limits settle and the metrics and request log count the tokens (the relay then strips
/// the usage chunk: the second value).
fn upstream_body(plan: &Plan<'_>, lane: &LaneLive, model: Option<&str>) -> (Bytes, bool) {
    let meta = plan.meta;
    // Only chat and completions report usage on request; the other APIs always do.
    let strip_usage = meta.stream && !meta.include_usage && plan.endpoint.usage_on_request();
    let mut body = match model.or(lane.config.model.as_deref()) {
        Some(m) => meta.rewrite_model(plan.body, m),
        None => plan.body.clone(),
    };
    if strip_usage {
        body = RequestMeta::with_stream_usage(&body);
    }
    (body, strip_usage)
}

/// Sends one attempt on the permit's lane and judges the answer, feeding the lane's health.
/// The permit comes back with the verdict, so the caller decides whether it is kept (a success
/// relays under it) or traded for the key's share (a retry).
pub async fn once(
    plan: &Plan<'_>,
    lane: &LaneLive,
    model: Option<&str>,
    mut permit: Permit,
) -> (Verdict, Permit) {
    let entry = plan.entry;
    let (body, strip_usage) = upstream_body(plan, lane, model);
    let now = Instant::now();
    let target = match lane.target(plan.endpoint) {
        Ok(t) => t,
        Err(e) => return (Verdict::Final(e.into()), permit),
    };
    let request = UpstreamRequest {
        target,
        body,
        pass: plan.pass,
        request_id: &entry.id,
        first_byte_timeout: lane
            .config
            .first_byte_timeout
            .min(plan.deadline.saturating_duration_since(now)),
    };
    let client = plan.engine.client();
    permit.begin();
    let sent = match entry.within(plan.deadline, client.send(request)).await {
        Ok(sent) => sent,
        Err(stop) => return (Verdict::Final(stop.into()), permit),
    };
    let latency = now.elapsed();
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.retryable() => {
            tracing::debug!(lane = %lane.label, error = %e, "upstream attempt failed");
            permit.feedback(Feedback::Failed);
            let verdict = Verdict::Retry {
                error: Error::from(e),
                hint: None,
                reason: Cow::Borrowed("connect"),
            };
            return (verdict, permit);
        }
        Err(e) => return (Verdict::Final(e.into()), permit),
    };
    let status = resp.status();
    let hints = Hints::from_headers(resp.headers());
    if !(status.is_client_error() || status.is_server_error()) {
        permit.feedback(Feedback::Success {
            latency,
            headroom: hints.remaining_requests,
        });
        if let Some(reset) = hints.exhausted_for() {
            crate::shared::feedback(plan, &permit, Feedback::Exhausted { reset });
        }
        return (
            Verdict::Success {
                response: resp,
                strip_usage,
            },
            permit,
        );
    }
    let verdict = judge_error(plan, lane, &permit, resp, hints, latency).await;
    (verdict, permit)
}

/// What an upstream error answer means: read its body (bounded) to tell a quota error from a
/// rate limit, feed the lane, and pass the answer on as it is if no retry follows.
async fn judge_error(
    plan: &Plan<'_>,
    lane: &LaneLive,
    permit: &Permit,
    resp: http::Response<UpstreamBody>,
    hints: Hints,
    latency: Duration,
) -> Verdict {
    let entry = plan.entry;
    let status = resp.status();
    let (parts, incoming) = resp.into_parts();
    let body = http_body_util::Limited::new(incoming, MAX_ERROR_BODY).collect();
    let read = match entry.within(plan.deadline, body).await {
        Ok(read) => read,
        Err(stop) => return Verdict::Final(stop.into()),
    };
    let Ok(bytes) = read.map(|c| c.to_bytes()) else {
        // An error answer that cannot be read whole is not passed on cut short.
        permit.feedback(Feedback::Failed);
        let error = Error::Api(ApiError::new(
            ErrorCode::UpstreamUnreachable,
            format!(
                "the upstream answered {} with an error body that is broken or larger \
                 than {} KiB; the lane's upstream misbehaves",
                status.as_u16(),
                MAX_ERROR_BODY >> 10
            ),
        ));
        return Verdict::Final(error);
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        plan.engine.observer().upstream_429(&lane.label);
    }
    let outcome = classify(status, is_quota_error(&bytes));
    let passthrough = render::upstream_error(parts, bytes, hints.retry_after);
    match outcome {
        Outcome::Retryable { overloaded } => {
            let fb = if overloaded {
                Feedback::Overloaded {
                    retry_after: hints.retry_after,
                }
            } else {
                Feedback::Failed
            };
            crate::shared::feedback(plan, permit, fb);
            Verdict::Retry {
                error: passthrough,
                hint: hints.retry_after,
                reason: Cow::Owned(format!("status_{}", status.as_u16())),
            }
        }
        _ => {
            // The upstream answered; the request itself was refused.
            permit.feedback(Feedback::Success {
                latency,
                headroom: None,
            });
            Verdict::Final(passthrough)
        }
    }
}
