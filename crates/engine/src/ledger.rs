//! What happened to one request, recorded once at its end: the request-log line and what
//! the engine's listener counts. A ledger dropped without being closed means the client went away, or,
//! when the request's handler panicked, an internal error.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use laneway_core::{ApiError, ErrorCode};
use laneway_upstream::sse::Usage;
use tokio::time::Instant;

use crate::ids::RequestCtx;
use crate::label::{Code, Label};
use crate::observe::{Finished, Observe, ObserveLane};
use crate::table::Entry;
use crate::{Engine, Error};

/// What requests record against the lane that served them, made once per lane: its name, the
/// same name as a response header value, and its metric series.
pub struct LaneRecord {
    pub label: Label,
    pub header: Option<HeaderValue>,
    pub series: Arc<dyn ObserveLane>,
}

impl LaneRecord {
    pub fn new(label: &Label, observer: &dyn Observe) -> Self {
        Self {
            label: label.clone(),
            header: HeaderValue::from_str(label).ok(),
            series: observer.lane(label),
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client got the whole answer: a relayed response, or an error the gateway chose to
    /// send (the ledger's `code` says which).
    Answered,
    ClientGone,
    Operator,
    Deadline,
    UpstreamBroke,
    /// The handler panicked: a bug in Laneway, answered with 500 `internal_error`.
    Panicked,
}

impl From<crate::table::Stop> for End {
    fn from(s: crate::table::Stop) -> Self {
        match s {
            crate::table::Stop::Operator => Self::Operator,
            crate::table::Stop::Deadline => Self::Deadline,
        }
    }
}

impl End {
    /// How a request refused with `e` ends: an operator's stop and a passed deadline are
    /// counted as cancellations, everything else as an answer.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::Api(a) if a.code == ErrorCode::RequestCancelled => Self::Operator,
            Error::Api(a) if a.code == ErrorCode::DeadlineExceeded => Self::Deadline,
            _ => Self::Answered,
        }
    }

    /// The error a response cut short by this end tells the client: the inverse of [`End::of`].
    pub fn error(self) -> ApiError {
        match self {
            Self::Operator => ApiError::new(
                ErrorCode::RequestCancelled,
                "an operator stopped this request",
            ),
            Self::Deadline => ApiError::new(
                ErrorCode::DeadlineExceeded,
                "the request's deadline passed mid-response",
            ),
            _ => ApiError::new(
                ErrorCode::UpstreamUnreachable,
                "the upstream connection broke mid-response",
            ),
        }
    }
}

/// How one request is accounted for: its record (the facts, shared with the table) and what
/// only its end needs (the lane that served it, the waits, the status and code).
pub struct Ledger {
    engine: Arc<Engine>,
    pub entry: Arc<Entry>,
    /// The lane that served it, once one did.
    pub lane: Option<Arc<LaneRecord>>,
    pub queue_wait: Option<Duration>,
    pub upstream_start: Option<Instant>,
    pub status: u16,
    pub code: Code,
    closed: bool,
}

fn dash() -> Label {
    static DASH: std::sync::OnceLock<Label> = std::sync::OnceLock::new();
    DASH.get_or_init(|| Arc::new("-".to_owned())).clone()
}

impl Ledger {
    /// The engine the request runs in.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The ledger of a request that has just arrived (`batch` for a Batch API item).
    pub fn new(engine: Arc<Engine>, ctx: &RequestCtx, batch: bool) -> Self {
        Self {
            engine,
            entry: Entry::new(ctx, batch),
            lane: None,
            queue_wait: None,
            upstream_start: None,
            status: 0,
            code: Cow::Borrowed(""),
            closed: false,
        }
    }

    /// The request's id.
    pub fn id(&self) -> &Arc<str> {
        &self.entry.id
    }

    /// Records the end of the request.
    pub fn close(&mut self, end: End, usage: Option<Usage>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let lane = self.lane.as_ref().map_or_else(dash, |l| l.label.clone());
        let code: Code = match end {
            End::Answered => self.code.clone(),
            End::ClientGone => Cow::Borrowed("client_disconnect"),
            End::Operator => Cow::Borrowed("request_cancelled"),
            End::Deadline => Cow::Borrowed("deadline_exceeded"),
            End::UpstreamBroke => Cow::Borrowed("upstream_broke"),
            End::Panicked => Cow::Borrowed("internal_error"),
        };
        let cancelled = match end {
            End::ClientGone => Some("client_disconnect"),
            End::Operator => Some("operator"),
            End::Deadline => Some("deadline"),
            _ => None,
        };
        let e = &self.entry;
        let key = e.key();
        self.engine.observer().finished(&Finished {
            lane: &lane,
            key: &key,
            model: &e.model_label(),
            code: &code,
            batch: e.batch,
            cancelled,
        });
        let upstream = self.upstream_start.map(|s| s.elapsed());
        if let (Some(d), Some(l)) = (upstream, &self.lane) {
            l.series.upstream(d);
        }
        if let (Some(u), Some(l)) = (usage, &self.lane) {
            l.series.tokens(u.prompt_tokens, u.completion_tokens);
        }
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
        tracing::info!(
            target: "laneway::request",
            id = %e.id,
            client_request_id = e.client_id.as_deref().unwrap_or(""),
            key = %key,
            model = %e.model(),
            lane = %lane,
            status = self.status,
            code = %code,
            queue_ms = ms(self.queue_wait),
            upstream_ms = ms(upstream),
            total_ms = e.created.elapsed().as_millis() as u64,
            attempts = e.attempt.load(std::sync::atomic::Ordering::Relaxed),
            batch = e.batch,
            prompt_tokens = usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens = usage.map_or(0, |u| u.completion_tokens),
            "request finished"
        );
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if !self.closed {
            if std::thread::panicking() {
                self.status = 500;
                self.close(End::Panicked, None);
            } else {
                self.close(End::ClientGone, None);
            }
        }
    }
}
