//! The `laneway` Python package's native module: conversion between Python and the
//! parallel-completions library, nothing more. Requests and results cross as JSON text (the
//! Python side turns them into dicts); requests run on Tokio without the GIL; cancelling the
//! asyncio task drops the Rust future, which aborts what is in flight.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use laneway_batch::json::{item_json, parse_requests};
use laneway_batch::{Concurrency, Item, LazyLanes, Progress, Request, Runner};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::{mpsc, Mutex};

/// Lanes from a Laneway config, run in this process: their limits, queues and retries apply.
/// The private gateway starts on first use and lives as long as this object.
#[pyclass(module = "laneway._laneway")]
struct Lanes(LazyLanes);

#[pymethods]
impl Lanes {
    #[new]
    #[pyo3(signature = (config, api_key = None))]
    fn new(config: &str, api_key: Option<String>) -> PyResult<Self> {
        let config = laneway_config::Config::load(config.as_ref())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self(LazyLanes::new(config, api_key)))
    }
}

/// Where a run sends its requests.
enum Target {
    Url(Runner),
    Lanes(LazyLanes),
}

impl Target {
    async fn runner(self) -> PyResult<Runner> {
        match self {
            Self::Url(r) => Ok(r),
            Self::Lanes(lanes) => lanes
                .runner()
                .await
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start the lanes: {e}"))),
        }
    }
}

/// The options every call takes, as the Python side passes them.
struct Options {
    concurrency: Concurrency,
    timeout: Option<Duration>,
    fail_fast: bool,
    on_progress: Option<PyObject>,
}

impl Options {
    fn apply(self, runner: Runner) -> Runner {
        let mut r = runner
            .concurrency(self.concurrency)
            .fail_fast(self.fail_fast);
        if let Some(t) = self.timeout {
            r = r.timeout(t);
        }
        if let Some(cb) = self.on_progress {
            r = r.on_progress(move |p: Progress| {
                Python::with_gil(|py| {
                    let args = (
                        p.done,
                        p.failed,
                        p.in_flight,
                        p.queued,
                        p.total,
                        p.usage.prompt_tokens,
                        p.usage.completion_tokens,
                    );
                    if let Err(e) = cb.call1(py, args) {
                        e.print(py);
                    }
                });
            });
        }
        r
    }
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    requests: &str,
    concurrency: usize,
    adaptive: bool,
    timeout: Option<f64>,
    fail_fast: bool,
    base_url: Option<String>,
    api_key: Option<String>,
    lanes: Option<PyRef<'_, Lanes>>,
    on_progress: Option<PyObject>,
) -> PyResult<(Vec<Request>, Target, Options)> {
    let requests = parse_requests(requests).map_err(PyValueError::new_err)?;
    let timeout = match timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t.min(86_400.0))),
        Some(t) => {
            return Err(PyValueError::new_err(format!(
                "timeout must be a positive number of seconds, not {t}"
            )))
        }
        None => None,
    };
    if concurrency == 0 {
        return Err(PyValueError::new_err("concurrency must be at least 1"));
    }
    let concurrency = if adaptive {
        Concurrency::Adaptive { max: concurrency }
    } else {
        Concurrency::Fixed(concurrency)
    };
    let target = match lanes {
        Some(l) => Target::Lanes(l.0.clone()),
        None => {
            let base = base_url.ok_or_else(|| {
                PyValueError::new_err(
                    "give base_url (a gateway's or provider's URL, like \"http://127.0.0.1:8400/v1\") \
                     or lanes=laneway.Lanes(config=...) to run the config's lanes in this process",
                )
            })?;
            let runner = Runner::try_new(&base, api_key.as_deref())
                .map_err(|e| PyValueError::new_err(format!("base_url: {e}")))?;
            Target::Url(runner)
        }
    };
    let options = Options {
        concurrency,
        timeout,
        fail_fast,
        on_progress,
    };
    Ok((requests, target, options))
}

/// Runs every request; resolves to the JSON list of items in input order.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (requests, concurrency, adaptive, timeout, fail_fast, base_url, api_key, lanes, on_progress))]
fn run<'py>(
    py: Python<'py>,
    requests: &str,
    concurrency: usize,
    adaptive: bool,
    timeout: Option<f64>,
    fail_fast: bool,
    base_url: Option<String>,
    api_key: Option<String>,
    lanes: Option<PyRef<'py, Lanes>>,
    on_progress: Option<PyObject>,
) -> PyResult<Bound<'py, PyAny>> {
    let (requests, target, options) = prepare(
        requests,
        concurrency,
        adaptive,
        timeout,
        fail_fast,
        base_url,
        api_key,
        lanes,
        on_progress,
    )?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let runner = options.apply(target.runner().await?);
        let report = runner.run(requests).await;
        let items: Vec<String> = report.items.iter().map(item_json).collect();
        Ok(format!("[{}]", items.join(",")))
    })
}

/// Items as they finish, one JSON object each; `next()` resolves to `None` at the end.
#[pyclass(module = "laneway._laneway")]
struct ItemStream {
    rx: Arc<Mutex<mpsc::Receiver<String>>>,
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl ItemStream {
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(rx.lock().await.recv().await) },
        )
    }

    /// Stops the run: what is queued never starts, what runs is aborted.
    fn close(&self) {
        self.task.abort();
    }
}

impl Drop for ItemStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (requests, concurrency, adaptive, timeout, fail_fast, base_url, api_key, lanes, on_progress))]
fn stream(
    requests: &str,
    concurrency: usize,
    adaptive: bool,
    timeout: Option<f64>,
    fail_fast: bool,
    base_url: Option<String>,
    api_key: Option<String>,
    lanes: Option<PyRef<'_, Lanes>>,
    on_progress: Option<PyObject>,
) -> PyResult<ItemStream> {
    let (requests, target, options) = prepare(
        requests,
        concurrency,
        adaptive,
        timeout,
        fail_fast,
        base_url,
        api_key,
        lanes,
        on_progress,
    )?;
    let (tx, rx) = mpsc::channel(64);
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
    let task = runtime.spawn(async move {
        let runner = match target.runner().await {
            Ok(r) => options.apply(r),
            Err(e) => {
                let _ = tx
                    .send(serde_json::json!({"fatal": e.to_string()}).to_string())
                    .await;
                return;
            }
        };
        let items = runner.stream(requests);
        futures_util::pin_mut!(items);
        while let Some(item) = items.next().await {
            let item: Item = item;
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

#[pymodule]
fn _laneway(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lanes>()?;
    m.add_class::<ItemStream>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(stream, m)?)?;
    Ok(())
}
