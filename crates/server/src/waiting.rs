//! Streams that wait in a queue start at once and tell their client where they stand: SSE
//! comment lines `: queued position=N eta_ms=M`, at once when the position changes and at least
//! every second, which also keeps proxies from cutting an idle connection. Clients that parse
//! SSE ignore comments. When the answer comes, a `: lane=NAME queue_ms=N` comment stands in for
//! the headers that could not be sent yet, then the upstream's events follow; an error becomes
//! one `data: {"error":...}` event.
//!
//! Requests that never wait, and all non-streaming ones, keep the plain path: their status and
//! headers are the upstream's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use laneway_core::wire::Endpoint;
use laneway_core::{ApiError, ErrorCode};
use tokio::time::{Instant, Interval};

use crate::respond::StreamOf;
use crate::App;
use laneway_engine::render;
use laneway_engine::table::Entry;

/// The request's work from admission to its response.
pub type Work = Pin<Box<dyn Future<Output = Response> + Send>>;

/// How often a waiting stream checks where it stands.
const CHECK: Duration = Duration::from_millis(250);
/// The longest a waiting stream goes without a comment.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Largest error body turned into the final event.
const MAX_ERROR: usize = 1 << 20;

/// Runs `work`; if the stream has to wait in a queue first, answers at once with an event
/// stream that reports its standing until the answer arrives.
pub async fn serve(app: &Arc<App>, entry: Arc<Entry>, mut work: Work) -> Response {
    loop {
        tokio::select! {
            biased;
            response = &mut work => return response,
            () = entry.waits.notified() => {
                if !entry.is_running() {
                    return early(app.clone(), entry, work);
                }
            }
        }
    }
}

enum State {
    Waiting {
        app: Arc<App>,
        entry: Arc<Entry>,
        work: Work,
        tick: Interval,
        last: Option<(usize, Instant)>,
    },
    Relaying(axum::body::BodyDataStream),
    Done,
}

fn early(app: Arc<App>, entry: Arc<Entry>, work: Work) -> Response {
    let state = State::Waiting {
        app,
        entry,
        work,
        tick: tokio::time::interval(CHECK),
        last: None,
    };
    let stream = futures_util::stream::unfold(state, step);
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

type Item = Result<Bytes, axum::Error>;

async fn step(state: State) -> Option<(Item, State)> {
    match state {
        State::Waiting {
            app,
            entry,
            mut work,
            mut tick,
            mut last,
        } => loop {
            tokio::select! {
                biased;
                response = &mut work => return Some(answered(response).await),
                _ = tick.tick() => {
                    if let Some(comment) = standing(&app, &entry, &mut last) {
                        let state = State::Waiting { app, entry, work, tick, last };
                        return Some((Ok(comment), state));
                    }
                }
            }
        },
        State::Relaying(mut body) => {
            use futures_util::StreamExt;
            let item = body.next().await?;
            let next = if item.is_ok() {
                State::Relaying(body)
            } else {
                State::Done
            };
            Some((item, next))
        }
        State::Done => None,
    }
}

/// The comment reporting where the request stands, when it is due: its position changed, or a
/// second passed since the last one.
fn standing(app: &App, entry: &Entry, last: &mut Option<(usize, Instant)>) -> Option<Bytes> {
    if entry.is_running() {
        return None;
    }
    let (computed, map) = app.standings.get(app);
    let now = Instant::now();
    // Shared standings are up to 250 ms old: their wait has shrunk by as much since. A stream
    // that started waiting after they were computed is looked up on its own.
    let (position, eta) = match map.get(&entry.tag) {
        Some(s) => (
            s.position,
            s.eta.saturating_sub(now.duration_since(computed)),
        ),
        None => crate::views::standing_of(app, entry.tag)?,
    };
    let due = match *last {
        None => true,
        Some((pos, at)) => pos != position || now.duration_since(at) >= HEARTBEAT,
    };
    if !due {
        return None;
    }
    *last = Some((position, now));
    let eta_ms = u64::try_from(eta.as_millis()).unwrap_or(u64::MAX);
    Some(Bytes::from(format!(
        ": queued position={position} eta_ms={eta_ms}\n\n"
    )))
}

/// The answer arrived: a success continues as the upstream's events, after a comment with what
/// its headers would have said; an error becomes the stream's one and last event.
async fn answered(response: Response) -> (Item, State) {
    let (parts, body) = response.into_parts();
    if parts.status.is_success() {
        let get = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let note = format!(
            ": lane={} queue_ms={}\n\n",
            get("x-laneway-lane"),
            get("x-laneway-queue-ms")
        );
        return (
            Ok(Bytes::from(note)),
            State::Relaying(body.into_data_stream()),
        );
    }
    let bytes = http_body_util::Limited::new(body, MAX_ERROR)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let api = parts
        .extensions
        .get::<StreamOf>()
        .map_or(Endpoint::ChatCompletions, |s| s.0);
    (Ok(error_event(api, parts.status, &bytes)), State::Done)
}

/// The error as the stream's one event, in its API's own form, compacted to a single line.
fn error_event(api: Endpoint, status: StatusCode, body: &[u8]) -> Bytes {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match value.filter(|v| v.get("error").is_some()) {
        Some(v) => Bytes::from(render::stream_event_value(api, &v)),
        None => {
            let err = ApiError::new(
                ErrorCode::UpstreamUnreachable,
                format!(
                    "the upstream answered {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
            );
            Bytes::from(render::stream_event(api, &err))
        }
    }
}
