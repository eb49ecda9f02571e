//! One batch item through the request path a client's request takes (route, key checks,
//! admission, attempts, relay), as the batch's owner, at [`BATCH_PRIORITY`], with the whole
//! answer collected for the output file.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::Api as App;
use laneway_engine::auth::RequestCtx;
use laneway_engine::call::{self as inside, Caller, Inside};
use laneway_engine::route::BATCH_PRIORITY;
use laneway_engine::Error;

/// Largest answer kept for one item; a bigger one is recorded as an error.
const MAX_ANSWER: usize = 16 << 20;

/// What became of one attempt at an item.
pub(crate) enum Outcome {
    /// An answer to record: the upstream's (any status) or the gateway's final error.
    Done {
        status: u16,
        body: Bytes,
        request_id: Arc<str>,
        /// The lane that answered, if one did.
        lane: Option<laneway_engine::label::Label>,
    },
    /// The gateway had no room for it yet (a limit, a full queue, no lane): try again after
    /// this long. Nothing is recorded, so the item is neither lost nor counted as failed.
    Later(Duration),
    /// The batch was cancelled while the item waited for a slot; it never ran.
    Withdrawn,
}

impl Outcome {
    fn error(e: &ApiError, request_id: Arc<str>) -> Self {
        // The line says what a client would have read: the status and the error body.
        let (parts, body) = laneway_engine::render::response(e).into_parts();
        Self::Done {
            status: parts.status.as_u16(),
            body,
            request_id,
            lane: None,
        }
    }
}

/// Sends one item as `owner` and collects the answer. Cancelling `withdraw` takes the item out
/// of the lane's queue if it has not started.
pub(crate) async fn run(
    app: &Arc<App>,
    endpoint: Endpoint,
    owner: &str,
    body: Bytes,
    withdraw: &CancellationToken,
) -> Outcome {
    let topo = app.engine.topo.load_full();
    let Some(key) = topo.key_named(owner).cloned() else {
        let e = ApiError::new(
            ErrorCode::InvalidApiKey,
            format!("the key `{owner}` that owns this batch is no longer configured"),
        );
        return Outcome::error(&e, RequestCtx::new(None).id);
    };
    let who = Caller {
        key: &key,
        timeout: topo.request_timeout(),
        priority: BATCH_PRIORITY,
        batch: true,
        withdraw: Some(withdraw),
    };
    match inside::send(&app.engine, &topo, endpoint, body, who).await {
        Inside::Answer {
            relay,
            ledger,
            lane,
            id,
        } => match relay.whole(ledger, MAX_ANSWER).await {
            Ok((status, body)) => Outcome::Done {
                status: status.as_u16(),
                body,
                request_id: id,
                lane,
            },
            Err(e) => Outcome::error(&e, id),
        },
        Inside::Refused {
            error: Error::Api(a),
            id,
        } => match later(&a) {
            Some(after) => Outcome::Later(after),
            None => Outcome::error(&a, id),
        },
        Inside::Refused {
            error: Error::PassThrough(r),
            id,
        } => Outcome::Done {
            status: r.status().as_u16(),
            body: r.into_body(),
            request_id: id,
            lane: None,
        },
        Inside::Withdrawn => Outcome::Withdrawn,
    }
}

/// Gateway refusals that only mean "not yet": the item waits and tries again.
fn later(e: &ApiError) -> Option<Duration> {
    let retry = matches!(
        e.code,
        ErrorCode::RateLimit
            | ErrorCode::ConcurrencyLimitExceeded
            | ErrorCode::QueueFull
            | ErrorCode::QueueTimeout
            | ErrorCode::NoLaneAvailable
            | ErrorCode::StoreUnavailable
    );
    retry.then(|| {
        e.retry_after
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(20), Duration::from_secs(60))
    })
}

/// One line of a batch's output or error file, in OpenAI's format.
pub(crate) fn output_line(custom_id: &str, status: u16, body: &[u8], request_id: &str) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        id: String,
        custom_id: &'a str,
        response: Response<'a>,
        error: Option<()>,
    }
    #[derive(Serialize)]
    struct Response<'a> {
        status_code: u16,
        request_id: &'a str,
        body: Answer<'a>,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Answer<'a> {
        Json(&'a RawValue),
        Text(std::borrow::Cow<'a, str>),
    }
    // JSON answers are embedded as they are; anything else as a string.
    let body = serde_json::from_slice::<&RawValue>(body)
        .map(Answer::Json)
        .unwrap_or_else(|_| Answer::Text(String::from_utf8_lossy(body)));
    let line = Line {
        id: laneway_storage::new_id("batch_req_"),
        custom_id,
        response: Response {
            status_code: status,
            request_id,
            body,
        },
        error: None,
    };
    // Strings and raw JSON always serialise.
    serde_json::to_string(&line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_embed_json_and_quote_the_rest() {
        let l = output_line("a\"1", 200, br#"{"x": [1, 2]}"#, "req-1");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["custom_id"], "a\"1");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(v["response"]["request_id"], "req-1");
        assert_eq!(v["response"]["body"]["x"][1], 2);
        assert!(v["error"].is_null());
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        let l = output_line("b", 502, b"bad gateway\n\xff", "req-2");
        assert!(!l.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["response"]["body"], "bad gateway\n\u{fffd}");
    }

    #[test]
    fn only_capacity_refusals_are_tried_again() {
        let busy =
            ApiError::new(ErrorCode::QueueFull, "full").with_retry_after(Duration::from_millis(1));
        assert_eq!(later(&busy), Some(Duration::from_millis(20)));
        let slow =
            ApiError::new(ErrorCode::RateLimit, "slow").with_retry_after(Duration::from_secs(3600));
        assert_eq!(later(&slow), Some(Duration::from_secs(60)));
        assert_eq!(later(&ApiError::new(ErrorCode::ModelNotFound, "no")), None);
    }
}
