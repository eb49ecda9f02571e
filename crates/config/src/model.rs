//! The validated configuration. Every value here has been checked once at load: names are unique,
//! references resolved to indices, durations parsed, limits non-zero. Code downstream never
//! re-validates.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use laneway_core::Secret;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub lanes: Vec<LaneConfig>,
    pub routes: Vec<RouteConfig>,
    pub keys: Vec<KeyConfig>,
    pub retry: RetryConfig,
    pub limits: LimitStoreConfig,
    pub storage: StorageConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; the admin API is off without it.
    pub admin_key: Option<Secret<String>>,
    /// End-to-end deadline per request: queue wait plus every upstream attempt.
    pub request_timeout: Duration,
    /// How long running requests may take to finish after SIGTERM before the process exits.
    pub shutdown_grace: Duration,
    /// Largest request body accepted, in bytes; larger ones get 413 `payload_too_large`.
    pub max_body: usize,
    pub log_format: LogFormat,
    /// A client must send a request's headers within this (from the first byte, or from the
    /// connection's opening for its first request).
    pub header_timeout: Duration,
    /// A client must send a request's body within this.
    pub body_timeout: Duration,
    /// Keep-alive connections idle longer are closed.
    pub idle_timeout: Duration,
    /// Open client connections at most; when full, the oldest idle one is closed, else new ones
    /// are refused with 503. Also capped by the process's file-descriptor limit.
    pub max_connections: usize,
    /// Distinct requested models each route adds to the `model` label of the metrics and the
    /// request log; beyond them a route's models are counted as `other`.
    pub max_model_labels: usize,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_key: Option<Secret<String>>,
    pub auth: Auth,
}

/// Whether clients need a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Clients need one of the `[[key]]`s; with none configured the gateway is open (the demo).
    #[default]
    Keys,
    /// Declared open: no key is needed even if keys are listed, and a reload may drop every key.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneKind {
    /// A hosted, OpenAI-compatible API.
    OpenAi,
    /// A local server (llama.cpp, KoboldCpp, …) that runs one request at a time.
    Local,
    /// The in-process mock upstream, started by the gateway itself.
    Mock,
}

impl LaneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Local => "local",
            Self::Mock => "mock",
        }
    }
}

/// The API a lane's upstream speaks: which header carries its key, and which requests it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI's (and every OpenAI-compatible server's): `Authorization: Bearer KEY`.
    #[default]
    OpenAi,
    /// Anthropic's Messages API: `x-api-key: KEY` and an `anthropic-version`.
    Anthropic,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// What happens to a request that finds a limit exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Refuse at once with 429 and an honest Retry-After.
    Reject,
    /// Wait for capacity, up to the lane's queue timeout and the request's deadline.
    Queue,
}

/// Requests per second with a burst, as a GCRA: `burst` requests may go at once, then one every
/// `1 / per_second` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: NonZeroU32,
}

/// The four limits a lane or a key can carry. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub max_concurrent: Option<NonZeroU32>,
    pub rate: Option<Rate>,
    pub rpm: Option<NonZeroU32>,
    pub tpm: Option<NonZeroU64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Waiting requests beyond which new ones get 429 `queue_full`.
    pub max_len: usize,
    /// Longest wait for a slot before 429 `queue_timeout`.
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_len: 1000,
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LaneConfig {
    pub name: String,
    /// Base URL, e.g. `https://api.deepseek.com/v1`; the endpoint path is appended. For
    /// `kind = "mock"` it is filled in when the in-process mock starts.
    pub url: String,
    pub api_key: Option<Secret<String>>,
    /// Model name sent upstream in place of the client's.
    pub model: Option<String>,
    /// Model ids this lane serves, listed by `/v1/models` (patterns are listed from the
    /// upstream's own `/v1/models`).
    pub models: Vec<String>,
    pub kind: LaneKind,
    pub api: Api,
    pub limits: Limits,
    pub queue: QueueConfig,
    pub adaptive: bool,
    pub on_limit: OnLimit,
    /// Time allowed to open a TCP (and TLS) connection to the upstream.
    pub connect_timeout: Duration,
    /// Time allowed between sending the request and the first byte of the response headers.
    pub first_byte_timeout: Duration,
    /// Completion tokens reserved against `tpm` when a request sets no `max_tokens`.
    pub default_max_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Exact model id or glob (`deepseek-*`).
    pub model: String,
    /// Indices into [`Config::lanes`]: the pool serving this route.
    pub lanes: Vec<usize>,
    /// Model patterns tried, in order, when every lane of this route fails or is unavailable.
    pub fallbacks: Vec<String>,
    /// Where each fallback leads: indices into [`Config::routes`], resolved once at load.
    pub fallback_routes: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub key: Secret<String>,
    /// Allowed model patterns; empty means every model.
    pub models: Vec<String>,
    pub limits: Limits,
    pub priority: i32,
    pub weight: NonZeroU32,
    pub on_limit: OnLimit,
}

impl KeyConfig {
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|p| laneway_core::glob::matches(p, model))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: NonZeroU32,
    /// Retries may add at most this fraction of recent requests…
    pub budget_ratio: f64,
    /// …plus this many retries per second.
    pub budget_min_per_second: f64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest an upstream's Retry-After or rate-limit reset may pause a lane.
    pub max_pause: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::MIN.saturating_add(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            max_pause: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitStore {
    Memory,
    Redis(Secret<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStoreConfig {
    pub store: LimitStore,
    /// `true`: serve and count locally when the store is down; `false`: 503 `store_unavailable`.
    pub fail_open: bool,
    /// Namespace of the store's keys.
    pub prefix: String,
    /// The longest one call to the store may take before it counts as down.
    pub timeout: Duration,
    /// How long a replica's hold on a concurrency slot outlives it: holders renew their leases,
    /// so a replica that dies frees its slots within this time.
    pub lease: Duration,
}

impl LimitStoreConfig {
    /// Whether replicas share their limits through a store.
    pub fn is_shared(&self) -> bool {
        matches!(self.store, LimitStore::Redis(_))
    }

    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
}

impl StorageConfig {
    pub const DEFAULT_BATCH_CONCURRENCY: usize = 32;
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub path: PathBuf,
    /// Largest batch input file, in bytes.
    pub max_file_size: usize,
    /// Batch items in flight at once across every batch (waiting in a lane queue or running);
    /// they count toward the lanes' `queue.max_len`.
    pub batch_concurrency: usize,
    /// `postgres://…`: files, batches and response ids in PostgreSQL, shared by every replica
    /// that names the same database; `None`: SQLite under `path`.
    pub url: Option<String>,
    /// How long a replica holds a batch item it claimed without renewing the claim; a replica
    /// that dies has its items taken over by the others once this has passed.
    pub lease: Duration,
    /// Whether the config has a `[storage]` section. Without one the directory is opened at
    /// start only if it exists, else on the first Batch API call, so a gateway that never sees
    /// a batch leaves no directory behind.
    pub configured: bool,
}
