//! Onwards JSON configs, as they are: each target becomes a lane and a literal route, each key
//! (global keys, key definitions, per-target keys) a `[[key]]`. The translation is Laneway TOML
//! text, so it goes through the same validation as a file written by hand and `laneway import`
//! can print it, with a comment on everything that has no Laneway equivalent.
//!
//! Onwards refuses with 429 when a target or key is full; the translation keeps that
//! (`on_limit = "reject"`) unless the caller asks for queueing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConfigError, Problem};

#[derive(Deserialize)]
struct File {
    targets: BTreeMap<String, Target>,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Target {
    url: String,
    onwards_key: Option<String>,
    onwards_model: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    rate_limit: Option<RateLimit>,
    concurrency_limit: Option<ConcurrencyLimit>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
struct Auth {
    #[serde(default)]
    global_keys: Vec<String>,
    #[serde(default)]
    key_definitions: BTreeMap<String, KeyDefinition>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct KeyDefinition {
    key: String,
    rate_limit: Option<RateLimit>,
    concurrency_limit: Option<ConcurrencyLimit>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RateLimit {
    requests_per_second: f64,
    burst_size: u64,
}

#[derive(Deserialize)]
struct ConcurrencyLimit {
    max_concurrent_requests: u64,
}

/// Whether `text` is an Onwards JSON config rather than Laneway TOML.
pub fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// A TOML string literal: JSON's escapes are valid in TOML basic strings.
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn limits(out: &mut String, rate: Option<&RateLimit>, conc: Option<&ConcurrencyLimit>) {
    if let Some(c) = conc {
        let _ = writeln!(
            out,
            "concurrency_limit = {{ max_concurrent_requests = {} }}",
            c.max_concurrent_requests
        );
    }
    if let Some(r) = rate {
        let _ = writeln!(
            out,
            "rate_limit = {{ requests_per_second = {:?}, burst_size = {} }}",
            r.requests_per_second, r.burst_size
        );
    }
}

fn unmapped(out: &mut String, place: &str, other: &BTreeMap<String, Value>) {
    for (k, v) in other {
        let _ = writeln!(
            out,
            "# not mapped: {place}.{k} = {v} (Laneway has no equivalent)"
        );
    }
}

/// Onwards forwards the client's path (`/v1/chat/completions`) onto the target's URL; a Laneway
/// lane's URL already ends in the API version.
fn lane_url(url: &str) -> String {
    let u = url.trim_end_matches('/');
    if u.ends_with("/v1") {
        u.to_owned()
    } else {
        format!("{u}/v1")
    }
}

fn parse(json: &str) -> Result<File, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            file: None,
            problems: vec![Problem {
                line: (inner.line() > 0).then_some(inner.line()),
                path: if path == "." { String::new() } else { path },
                message: format!("not a valid Onwards config: {inner}"),
            }],
        }
    })
}

fn write_lane(out: &mut String, name: &str, t: &Target, on_limit: &str) {
    let _ = writeln!(
        out,
        "\n[[lane]]\nname = {}\nurl = {}",
        lit(name),
        lit(&lane_url(&t.url))
    );
    if let Some(k) = &t.onwards_key {
        let _ = writeln!(out, "api_key = {}", lit(k));
    }
    if let Some(m) = &t.onwards_model {
        let _ = writeln!(out, "model = {}", lit(m));
    }
    limits(out, t.rate_limit.as_ref(), t.concurrency_limit.as_ref());
    let _ = writeln!(out, "on_limit = \"{on_limit}\"");
    unmapped(out, &format!("targets.{name}"), &t.other);
    let _ = writeln!(
        out,
        "\n[[route]]\nmodel = {}\nlanes = [{}]",
        lit(name),
        lit(name)
    );
}

/// Which targets a key may use, by the Onwards rules: global keys reach every target; a key
/// named (by definition name or value) in targets' `keys` reaches those; a defined key named
/// nowhere reaches the open targets.
struct Access<'f> {
    every: BTreeSet<String>,
    open: BTreeSet<String>,
    global: BTreeSet<&'f str>,
    /// Targets by the key entry (a definition name or a literal key) that lists them.
    listed: BTreeMap<&'f str, BTreeSet<String>>,
}

impl<'f> Access<'f> {
    fn new(file: &'f File, auth: &'f Auth) -> Self {
        let mut listed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (name, t) in &file.targets {
            for k in &t.keys {
                listed.entry(k.as_str()).or_default().insert(name.clone());
            }
        }
        Self {
            every: file.targets.keys().cloned().collect(),
            open: file
                .targets
                .iter()
                .filter(|(_, t)| t.keys.is_empty())
                .map(|(n, _)| n.clone())
                .collect(),
            global: auth.global_keys.iter().map(String::as_str).collect(),
            listed,
        }
    }

    fn models_of(&self, name: &str, secret: &str) -> BTreeSet<String> {
        if self.global.contains(name) || self.global.contains(secret) {
            return self.every.clone();
        }
        let mut m: BTreeSet<String> = [name, secret]
            .iter()
            .filter_map(|k| self.listed.get(k))
            .flatten()
            .cloned()
            .collect();
        if m.is_empty() {
            m = self.open.clone();
        }
        m
    }

    fn write_key(&self, out: &mut String, name: &str, secret: &str) {
        let models = self.models_of(name, secret);
        let _ = writeln!(
            out,
            "\n[[key]]\nname = {}\nkey = {}",
            lit(name),
            lit(secret)
        );
        if models != self.every {
            let list: Vec<String> = models.iter().map(|m| lit(m)).collect();
            let _ = writeln!(out, "models = [{}]", list.join(", "));
        }
    }
}

/// Translates an Onwards config into Laneway TOML. `queue` makes full lanes queue instead of
/// refusing at once.
pub fn to_toml(json: &str, queue: bool) -> Result<String, ConfigError> {
    let file = parse(json)?;
    let no_auth = Auth::default();
    let auth = file.auth.as_ref().unwrap_or(&no_auth);
    let on_limit = if queue { "queue" } else { "reject" };
    let mut out = String::from(
        "# Translated from an Onwards config by Laneway. Each target is a lane serving its own\n\
         # model name; each key keeps its limits. Secrets are written as they were: consider\n\
         # moving them to environment variables (\"${NAME}\").\n",
    );
    unmapped(&mut out, "(top level)", &file.other);
    unmapped(&mut out, "auth", &auth.other);
    let access = Access::new(&file, auth);
    let any_keys =
        !access.global.is_empty() || !auth.key_definitions.is_empty() || !access.listed.is_empty();
    for (name, t) in &file.targets {
        write_lane(&mut out, name, t, on_limit);
        // Open in Onwards; in Laneway a gateway with keys needs one on every request.
        if any_keys && t.keys.is_empty() && access.global.is_empty() {
            let _ = writeln!(
                out,
                "# note: target `{name}` needs no key in Onwards; here every request needs one of the keys below"
            );
        }
    }
    for (name, d) in &auth.key_definitions {
        access.write_key(&mut out, name, &d.key);
        limits(
            &mut out,
            d.rate_limit.as_ref(),
            d.concurrency_limit.as_ref(),
        );
        unmapped(&mut out, &format!("auth.key_definitions.{name}"), &d.other);
    }
    // Keys given only as values (global, or listed by a target) become keys without limits.
    let defined: BTreeSet<&str> = auth
        .key_definitions
        .iter()
        .flat_map(|(n, d)| [n.as_str(), d.key.as_str()])
        .collect();
    let plain: BTreeSet<&str> = access
        .global
        .iter()
        .copied()
        .chain(access.listed.keys().copied())
        .filter(|k| !defined.contains(k))
        .collect();
    for (i, secret) in plain.iter().enumerate() {
        access.write_key(&mut out, &format!("key-{}", i + 1), secret);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, LaneKind, OnLimit};

    /// The examples of Onwards' own documentation for limits, combined.
    const DOCS: &str = r#"{
      "auth": {
        "global_keys": ["global-api-key-1"],
        "key_definitions": {
          "basic_user": { "key": "sk-user-12345", "concurrency_limit": { "max_concurrent_requests": 2 } },
          "premium_user": {
            "key": "sk-premium-67890",
            "concurrency_limit": { "max_concurrent_requests": 10 },
            "rate_limit": { "requests_per_second": 100, "burst_size": 200 }
          }
        }
      },
      "targets": {
        "gpt-4": {
          "url": "https://api.openai.com",
          "onwards_key": "sk-your-openai-key",
          "onwards_model": "gpt-4",
          "keys": ["basic_user", "premium_user"]
        },
        "rate-limited-model": {
          "url": "https://api.provider.com/v1/",
          "onwards_key": "your-api-key",
          "rate_limit": { "requests_per_second": 5.0, "burst_size": 10 }
        },
        "resource-limited-model": {
          "url": "http://127.0.0.1:8080",
          "concurrency_limit": { "max_concurrent_requests": 5 },
          "upstream_auth_header_name": "X-API-Key"
        }
      }
    }"#;

    #[test]
    fn the_documented_configs_map_to_lanes_routes_and_keys() {
        let toml = to_toml(DOCS, false).unwrap();
        let c = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let lane = |n: &str| c.lanes.iter().find(|l| l.name == n).unwrap();
        let gpt = lane("gpt-4");
        assert_eq!(gpt.url, "https://api.openai.com/v1");
        assert_eq!(gpt.api_key.as_ref().unwrap().expose(), "sk-your-openai-key");
        assert_eq!(gpt.model.as_deref(), Some("gpt-4"));
        assert_eq!(
            (gpt.kind, gpt.on_limit),
            (LaneKind::OpenAi, OnLimit::Reject)
        );
        let rated = lane("rate-limited-model");
        assert_eq!(rated.url, "https://api.provider.com/v1");
        let r = rated.limits.rate.unwrap();
        assert_eq!((r.per_second, r.burst.get()), (5.0, 10));
        assert_eq!(
            lane("resource-limited-model")
                .limits
                .max_concurrent
                .unwrap()
                .get(),
            5
        );
        assert_eq!(
            c.route_for("gpt-4").map(|i| &c.routes[i].model),
            Some(&"gpt-4".to_owned())
        );

        let key = |n: &str| c.keys.iter().find(|k| k.name == n).unwrap();
        let basic = key("basic_user");
        assert_eq!(basic.key.expose(), "sk-user-12345");
        assert_eq!(basic.limits.max_concurrent.unwrap().get(), 2);
        assert!(basic.allows("gpt-4") && !basic.allows("rate-limited-model"));
        let premium = key("premium_user");
        let r = premium.limits.rate.unwrap();
        assert_eq!(
            (r.per_second, r.burst.get(), premium.on_limit),
            (100.0, 200, OnLimit::Reject)
        );
        let global = key("key-1");
        assert_eq!(global.key.expose(), "global-api-key-1");
        assert!(global.allows("gpt-4") && global.allows("resource-limited-model"));
        assert!(
            toml.contains("# not mapped: targets.resource-limited-model.upstream_auth_header_name"),
            "{toml}"
        );
    }

    #[test]
    fn queueing_is_opt_in() {
        let c = Config::parse(&to_toml(DOCS, true).unwrap()).unwrap();
        assert!(c.lanes.iter().all(|l| l.on_limit == OnLimit::Queue));
    }

    #[test]
    fn a_malformed_config_names_its_line_and_path() {
        let e = to_toml(
            "{\n  \"targets\": {\n    \"m\": { \"url\": 5 }\n  }\n}",
            false,
        )
        .unwrap_err();
        let p = &e.problems[0];
        assert_eq!(p.path, "targets.m.url", "{e}");
        assert_eq!(p.line, Some(3), "{e}");
        let e = to_toml(
            "{ \"targets\": { \"m\": { \"url\": \"http://x\",, } } }",
            false,
        )
        .unwrap_err();
        assert!(e.problems[0].message.contains("Onwards"), "{e}");
        assert!(to_toml("{}", false)
            .unwrap_err()
            .to_string()
            .contains("targets"));
    }
}
