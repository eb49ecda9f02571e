//! A config built in code, for programs that run lanes in process without a file. The builder
//! writes the TOML a file would hold and [`ConfigBuilder::build`] validates it the same way, so
//! every check and message of `laneway check` applies.
//!
//! ```
//! use laneway_config::builder::{ConfigBuilder, KeyBuilder, LaneBuilder};
//!
//! let config = ConfigBuilder::new()
//!     .lane(LaneBuilder::new("openai-a", "https://api.openai.com/v1")
//!         .api_key("sk-live-…")
//!         .concurrency(8)
//!         .rpm(500))
//!     .lane(LaneBuilder::new("openai-b", "https://api.openai.com/v1").concurrency(8))
//!     .route("gpt-*", &["openai-a", "openai-b"])
//!     .key(KeyBuilder::new("etl", "sk-etl").rpm(300))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.lanes.len(), 2);
//!
//! // A mistake is reported as a config file's would be.
//! let e = ConfigBuilder::new().route("gpt-*", &["nowhere"]).build().unwrap_err();
//! assert!(e.to_string().contains("nowhere"));
//! ```

use toml::{Table, Value};

use crate::{Config, ConfigError};

/// A whole config: lanes, routes, keys, and any other setting by its path.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    root: Table,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, array: &str, t: Table) -> Self {
        let entry = self
            .root
            .entry(array)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(Value::Table(t));
        }
        self
    }

    pub fn lane(self, lane: LaneBuilder) -> Self {
        self.push("lane", lane.0)
    }

    /// Routes models matching `model` (a glob like `gpt-*`) to a pool of lanes.
    pub fn route(self, model: &str, lanes: &[&str]) -> Self {
        let mut t = Table::new();
        t.insert("model".into(), model.into());
        t.insert("lanes".into(), strings(lanes));
        self.push("route", t)
    }

    pub fn key(self, key: KeyBuilder) -> Self {
        self.push("key", key.0)
    }

    /// Any other setting by its dotted path, as in the file: `set("retry.max_attempts", 5)`,
    /// `set("server.request_timeout", "2m")`.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let parts: Vec<&str> = path.split('.').collect();
        set_in(&mut self.root, &parts, value.into());
        self
    }

    /// The TOML this builder stands for.
    pub fn toml(&self) -> String {
        self.root.to_string()
    }

    /// Validates the config as `laneway check` would.
    pub fn build(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.toml())
    }
}

fn set_in(table: &mut Table, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let next = table
                .entry(*first)
                .or_insert_with(|| Value::Table(Table::new()));
            if !next.is_table() {
                *next = Value::Table(Table::new());
            }
            if let Value::Table(t) = next {
                set_in(t, rest, value);
            }
        }
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|&s| s.into()).collect())
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn inline(pairs: &[(&str, Value)]) -> Value {
    Value::Table(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// One `[[lane]]`: an upstream account or endpoint and its limits.
#[derive(Debug, Clone)]
pub struct LaneBuilder(Table);

impl LaneBuilder {
    pub fn new(name: &str, url: &str) -> Self {
        let mut t = Table::new();
        t.insert("name".into(), name.into());
        t.insert("url".into(), url.into());
        Self(t)
    }

    /// A lane served by an in-process mock upstream (no URL needed).
    pub fn mock(name: &str) -> Self {
        let mut t = Table::new();
        t.insert("name".into(), name.into());
        t.insert("kind".into(), "mock".into());
        Self(t)
    }

    fn with(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.into(), v);
        self
    }

    pub fn api_key(self, key: &str) -> Self {
        self.with("api_key", key.into())
    }

    /// Model ids the lane serves, listed by `/v1/models`.
    pub fn models(self, models: &[&str]) -> Self {
        self.with("models", strings(models))
    }

    /// Requests in flight at most.
    pub fn concurrency(self, n: u64) -> Self {
        self.with(
            "concurrency_limit",
            inline(&[("max_concurrent_requests", int(n))]),
        )
    }

    pub fn rps(self, per_second: u64, burst: u64) -> Self {
        self.with(
            "rate_limit",
            inline(&[
                ("requests_per_second", int(per_second)),
                ("burst_size", int(burst)),
            ]),
        )
    }

    pub fn rpm(self, n: u64) -> Self {
        self.with("rpm", int(n))
    }

    pub fn tpm(self, n: u64) -> Self {
        self.with("tpm", int(n))
    }

    /// The lane's waiting room: at most `max_len` requests, each for at most `timeout`
    /// (a duration like `"60s"`).
    pub fn queue(self, max_len: u64, timeout: &str) -> Self {
        self.with(
            "queue",
            inline(&[("max_len", int(max_len)), ("timeout", timeout.into())]),
        )
    }

    /// Learn the upstream's capacity from its refusals and latency.
    pub fn adaptive(self, on: bool) -> Self {
        self.with("adaptive", on.into())
    }

    /// Any other lane setting by its name in the file.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        self.with(key, value.into())
    }
}

/// One `[[key]]`: a client of the lanes and its limits.
#[derive(Debug, Clone)]
pub struct KeyBuilder(Table);

impl KeyBuilder {
    pub fn new(name: &str, secret: &str) -> Self {
        let mut t = Table::new();
        t.insert("name".into(), name.into());
        t.insert("key".into(), secret.into());
        Self(t)
    }

    fn with(mut self, k: &str, v: Value) -> Self {
        self.0.insert(k.into(), v);
        self
    }

    /// Model globs the key may use.
    pub fn models(self, models: &[&str]) -> Self {
        self.with("models", strings(models))
    }

    pub fn concurrency(self, n: u64) -> Self {
        self.with(
            "concurrency_limit",
            inline(&[("max_concurrent_requests", int(n))]),
        )
    }

    pub fn rpm(self, n: u64) -> Self {
        self.with("rpm", int(n))
    }

    pub fn tpm(self, n: u64) -> Self {
        self.with("tpm", int(n))
    }

    pub fn priority(self, p: i64) -> Self {
        self.with("priority", Value::Integer(p))
    }

    pub fn weight(self, w: u64) -> Self {
        self.with("weight", int(w))
    }

    /// Any other key setting by its name in the file.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        self.with(key, value.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_is_the_file_it_stands_for() {
        let b = ConfigBuilder::new()
            .lane(
                LaneBuilder::new("a", "http://127.0.0.1:9/v1")
                    .concurrency(2)
                    .rps(5, 10)
                    .rpm(100)
                    .tpm(1000)
                    .queue(7, "3s")
                    .models(&["m-1"]),
            )
            .lane(LaneBuilder::mock("b").adaptive(true))
            .route("m-*", &["a", "b"])
            .key(
                KeyBuilder::new("k", "sk-k")
                    .models(&["m-*"])
                    .concurrency(1)
                    .priority(-1)
                    .weight(3),
            )
            .set("retry.max_attempts", 5)
            .set("server.request_timeout", "2m");
        let c = b.build().unwrap_or_else(|e| panic!("{e}\n{}", b.toml()));
        let from_file = Config::parse(&b.toml()).unwrap();
        assert_eq!(format!("{c:?}"), format!("{from_file:?}"));
        assert_eq!(c.lanes.len(), 2);
        assert_eq!(c.lanes[0].queue.max_len, 7);
        assert_eq!(
            c.server.request_timeout,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(c.keys[0].priority, -1);
    }

    #[test]
    fn mistakes_are_named_as_in_a_file() {
        let e = ConfigBuilder::new()
            .lane(LaneBuilder::new("a", "ftp://x").concurrency(0))
            .route("m-*", &["a"])
            .build()
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("lane[0].url"), "{text}");
        assert!(text.contains("max_concurrent_requests"), "{text}");
        let e = ConfigBuilder::new()
            .lane(LaneBuilder::mock("a").set("colour", "red"))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
