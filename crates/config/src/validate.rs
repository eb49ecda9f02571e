//! Raw → validated, in one pass that collects every problem instead of stopping at the first.
//! Cross-references (routes naming lanes, fallbacks naming routes) are checked here too.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use laneway_core::{glob, Secret};

use crate::error::{line_of, Problem};
use crate::model::*;
use crate::raw::*;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8400";
/// A local server runs one request at a time unless told otherwise.
const LOCAL_CONCURRENCY: NonZeroU32 = NonZeroU32::MIN;

struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, span: &std::ops::Range<usize>) -> Option<usize> {
        Some(line_of(self.text, span.start))
    }

    fn push(&mut self, line: Option<usize>, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        line: Option<usize>,
        path: &str,
        value: Option<&EnvString>,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        match humantime::parse_duration(v.0.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(line, path, "must be longer than zero");
                default
            }
            Err(e) => {
                self.push(
                    line,
                    path,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"10m\"",
                        v.0
                    ),
                );
                default
            }
        }
    }

    fn limits(
        &mut self,
        line: Option<usize>,
        prefix: &str,
        concurrency: Option<&RawConcurrency>,
        rate: Option<&RawRate>,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Limits {
        let mut limits = Limits::default();
        if let Some(c) = concurrency {
            limits.max_concurrent = NonZeroU32::new(c.max_concurrent_requests);
            if limits.max_concurrent.is_none() {
                self.push(
                    line,
                    format!("{prefix}.concurrency_limit.max_concurrent_requests"),
                    "must be at least 1 (remove the limit for unlimited)",
                );
            }
        }
        if let Some(r) = rate {
            let burst = r
                .burst_size
                .unwrap_or_else(|| r.requests_per_second.ceil().max(1.0) as u32);
            match (r.requests_per_second, NonZeroU32::new(burst)) {
                (rps, Some(burst)) if rps.is_finite() && rps > 0.0 => {
                    limits.rate = Some(Rate {
                        per_second: rps,
                        burst,
                    });
                }
                (rps, _) if !(rps.is_finite() && rps > 0.0) => self.push(
                    line,
                    format!("{prefix}.rate_limit.requests_per_second"),
                    "must be a number above zero",
                ),
                _ => self.push(
                    line,
                    format!("{prefix}.rate_limit.burst_size"),
                    "must be at least 1",
                ),
            }
        }
        if let Some(v) = rpm {
            limits.rpm = u32::try_from(v).ok().and_then(NonZeroU32::new);
            if limits.rpm.is_none() {
                self.push(
                    line,
                    format!("{prefix}.rpm"),
                    "must be between 1 and 4294967295",
                );
            }
        }
        if let Some(v) = tpm {
            limits.tpm = NonZeroU64::new(v);
            if limits.tpm.is_none() {
                self.push(line, format!("{prefix}.tpm"), "must be at least 1");
            }
        }
        limits
    }

    fn on_limit(
        &mut self,
        line: Option<usize>,
        path: &str,
        v: Option<&EnvString>,
        default: OnLimit,
    ) -> OnLimit {
        match v.map(|s| s.0.as_str()) {
            None => default,
            Some("reject") => OnLimit::Reject,
            Some("queue") => OnLimit::Queue,
            Some(other) => {
                self.push(
                    line,
                    path,
                    format!("`{other}` is not one of \"reject\", \"queue\""),
                );
                default
            }
        }
    }
}

/// Parses a size: plain bytes or a number with `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. \"32MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn validate(raw: RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };

    let s = &raw.server;
    let listen = match &s.listen {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(v) => {
            let parsed = v.0.parse::<SocketAddr>().ok();
            if parsed.is_none() {
                c.push(
                    None,
                    "server.listen",
                    format!("`{}` is not an address like \"127.0.0.1:8400\"", v.0),
                );
            }
            parsed
        }
    };
    let max_body = match &s.max_body {
        None => 32 << 20,
        Some(RawSize::Bytes(b)) => usize::try_from(*b).unwrap_or(usize::MAX),
        Some(RawSize::Text(t)) => parse_size(&t.0).unwrap_or_else(|e| {
            c.push(None, "server.max_body", e);
            32 << 20
        }),
    };
    let log_format = match s.log_format.as_ref().map(|s| s.0.as_str()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(o) => {
            c.push(
                None,
                "server.log_format",
                format!("`{o}` is not one of \"text\", \"json\""),
            );
            LogFormat::Text
        }
    };
    let admin_key = s.admin_key.as_ref().and_then(|k| {
        if k.0.is_empty() {
            c.push(
                None,
                "server.admin_key",
                "is empty; remove it to turn the admin API off",
            );
            None
        } else {
            Some(Secret::new(k.0.clone()))
        }
    });
    let server = ServerConfig {
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 8400).into()),
        admin_key,
        request_timeout: c.duration(
            None,
            "server.request_timeout",
            s.request_timeout.as_ref(),
            Duration::from_secs(600),
        ),
        shutdown_grace: c.duration(
            None,
            "server.shutdown_grace",
            s.shutdown_grace.as_ref(),
            Duration::from_secs(30),
        ),
        max_body,
        log_format,
    };

    let mut lanes = Vec::with_capacity(raw.lane.len());
    let mut lane_names = HashSet::new();
    for (i, spanned) in raw.lane.iter().enumerate() {
        let line = c.line(&spanned.span());
        let l = spanned.get_ref();
        let p = format!("lane[{i}]");
        let name = l.name.0.clone();
        if name.is_empty() {
            c.push(line, format!("{p}.name"), "must not be empty");
        } else if !lane_names.insert(name.clone()) {
            c.push(
                line,
                format!("{p}.name"),
                format!("lane `{name}` is defined twice"),
            );
        }
        let kind = match l.kind.as_ref().map(|k| k.0.as_str()) {
            None | Some("openai") => LaneKind::OpenAi,
            Some("local") => LaneKind::Local,
            Some("mock") => LaneKind::Mock,
            Some(o) => {
                c.push(
                    line,
                    format!("{p}.kind"),
                    format!("`{o}` is not one of \"openai\", \"local\", \"mock\""),
                );
                LaneKind::OpenAi
            }
        };
        let url = match (&l.url, kind) {
            (Some(u), _) => {
                let u = u.0.trim_end_matches('/').to_string();
                if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
                    c.push(
                        line,
                        format!("{p}.url"),
                        format!("`{u}` is not an http:// or https:// URL"),
                    );
                }
                u
            }
            (None, LaneKind::Mock) => String::new(),
            (None, _) => {
                c.push(
                    line,
                    format!("{p}.url"),
                    "is required (the upstream's base URL, e.g. \"https://api.example.com/v1\")",
                );
                String::new()
            }
        };
        let mut limits = c.limits(
            line,
            &p,
            l.concurrency_limit.as_ref(),
            l.rate_limit.as_ref(),
            l.rpm,
            l.tpm,
        );
        if kind == LaneKind::Local && limits.max_concurrent.is_none() {
            limits.max_concurrent = Some(LOCAL_CONCURRENCY);
        }
        let queue = match &l.queue {
            None => QueueConfig::default(),
            Some(q) => QueueConfig {
                max_len: q
                    .max_len
                    .map_or(QueueConfig::default().max_len, |n| n as usize),
                timeout: c.duration(
                    line,
                    &format!("{p}.queue.timeout"),
                    q.timeout.as_ref(),
                    QueueConfig::default().timeout,
                ),
            },
        };
        lanes.push(LaneConfig {
            name,
            url,
            api_key: l.api_key.as_ref().map(|k| Secret::new(k.0.clone())),
            model: l.model.as_ref().map(|m| m.0.clone()),
            kind,
            limits,
            queue,
            adaptive: l.adaptive.unwrap_or(false),
            on_limit: c.on_limit(
                line,
                &format!("{p}.on_limit"),
                l.on_limit.as_ref(),
                OnLimit::Queue,
            ),
            connect_timeout: c.duration(
                line,
                &format!("{p}.connect_timeout"),
                l.connect_timeout.as_ref(),
                Duration::from_secs(10),
            ),
            first_byte_timeout: c.duration(
                line,
                &format!("{p}.first_byte_timeout"),
                l.first_byte_timeout.as_ref(),
                Duration::from_secs(300),
            ),
            default_max_tokens: l.default_max_tokens.unwrap_or(1024),
        });
    }

    let mut routes = Vec::with_capacity(raw.route.len());
    for (i, spanned) in raw.route.iter().enumerate() {
        let line = c.line(&spanned.span());
        let r = spanned.get_ref();
        let p = format!("route[{i}]");
        if r.model.0.is_empty() {
            c.push(line, format!("{p}.model"), "must not be empty");
        }
        if r.lanes.is_empty() {
            c.push(line, format!("{p}.lanes"), "must name at least one lane");
        }
        let mut indices = Vec::with_capacity(r.lanes.len());
        for (j, lane) in r.lanes.iter().enumerate() {
            match lanes.iter().position(|l| l.name == lane.0) {
                Some(idx) if indices.contains(&idx) => c.push(
                    line,
                    format!("{p}.lanes[{j}]"),
                    format!("lane `{}` is listed twice", lane.0),
                ),
                Some(idx) => indices.push(idx),
                None => c.push(
                    line,
                    format!("{p}.lanes[{j}]"),
                    format!("no lane is named `{}`", lane.0),
                ),
            }
        }
        routes.push(RouteConfig {
            model: r.model.0.clone(),
            lanes: indices,
            fallbacks: r.fallbacks.iter().map(|f| f.0.clone()).collect(),
        });
    }
    for (i, spanned) in raw.route.iter().enumerate() {
        let line = c.line(&spanned.span());
        for (j, f) in routes[i].fallbacks.clone().iter().enumerate() {
            // A fallback pattern must lead somewhere other than back into its own route.
            let target = routes.iter().position(|r| fallback_hits(&r.model, f));
            match target {
                None => c.push(
                    line,
                    format!("route[{i}].fallbacks[{j}]"),
                    format!("no route serves models matching `{f}`"),
                ),
                Some(t) if t == i => c.push(
                    line,
                    format!("route[{i}].fallbacks[{j}]"),
                    format!("`{f}` routes back to this same route"),
                ),
                Some(_) => {}
            }
        }
    }

    let mut keys = Vec::with_capacity(raw.key.len());
    let mut key_names = HashSet::new();
    let mut secrets = HashSet::new();
    for (i, spanned) in raw.key.iter().enumerate() {
        let line = c.line(&spanned.span());
        let k = spanned.get_ref();
        let p = format!("key[{i}]");
        if k.name.0.is_empty() {
            c.push(line, format!("{p}.name"), "must not be empty");
        } else if !key_names.insert(k.name.0.clone()) {
            c.push(
                line,
                format!("{p}.name"),
                format!("key `{}` is defined twice", k.name.0),
            );
        }
        if k.key.0.is_empty() {
            c.push(line, format!("{p}.key"), "must not be empty");
        } else if !secrets.insert(k.key.0.clone()) {
            c.push(
                line,
                format!("{p}.key"),
                "the same secret is used by two keys",
            );
        }
        let weight = NonZeroU32::new(k.weight.unwrap_or(1));
        if weight.is_none() {
            c.push(line, format!("{p}.weight"), "must be at least 1");
        }
        keys.push(KeyConfig {
            name: k.name.0.clone(),
            key: Secret::new(k.key.0.clone()),
            models: k.models.iter().flatten().map(|m| m.0.clone()).collect(),
            limits: c.limits(
                line,
                &p,
                k.concurrency_limit.as_ref(),
                k.rate_limit.as_ref(),
                k.rpm,
                k.tpm,
            ),
            priority: k.priority.unwrap_or(0),
            weight: weight.unwrap_or(NonZeroU32::MIN),
            on_limit: c.on_limit(
                line,
                &format!("{p}.on_limit"),
                k.on_limit.as_ref(),
                OnLimit::Reject,
            ),
        });
    }

    let mut retry = RetryConfig::default();
    if let Some(n) = raw.retry.max_attempts {
        match NonZeroU32::new(n) {
            Some(n) => retry.max_attempts = n,
            None => c.push(
                None,
                "retry.max_attempts",
                "must be at least 1 (1 means no retries)",
            ),
        }
    }
    if let Some(b) = &raw.retry.budget {
        if let Some(r) = b.ratio {
            if (0.0..=10.0).contains(&r) {
                retry.budget_ratio = r;
            } else {
                c.push(None, "retry.budget.ratio", "must be between 0 and 10");
            }
        }
        if let Some(m) = b.min_per_second {
            if m.is_finite() && m >= 0.0 {
                retry.budget_min_per_second = m;
            } else {
                c.push(None, "retry.budget.min_per_second", "must be zero or more");
            }
        }
    }
    if let Some(b) = &raw.retry.backoff {
        retry.backoff_base = c.duration(
            None,
            "retry.backoff.base",
            b.base.as_ref(),
            retry.backoff_base,
        );
        retry.backoff_max =
            c.duration(None, "retry.backoff.max", b.max.as_ref(), retry.backoff_max);
        if retry.backoff_max < retry.backoff_base {
            c.push(
                None,
                "retry.backoff.max",
                "must not be shorter than retry.backoff.base",
            );
        }
    }

    retry.max_pause = c.duration(
        None,
        "retry.max_pause",
        raw.retry.max_pause.as_ref(),
        retry.max_pause,
    );
    if retry.max_pause > Duration::from_secs(86_400) {
        c.push(None, "retry.max_pause", "must be at most a day (24h)");
    }

    let store = match raw.limits.store.as_ref().map(|s| s.0.as_str()) {
        None | Some("memory") => LimitStore::Memory,
        Some(u) if u.starts_with("redis://") => LimitStore::Redis(Secret::new(u.to_string())),
        Some(o) => {
            c.push(
                None,
                "limits.store",
                format!("`{o}` is neither \"memory\" nor a redis:// URL"),
            );
            LimitStore::Memory
        }
    };
    let fail_open = match raw.limits.on_store_error.as_ref().map(|s| s.0.as_str()) {
        None | Some("open") => true,
        Some("closed") => false,
        Some(o) => {
            c.push(
                None,
                "limits.on_store_error",
                format!("`{o}` is not one of \"open\", \"closed\""),
            );
            true
        }
    };
    let storage = StorageConfig {
        path: PathBuf::from(
            raw.storage
                .path
                .as_ref()
                .map_or("laneway-data", |p| p.0.as_str()),
        ),
    };

    if c.problems.is_empty() {
        Ok(Config {
            server,
            lanes,
            routes,
            keys,
            retry,
            limits: LimitStoreConfig { store, fail_open },
            storage,
        })
    } else {
        Err(c.problems)
    }
}

/// Whether a fallback pattern reaches a route: literally the same pattern, or a literal model id
/// the route's pattern matches.
fn fallback_hits(route_model: &str, fallback: &str) -> bool {
    route_model == fallback || (glob::is_literal(fallback) && glob::matches(route_model, fallback))
}
