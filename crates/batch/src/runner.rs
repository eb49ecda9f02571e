//! The runner: requests in, one [`Item`] per request out, with bounded or adaptive concurrency,
//! a per-item timeout, progress, fail-fast, and the run's token usage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use laneway_upstream::{Endpoints, UpstreamClient, UpstreamError};
use tokio::time::Instant;

use crate::gate::{Concurrency, Gate};
use crate::item::{Item, Request, Usage};
use crate::send::{Sender, Target};

/// Where a run stands; handed to the progress callback after every item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// Tokens reported so far by the items that finished.
    pub usage: Usage,
}

/// A finished run: every item in input order (in fail-fast mode, those that finished before the
/// first error, and that error), and the tokens all of them used.
#[derive(Debug, Clone)]
pub struct Report {
    pub items: Vec<Item>,
    pub usage: Usage,
    pub failed: usize,
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Runs many requests against one OpenAI-compatible target.
#[derive(Clone)]
pub struct Runner {
    sender: Sender,
    concurrency: Concurrency,
    timeout: Duration,
    fail_fast: bool,
    on_progress: Option<ProgressFn>,
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    prompt: AtomicU64,
    completion: AtomicU64,
}

impl Runner {
    /// A runner for an OpenAI-compatible base URL (a Laneway gateway, a provider, a local
    /// server), like `http://127.0.0.1:8400/v1`, with an optional Bearer key. A base URL that
    /// does not parse fails each item with the reason; [`Runner::try_new`] refuses it instead.
    pub fn new(base_url: &str, api_key: Option<&str>) -> Self {
        Self {
            sender: Sender {
                target: Target::Url {
                    client: Box::new(UpstreamClient::new(Duration::from_secs(10))),
                    endpoints: Endpoints::new(&base_with_path(base_url), api_key).map(Arc::new),
                },
                api_key: api_key.map(str::to_owned),
                attempts: 3,
            },
            concurrency: Concurrency::Fixed(8),
            timeout: Duration::from_secs(600),
            fail_fast: false,
            on_progress: None,
        }
    }

    /// Like [`Runner::new`], but a base URL that does not parse is refused here, with the
    /// reason, instead of failing every item of a run.
    ///
    /// ```
    /// let err = laneway_batch::Runner::try_new("localhost:8400", None).err().unwrap();
    /// assert!(err.to_string().contains("localhost:8400"), "{err}");
    /// assert!(laneway_batch::Runner::try_new("http://127.0.0.1:8400/v1", None).is_ok());
    /// ```
    pub fn try_new(base_url: &str, api_key: Option<&str>) -> Result<Self, UpstreamError> {
        let runner = Self::new(base_url, api_key);
        if let Target::Url {
            endpoints: Err(e), ..
        } = &runner.sender.target
        {
            return Err(e.clone());
        }
        Ok(runner)
    }

    /// A runner whose requests go through the lanes of `config` in this process, without a
    /// socket: lane and key limits, queues, retries and adaptive limits apply as in the gateway.
    /// `api_key` is one of the config's `[[key]]`s when it has any. Lanes of `kind = "mock"`
    /// are refused here (the `laneway` binary starts them); run `laneway mock` and give its URL.
    pub async fn with_lanes(
        config: laneway_config::Config,
        api_key: Option<&str>,
    ) -> std::io::Result<Self> {
        Self::with_engine_parts(config, api_key, laneway_engine::Parts::default()).await
    }

    /// [`Runner::with_lanes`] with an engine built from `parts`: its listener, and what starts
    /// `kind = "mock"` lanes (the `laneway` binary supplies one).
    pub async fn with_engine_parts(
        config: laneway_config::Config,
        api_key: Option<&str>,
        mut parts: laneway_engine::Parts,
    ) -> std::io::Result<Self> {
        if parts.limits.is_none() {
            // Limits shared with gateways and other programs through the config's store.
            parts.limits = laneway_store::from_config(&config.limits)?
                .map(|s| Arc::new(s) as Arc<dyn laneway_admission::shared::SharedLimits>);
        }
        let app = laneway_engine::Engine::new(config, parts).await?;
        let mut r = Self::new("http://in-process.invalid/v1", api_key);
        r.sender.target = Target::Lanes(app);
        Ok(r)
    }

    /// How many items run at once (default 8).
    pub fn concurrency(mut self, c: Concurrency) -> Self {
        self.concurrency = c;
        self
    }

    /// The longest one item may take, retries included (default 10 minutes).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Attempts per item on 429, 5xx and broken connections (default 3; 1 never retries). Through
    /// lanes in this process the engine retries instead, by the config's `[retry]` and under
    /// its retry budget; the runner then only waits out Laneway's "not yet" refusals (a full
    /// queue, a key's rate), which are not attempts.
    pub fn attempts(mut self, n: u32) -> Self {
        self.sender.attempts = n.max(1);
        self
    }

    /// End the run at the first failed item: nothing more starts and what runs is aborted.
    pub fn fail_fast(mut self, on: bool) -> Self {
        self.fail_fast = on;
        self
    }

    /// Called after every finished item with where the run stands.
    pub fn on_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(f));
        self
    }

    /// Runs `requests` and yields each item as it finishes, with its input index. Dropping the
    /// stream aborts every item still running. In fail-fast mode the stream ends after the
    /// first failed item.
    pub fn stream(&self, requests: Vec<Request>) -> impl Stream<Item = Item> + Send + '_ {
        let total = requests.len();
        let counters = Arc::new(Counters::default());
        // Through lanes the engine's adaptive limits decide what runs upstream; the runner only
        // keeps up to `max` items waiting in the lanes' fair queues, with no second controller.
        let concurrency = match (&self.sender.target, self.concurrency) {
            (Target::Lanes(_), Concurrency::Adaptive { max }) => Concurrency::Fixed(max),
            (_, c) => c,
        };
        let gate = Arc::new(Gate::new(concurrency));
        let fail_fast = self.fail_fast;
        let items = futures_util::stream::iter(requests.into_iter().enumerate())
            .map(move |(index, req)| {
                let (counters, gate) = (counters.clone(), gate.clone());
                async move { self.one(index, req, total, &counters, &gate).await }
            })
            .buffer_unordered(self.concurrency.ceiling());
        // Ends right after the first failure in fail-fast mode, without waiting for the items
        // still running: they are aborted when the stream is dropped.
        futures_util::stream::unfold(
            (Box::pin(items), false),
            move |(mut items, ended)| async move {
                if ended {
                    return None;
                }
                let item = items.next().await?;
                let ended = fail_fast && item.result.is_err();
                Some((item, (items, ended)))
            },
        )
    }

    /// Runs `requests` and returns every item in input order, with the run's usage.
    pub async fn run(&self, requests: Vec<Request>) -> Report {
        let total = requests.len();
        let slots: Mutex<Vec<Option<Item>>> = Mutex::new((0..total).map(|_| None).collect());
        let mut usage = Usage::default();
        let mut failed = 0;
        {
            let stream = self.stream(requests);
            futures_util::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match &item.result {
                    Ok(r) => usage.add(r.usage.unwrap_or_default()),
                    Err(_) => failed += 1,
                }
                let index = item.index;
                if let Some(slot) = slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(index)
                {
                    *slot = Some(item);
                }
            }
        }
        let items = slots
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .flatten()
            .collect();
        Report {
            items,
            usage,
            failed,
        }
    }

    async fn one(
        &self,
        index: usize,
        req: Request,
        total: usize,
        c: &Counters,
        gate: &Gate,
    ) -> Item {
        let _pass = gate.enter().await;
        c.started.fetch_add(1, Ordering::Relaxed);
        let id = laneway_core::id::new_id("item");
        let deadline = Instant::now() + self.timeout;
        let mut result = self
            .sender
            .send(&req, &id, deadline, &mut |s| gate.learn(s))
            .await;
        if let Err(e) = &mut result {
            e.request_id.get_or_insert(id);
        }
        match &result {
            Ok(r) => {
                let u = r.usage.unwrap_or_default();
                c.prompt.fetch_add(u.prompt_tokens, Ordering::Relaxed);
                c.completion
                    .fetch_add(u.completion_tokens, Ordering::Relaxed);
            }
            Err(_) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let done = c.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(f) = &self.on_progress {
            let started = c.started.load(Ordering::Relaxed);
            f(Progress {
                total,
                done,
                failed: c.failed.load(Ordering::Relaxed),
                in_flight: started.saturating_sub(done),
                queued: total.saturating_sub(started),
                usage: Usage {
                    prompt_tokens: c.prompt.load(Ordering::Relaxed),
                    completion_tokens: c.completion.load(Ordering::Relaxed),
                },
            });
        }
        Item { index, result }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_future_stays_small() {
        // Every item's future is moved into its task when the run starts the item: a future that
        // holds its attempt inline is 5 KB (10 KB in a release build), copied once per item.
        let runner = Runner::new("http://127.0.0.1:9/v1", None);
        let (counters, gate) = (Counters::default(), Gate::new(Concurrency::Fixed(1)));
        let request = Request::chat(serde_json::json!({"model": "m"}));
        let item = runner.one(0, request, 1, &counters, &gate);
        let size = std::mem::size_of_val(&item);
        assert!(size < 2048, "an item's future takes {size} bytes");
    }
}

/// A base URL with no path at all (`http://127.0.0.1:8400`, a gateway's root) means its `/v1`,
/// as `laneway batch --url` takes it; any other path (`/v1`, a provider's `/api/paas/v4`) is kept.
fn base_with_path(base_url: &str) -> String {
    let trimmed = base_url.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.is_empty() || after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1")
    }
}

#[cfg(test)]
mod base_tests {
    #[test]
    fn a_root_url_means_its_v1_and_other_paths_are_kept() {
        for (given, used) in [
            ("http://127.0.0.1:8400", "http://127.0.0.1:8400/v1"),
            ("http://127.0.0.1:8400/", "http://127.0.0.1:8400/v1"),
            ("http://127.0.0.1:8400/v1", "http://127.0.0.1:8400/v1"),
            (
                "https://open.example.cn/api/paas/v4/",
                "https://open.example.cn/api/paas/v4",
            ),
        ] {
            assert_eq!(super::base_with_path(given), used);
        }
    }
}

/// A config's lanes for a long-lived handle (the Python and Node packages' `Lanes`): the
/// private gateway starts on the first run and every later run shares it, with its limits,
/// queues and counters.
#[derive(Clone)]
pub struct LazyLanes {
    config: Arc<laneway_config::Config>,
    api_key: Option<String>,
    runner: Arc<tokio::sync::OnceCell<Runner>>,
}

impl LazyLanes {
    pub fn new(config: laneway_config::Config, api_key: Option<String>) -> Self {
        Self {
            config: Arc::new(config),
            api_key,
            runner: Arc::default(),
        }
    }

    /// The runner over the lanes, started on first use.
    pub async fn runner(&self) -> std::io::Result<Runner> {
        self.runner
            .get_or_try_init(|| {
                Runner::with_lanes(
                    laneway_config::Config::clone(&self.config),
                    self.api_key.as_deref(),
                )
            })
            .await
            .cloned()
    }
}
