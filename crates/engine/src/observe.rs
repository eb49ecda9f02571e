//! What the engine tells the outside about the requests it runs, without knowing who listens:
//! the server counts it in Prometheus metrics, the library ignores it. The engine holds no
//! metrics registry; these calls are its only way out.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::label::{Code, Label};

/// How one request ended, as counted.
pub struct Finished<'a> {
    pub lane: &'a Label,
    pub key: &'a Label,
    pub model: &'a Label,
    pub code: &'a Code,
    /// A Batch API item, counted apart from interactive requests.
    pub batch: bool,
    /// Why it was cut short: `client_disconnect`, `operator` or `deadline`.
    pub cancelled: Option<&'static str>,
}

/// Listens to the engine. Every method has an empty default, so a listener names only what it
/// counts.
pub trait Observe: Send + Sync {
    /// The listener for one lane, made once per lane (on its first request).
    fn lane(&self, _lane: &Label) -> Arc<dyn ObserveLane> {
        Arc::new(Quiet)
    }
    /// A retry of a request on `lane`, for `reason` (`connect`, `status_503`, …).
    fn retry(&self, _lane: &Label, _reason: Cow<'static, str>) {}
    /// The upstream of `lane` answered 429.
    fn upstream_429(&self, _lane: &Label) {}
    /// A request refused with `code`, by Laneway or by the framework in front of it.
    fn rejected(&self, _code: &'static str) {}
    /// A request ended.
    fn finished(&self, _f: &Finished<'_>) {}
    /// A Batch API batch reached an end (`completed`, `failed`, `expired`, `cancelled`).
    fn batch_ended(&self, _status: &'static str) {}
}

/// Listens to one lane's requests.
pub trait ObserveLane: Send + Sync {
    /// How long a request waited for its slot.
    fn queue_wait(&self, _d: Duration) {}
    /// How long the upstream took, first byte to end.
    fn upstream(&self, _d: Duration) {}
    /// Tokens an answer used.
    fn tokens(&self, _prompt: u64, _completion: u64) {}
}

/// Listens to nothing: the library's engine.
pub struct Quiet;

impl Observe for Quiet {}
impl ObserveLane for Quiet {}
