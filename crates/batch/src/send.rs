//! One request to an OpenAI-compatible base URL: retries that obey the upstream's hints, a
//! stream read to its end with its usage, and errors that keep the upstream's code and status.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;

use laneway_core::wire::{Endpoint, RequestMeta};
use laneway_engine::names::{X_LANEWAY_REQUEST_ID, X_REQUEST_ID};
use laneway_engine::Engine;
use laneway_upstream::classify::{classify, is_quota_error, Outcome};
use laneway_upstream::{Endpoints, Hints, UpstreamClient, UpstreamError, UpstreamRequest};
use tokio::time::Instant;

use crate::answer::{read_plain, read_stream, upstream_error};
use crate::item::{Error, Request, Response};

/// Largest answer read for one item.
const MAX_BODY: usize = 64 << 20;
/// The longest an upstream's hint may delay a retry.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What one attempt taught about the upstream's capacity, for an adaptive bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    /// Answered in this time; `exhausted` when the upstream's `x-ratelimit-remaining-*` said
    /// nothing is left, with how long until the next request fits.
    Served {
        latency: Duration,
        exhausted: Option<Duration>,
    },
    Overloaded,
    Other,
}

/// Where requests go.
#[derive(Clone)]
pub(crate) enum Target {
    /// An OpenAI-compatible base URL ending in the API version, like `http://127.0.0.1:8400/v1`.
    Url {
        client: Box<UpstreamClient>,
        /// The base URL's endpoints with the key, checked once; a base URL that does not parse
        /// fails each item with the reason.
        endpoints: Result<Arc<Endpoints>, UpstreamError>,
    },
    /// The lanes of a config, in this process: no socket, no HTTP.
    Lanes(Arc<Engine>),
}

#[derive(Clone)]
pub(crate) struct Sender {
    pub target: Target,
    pub api_key: Option<String>,
    pub attempts: u32,
}

impl Sender {
    /// Sends `req` until it succeeds, fails for good, runs out of attempts or reaches `deadline`;
    /// `signal` learns from every attempt.
    pub async fn send(
        &self,
        req: &Request,
        id: &str,
        deadline: Instant,
        signal: &mut (dyn FnMut(Signal) + Send),
    ) -> Result<Response, Error> {
        // Straight into bytes (`to_string` goes through the formatter, a call per token); a
        // `Value` always serialises.
        let mut body = Bytes::from(serde_json::to_vec(&req.body).unwrap_or_default());
        if req.streams() {
            // Every streamed item reports its usage, so the run's total is complete.
            body = RequestMeta::with_stream_usage(&body);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            // Boxed: inline, an attempt (about 4 KB, the lanes' request path included) was held
            // twice over in this future, and every item's future (10 KB) was copied into its
            // task when the run started it; now that is under 1 KB.
            let attempt_fut = Box::pin(self.once(req.endpoint, body.clone(), id, req.streams()));
            let outcome = tokio::time::timeout_at(deadline, attempt_fut).await;
            let (err, hint) = match outcome {
                Err(_) => {
                    return Err(Error::new(
                        "timeout",
                        "the item did not finish within its timeout",
                    ))
                }
                Ok(Ok((r, exhausted))) => {
                    signal(Signal::Served {
                        latency: started.elapsed(),
                        exhausted,
                    });
                    return Ok(r);
                }
                Ok(Err(Failure::Final(e))) => {
                    signal(Signal::Other);
                    return Err(e);
                }
                Ok(Err(Failure::Later { error, after })) => {
                    // The lanes had no room yet: not an attempt, the item waits its turn.
                    if Instant::now() + after >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(after).await;
                    attempt -= 1;
                    continue;
                }
                Ok(Err(Failure::Retry {
                    error,
                    hint,
                    overloaded,
                })) => {
                    signal(if overloaded {
                        Signal::Overloaded
                    } else {
                        Signal::Other
                    });
                    (error, hint)
                }
            };
            if attempt >= self.attempts {
                return Err(err);
            }
            // Full jitter, so items that failed together do not come back together.
            let backoff = Duration::from_millis(100 << attempt.min(8)).mul_f64(fastrand::f64());
            let pause = backoff.max(hint.unwrap_or_default().min(MAX_PAUSE));
            if Instant::now() + pause >= deadline {
                return Err(err);
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn once(
        &self,
        endpoint: Endpoint,
        body: Bytes,
        id: &str,
        stream: bool,
    ) -> Result<(Response, Option<Duration>), Failure> {
        // The lanes name the request themselves; a base URL's answer may, in a header.
        let (status, headers, bytes, named) = match &self.target {
            Target::Url { client, endpoints } => {
                let (status, headers, bytes) =
                    from_url(client, endpoints, endpoint, body, id).await?;
                (status, headers, bytes, None)
            }
            Target::Lanes(app) => {
                let whole = from_lanes(app, endpoint, self.api_key.as_deref(), body).await?;
                (whole.status, whole.headers, whole.body, whole.id)
            }
        };
        let hints = Hints::from_headers(&headers);
        let request_id = match named {
            Some(named) => named.to_string(),
            None => [&X_REQUEST_ID, &X_LANEWAY_REQUEST_ID]
                .into_iter()
                .find_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
                .unwrap_or(id)
                .to_owned(),
        };
        let exhausted = hints.exhausted_for();
        // Only a 429 can mean spent quota; a success is not searched.
        let quota = status == http::StatusCode::TOO_MANY_REQUESTS && is_quota_error(&bytes);
        match classify(status, quota) {
            Outcome::Success if stream => read_stream(&bytes, request_id)
                .map(|r| (r, exhausted))
                .map_err(Failure::Final),
            Outcome::Success => read_plain(bytes, request_id)
                .map(|r| (r, exhausted))
                .map_err(Failure::Final),
            outcome => {
                let mut error = upstream_error(status.as_u16(), &bytes);
                error.retry_after = hints.retry_after;
                error.request_id = Some(request_id);
                Err(match outcome {
                    Outcome::Retryable { overloaded } => Failure::Retry {
                        error,
                        hint: hints.retry_after,
                        overloaded,
                    },
                    _ => Failure::Final(error),
                })
            }
        }
    }
}

/// One attempt at a base URL: the status, headers and whole body.
async fn from_url(
    client: &UpstreamClient,
    endpoints: &Result<Arc<Endpoints>, UpstreamError>,
    endpoint: Endpoint,
    body: Bytes,
    id: &str,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), Failure> {
    let endpoints = endpoints
        .as_ref()
        .map_err(|e| Failure::Final(Error::new("connection_error", e.to_string())))?;
    let request = UpstreamRequest {
        target: endpoints.get(endpoint),
        body,
        pass: None,
        request_id: id,
        first_byte_timeout: Duration::from_secs(600),
    };
    let resp = client.send(request).await.map_err(|e| {
        let error = Error::new("connection_error", e.to_string());
        if e.retryable() {
            Failure::Retry {
                error,
                hint: None,
                overloaded: false,
            }
        } else {
            Failure::Final(error)
        }
    })?;
    read(resp).await
}

/// The request through the lanes in this process: a success, or a final error. The engine has
/// retried already, under its retry budget, on the lanes' own adaptive limits: an answer that
/// broke off is final here, as it is for a client of the gateway (a retry could duplicate what
/// was produced).
async fn from_lanes(
    engine: &Arc<Engine>,
    endpoint: Endpoint,
    api_key: Option<&str>,
    body: Bytes,
) -> Result<laneway_engine::Whole, Failure> {
    let whole = engine
        .call_whole(endpoint, api_key, body, MAX_BODY)
        .await
        .map_err(|e| {
            Failure::Final(Error::new(
                "connection_error",
                format!("the answer broke off: {}", e.message),
            ))
        })?;
    if let Some(code) = whole.refused {
        return Err(lanes_refusal(code, &whole));
    }
    let status = whole.status;
    if status.is_client_error() || status.is_server_error() {
        // The upstream's own error, after the engine's retries.
        let mut error = upstream_error(status.as_u16(), &whole.body);
        error.retry_after = Hints::from_headers(&whole.headers).retry_after;
        error.request_id = whole.id.as_deref().map(str::to_owned);
        return Err(Failure::Final(error));
    }
    Ok(whole)
}

/// The whole answer, within [`MAX_BODY`].
async fn read<B>(
    resp: http::Response<B>,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Failure::Retry {
            error: Error::new("connection_error", format!("the answer broke off: {e}")),
            hint: None,
            overloaded: false,
        })?;
    Ok((parts.status, parts.headers, bytes))
}

/// Laneway's own refusal in lanes mode: "not yet" (no room in the lanes, a key's rate) waits
/// and sends again; anything else is final: a bad request, a key not allowed, and
/// `no_lane_available` (every lane's circuit is open because its upstream keeps failing, or its
/// cooldown outlasts the item's deadline; the engine has waited out shorter ones already).
fn lanes_refusal(code: laneway_core::ErrorCode, whole: &laneway_engine::Whole) -> Failure {
    use laneway_core::ErrorCode as C;
    let mut error = upstream_error(whole.status.as_u16(), &whole.body);
    error.request_id = whole.id.as_deref().map(str::to_owned);
    let after = Hints::from_headers(&whole.headers).retry_after;
    error.retry_after = after;
    let later = matches!(
        code,
        C::RateLimit
            | C::ConcurrencyLimitExceeded
            | C::QueueFull
            | C::QueueTimeout
            | C::StoreUnavailable
    );
    if later {
        let after = after
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(20), MAX_PAUSE);
        Failure::Later { error, after }
    } else {
        Failure::Final(error)
    }
}

enum Failure {
    Final(Error),
    /// The lanes in this process had no room yet: send again after `after`, not counted as an
    /// attempt.
    Later {
        error: Error,
        after: Duration,
    },
    Retry {
        error: Error,
        hint: Option<Duration>,
        overloaded: bool,
    },
}
