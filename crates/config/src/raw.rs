//! The raw layer: the TOML file as written, with `deny_unknown_fields` everywhere so a typo is an
//! error naming the key. Strings go through [`EnvString`], which replaces `${NAME}` while the file
//! is read, so a missing variable is reported with the key path and line like any other mistake.
//! Nothing here is trusted yet; [`crate::validate`] turns it into [`crate::Config`].

use serde::{Deserialize, Deserializer};

use crate::env;
use crate::model::{Api, Auth, LaneKind, LogFormat, OnLimit};

/// A string with `${NAME}` already replaced by the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        env::substitute(&raw)
            .map(EnvString)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of sections like [server], [[lane]], [[route]] and [[key]]"
)]
pub struct RawConfig {
    pub server: Option<toml::Spanned<RawServer>>,
    #[serde(default)]
    pub lane: Vec<toml::Spanned<RawLane>>,
    #[serde(default)]
    pub route: Vec<toml::Spanned<RawRoute>>,
    #[serde(default)]
    pub key: Vec<toml::Spanned<RawKey>>,
    pub retry: Option<toml::Spanned<RawRetry>>,
    pub limits: Option<toml::Spanned<RawLimitsStore>>,
    pub storage: Option<toml::Spanned<RawStorage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like [server] listen = "127.0.0.1:8400""#
)]
pub struct RawServer {
    pub listen: Option<EnvString>,
    pub admin_key: Option<EnvString>,
    pub request_timeout: Option<EnvString>,
    pub shutdown_grace: Option<EnvString>,
    pub max_body: Option<RawSize>,
    pub log_format: Option<LogFormat>,
    pub header_timeout: Option<EnvString>,
    pub body_timeout: Option<EnvString>,
    pub idle_timeout: Option<EnvString>,
    pub max_connections: Option<u64>,
    pub max_model_labels: Option<u64>,
    pub metrics_key: Option<EnvString>,
    pub auth: Option<Auth>,
}

/// `max_body = 1048576` or `max_body = "32MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(EnvString),
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { max_concurrent_requests = 8 }"
)]
pub struct RawConcurrency {
    pub max_concurrent_requests: u32,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { requests_per_second = 5, burst_size = 10 }"
)]
pub struct RawRate {
    pub requests_per_second: f64,
    pub burst_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like { max_len = 1000, timeout = "60s" }"#
)]
pub struct RawQueue {
    pub max_len: Option<u64>,
    pub timeout: Option<EnvString>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a lane, written [[lane]] with name and url"
)]
pub struct RawLane {
    pub name: EnvString,
    pub url: Option<EnvString>,
    pub api_key: Option<EnvString>,
    pub model: Option<EnvString>,
    pub models: Option<Vec<EnvString>>,
    pub kind: Option<LaneKind>,
    pub api: Option<Api>,
    pub concurrency_limit: Option<RawConcurrency>,
    pub rate_limit: Option<RawRate>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub queue: Option<RawQueue>,
    pub adaptive: Option<bool>,
    pub on_limit: Option<OnLimit>,
    pub connect_timeout: Option<EnvString>,
    pub first_byte_timeout: Option<EnvString>,
    pub default_max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route, written [[route]] with model and lanes"
)]
pub struct RawRoute {
    pub model: EnvString,
    pub lanes: Vec<EnvString>,
    #[serde(default)]
    pub fallbacks: Vec<EnvString>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a key, written [[key]] with name and key"
)]
pub struct RawKey {
    pub name: EnvString,
    pub key: EnvString,
    pub models: Option<Vec<EnvString>>,
    pub concurrency_limit: Option<RawConcurrency>,
    pub rate_limit: Option<RawRate>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub priority: Option<i32>,
    pub weight: Option<u32>,
    pub on_limit: Option<OnLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like [retry] max_attempts = 3"
)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub budget: Option<RawBudget>,
    pub backoff: Option<RawBackoff>,
    pub max_pause: Option<EnvString>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { ratio = 0.2, min_per_second = 10 }"
)]
pub struct RawBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like { base = "200ms", max = "30s" }"#
)]
pub struct RawBackoff {
    pub base: Option<EnvString>,
    pub max: Option<EnvString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like [limits] store = "redis://127.0.0.1:6379/0""#
)]
pub struct RawLimitsStore {
    pub store: Option<EnvString>,
    pub on_store_error: Option<EnvString>,
    pub prefix: Option<EnvString>,
    pub timeout: Option<EnvString>,
    pub lease: Option<EnvString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = r#"a table like [storage] path = "laneway-data""#
)]
pub struct RawStorage {
    pub path: Option<EnvString>,
    pub max_file_size: Option<RawSize>,
    pub batch_concurrency: Option<u64>,
    pub url: Option<EnvString>,
    pub lease: Option<EnvString>,
}
