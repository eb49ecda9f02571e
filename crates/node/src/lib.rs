//! The `laneway` Node package's native addon: the parallel-completions library behind a stream
//! of items, nothing more. Requests and items cross as JSON text (the JavaScript side parses
//! them once); requests run on Tokio threads, never on the JS thread; closing the stream (an
//! `AbortSignal`, a fail-fast error, a `break` out of the loop) drops the run, which aborts
//! every request still queued or running.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use laneway_batch::json::{item_json, parse_requests};
use laneway_batch::{Concurrency, LazyLanes, Progress, Runner};
use napi::bindgen_prelude::{spawn, Error, Result};
use napi::threadsafe_function::{ErrorStrategy, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::sync::{mpsc, Mutex};

/// Most requests in flight at once: more is a mistake, not a bound.
const MOST: u32 = 1 << 20;

/// Most items handed to JavaScript in one `next()`.
const BATCH: usize = 1024;

fn invalid(message: impl Into<String>) -> Error {
    Error::new(napi::Status::InvalidArg, message.into())
}

/// Lanes from a Laneway config, run in this process: their lane and key limits, queues and
/// retries apply. The private gateway starts on first use and lives as long as this object.
#[napi]
pub struct NativeLanes(LazyLanes);

#[napi]
impl NativeLanes {
    /// From a config file (TOML, or an Onwards JSON) or, with `is_text`, from config text.
    #[napi(constructor)]
    pub fn new(config: String, is_text: bool, api_key: Option<String>) -> Result<Self> {
        let parsed = if is_text {
            laneway_config::Config::parse(&config)
        } else {
            laneway_config::Config::load(config.as_ref())
        };
        let config = parsed.map_err(|e| invalid(e.to_string()))?;
        Ok(Self(LazyLanes::new(config, api_key)))
    }
}

/// What a run is told, as the JavaScript side checked it.
#[napi(object)]
pub struct RunOptions {
    pub concurrency: u32,
    pub adaptive: bool,
    /// Milliseconds each item may take, retries included.
    pub timeout_ms: Option<f64>,
    pub fail_fast: bool,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
}

/// Where a run counts: `[done, failed, inFlight, queued, total, promptTokens, completionTokens]`.
type ProgressFn = ThreadsafeFunction<Vec<f64>, ErrorStrategy::Fatal>;

/// Items as they finish; `next()` resolves to a JSON list of the items finished since the last
/// call (at least one), or to `null` at the end.
#[napi]
pub struct ItemStream {
    rx: Arc<Mutex<mpsc::Receiver<String>>>,
    task: tokio::task::AbortHandle,
}

#[napi]
impl ItemStream {
    /// Every item ready, up to [`BATCH`], in one crossing: a promise per item would cost the
    /// JS thread more than the requests themselves.
    #[napi]
    pub async fn next(&self) -> Option<String> {
        let mut rx = self.rx.lock().await;
        let first = rx.recv().await?;
        let mut out = String::with_capacity(first.len() * 4 + 2);
        out.push('[');
        out.push_str(&first);
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    out.push(',');
                    out.push_str(&more);
                }
                Err(_) => break,
            }
        }
        out.push(']');
        Some(out)
    }

    /// Stops the run: what is queued never starts, what runs is aborted.
    #[napi]
    pub fn close(&self) {
        self.task.abort();
    }
}

impl Drop for ItemStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Refuses options that cannot work, before anything is sent.
fn check(o: &RunOptions) -> Result<()> {
    if o.concurrency == 0 || o.concurrency > MOST {
        return Err(invalid(format!(
            "concurrency must be from 1 to {MOST}, not {}",
            o.concurrency
        )));
    }
    match o.timeout_ms {
        Some(ms) if !(ms.is_finite() && ms > 0.0) => Err(invalid(format!(
            "timeout must be a positive number of milliseconds, not {ms}"
        ))),
        _ => Ok(()),
    }
}

/// The runner with the run's options; they were [`check`]ed.
fn runner_options(o: &RunOptions, runner: Runner, progress: Option<ProgressFn>) -> Runner {
    let n = o.concurrency as usize;
    let concurrency = if o.adaptive {
        Concurrency::Adaptive { max: n }
    } else {
        Concurrency::Fixed(n)
    };
    let mut r = runner.concurrency(concurrency).fail_fast(o.fail_fast);
    if let Some(ms) = o.timeout_ms {
        r = r.timeout(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    if let Some(f) = progress {
        r = r.on_progress(move |p: Progress| {
            let counts = [p.done, p.failed, p.in_flight, p.queued, p.total];
            let mut v: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
            v.push(p.usage.prompt_tokens as f64);
            v.push(p.usage.completion_tokens as f64);
            f.call(v, ThreadsafeFunctionCallMode::NonBlocking);
        });
    }
    r
}

/// Starts a run of `requests` (a JSON list of request bodies) and returns its items as they
/// finish. Arguments that cannot work are refused here, before anything is sent.
#[napi]
pub fn stream(
    requests: String,
    options: RunOptions,
    lanes: Option<&NativeLanes>,
    on_progress: Option<ProgressFn>,
) -> Result<ItemStream> {
    let requests = parse_requests(&requests).map_err(invalid)?;
    let target = match lanes {
        Some(l) => Target::Lanes(l.0.clone()),
        None => {
            let base = options.base_url.as_deref().ok_or_else(|| {
                invalid("give baseURL (a gateway's or provider's URL) or lanes (a laneway.Lanes)")
            })?;
            let runner = Runner::try_new(base, options.api_key.as_deref())
                .map_err(|e| invalid(format!("baseURL: {e}")))?;
            Target::Url(Box::new(runner))
        }
    };
    check(&options)?;
    let (tx, rx) = mpsc::channel(256);
    let task = spawn(async move {
        let runner = match target.runner().await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(serde_json::json!({"fatal": e}).to_string()).await;
                return;
            }
        };
        let runner = runner_options(&options, runner, on_progress);
        let items = runner.stream(requests);
        futures_util::pin_mut!(items);
        while let Some(item) = items.next().await {
            if tx.send(item_json(&item)).await.is_err() {
                break;
            }
        }
    });
    Ok(ItemStream {
        rx: Arc::new(Mutex::new(rx)),
        task: task.abort_handle(),
    })
}

/// Where a run sends its requests.
enum Target {
    Url(Box<Runner>),
    Lanes(LazyLanes),
}

impl Target {
    async fn runner(self) -> std::result::Result<Runner, String> {
        match self {
            Self::Url(r) => Ok(*r),
            Self::Lanes(lanes) => lanes
                .runner()
                .await
                .map_err(|e| format!("cannot start the lanes: {e}")),
        }
    }
}
