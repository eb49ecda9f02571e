//! `[retry]`, `[limits]` and `[storage]`.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::check::{parse_size, Checker};
use crate::model::*;
use crate::raw::{RawLimitsStore, RawRetry, RawSize, RawStorage};

pub(super) fn retry(c: &mut Checker<'_>, raw: Option<&toml::Spanned<RawRetry>>) -> RetryConfig {
    let mut retry = RetryConfig::default();
    let Some(spanned) = raw else { return retry };
    let line = c.section_line(raw);
    let r = spanned.get_ref();
    if let Some(n) = r.max_attempts {
        match NonZeroU32::new(n) {
            Some(n) => retry.max_attempts = n,
            None => c.push(
                line,
                "retry.max_attempts",
                "must be at least 1 (1 means no retries)",
            ),
        }
    }
    if let Some(b) = &r.budget {
        if let Some(ratio) = b.ratio {
            if (0.0..=10.0).contains(&ratio) {
                retry.budget_ratio = ratio;
            } else {
                c.push(line, "retry.budget.ratio", "must be between 0 and 10");
            }
        }
        if let Some(m) = b.min_per_second {
            if m.is_finite() && (0.0..=1e6).contains(&m) {
                retry.budget_min_per_second = m;
            } else {
                c.push(
                    line,
                    "retry.budget.min_per_second",
                    "must be between 0 and 1000000",
                );
            }
        }
    }
    if let Some(b) = &r.backoff {
        retry.backoff_base = c.duration(
            line,
            "retry.backoff.base",
            b.base.as_ref(),
            retry.backoff_base,
        );
        retry.backoff_max =
            c.duration(line, "retry.backoff.max", b.max.as_ref(), retry.backoff_max);
        if retry.backoff_max < retry.backoff_base {
            c.push(
                line,
                "retry.backoff.max",
                "must not be shorter than retry.backoff.base",
            );
        }
    }
    retry.max_pause = c.duration(
        line,
        "retry.max_pause",
        r.max_pause.as_ref(),
        retry.max_pause,
    );
    if retry.max_pause > Duration::from_secs(86_400) {
        c.push(line, "retry.max_pause", "must be at most a day (24h)");
    }
    retry
}

pub(super) fn limits(
    c: &mut Checker<'_>,
    raw: Option<&toml::Spanned<RawLimitsStore>>,
) -> LimitStoreConfig {
    let line = c.section_line(raw);
    let default = RawLimitsStore::default();
    let l = raw.map_or(&default, |s| s.get_ref());
    let store = match l.store.as_ref().map(|s| s.0.trim()) {
        None | Some("memory") => LimitStore::Memory,
        Some(u) => match redis_url(u) {
            Ok(()) => LimitStore::Redis(laneway_core::Secret::new(u.to_string())),
            Err(why) => {
                c.push(line, "limits.store", why);
                LimitStore::Memory
            }
        },
    };
    let fail_open = match l.on_store_error.as_ref().map(|s| s.0.as_str()) {
        None | Some("open") => true,
        Some("closed") => false,
        Some(o) => {
            c.push(
                line,
                "limits.on_store_error",
                format!("`{o}` is neither \"open\" nor \"closed\""),
            );
            true
        }
    };
    let timeout = c.duration(
        line,
        "limits.timeout",
        l.timeout.as_ref(),
        LimitStoreConfig::DEFAULT_TIMEOUT,
    );
    if timeout > Duration::from_secs(10) {
        c.push(
            line,
            "limits.timeout",
            "must be at most 10s: a request waits this long when the store hangs",
        );
    }
    let lease = c.duration(
        line,
        "limits.lease",
        l.lease.as_ref(),
        LimitStoreConfig::DEFAULT_LEASE,
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&lease) {
        c.push(line, "limits.lease", "must be between 1s and 10m");
    }
    let prefix = l.prefix.as_ref().map_or("laneway", |p| p.0.as_str());
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b));
    if !prefix_ok {
        c.push(
            line,
            "limits.prefix",
            "must be 1 to 64 letters, digits or `_-:.`",
        );
    }
    LimitStoreConfig {
        store,
        fail_open,
        prefix: prefix.to_owned(),
        timeout,
        lease,
    }
}

/// Whether `u` is a Redis URL Laneway can use: `redis://[user:password@]host[:port][/db]`.
/// Checked here so that a typo is a config error with its line, not a store that is never up.
fn redis_url(u: &str) -> Result<(), String> {
    if u.starts_with("rediss://") {
        return Err("TLS to Redis (rediss://) is not supported; use redis:// on a private network or a local TLS tunnel".into());
    }
    let Some(rest) = u.strip_prefix("redis://") else {
        return Err(format!("`{u}` is neither \"memory\" nor a redis:// URL"));
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h, Some(p)),
        _ => (hostport, None),
    };
    if host.is_empty() {
        return Err("the redis:// URL names no host".into());
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{p}` is not a port (1 to 65535)"));
        }
    }
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!("`/{db}` is not a database number"));
    }
    Ok(())
}

/// Batch items in flight at most; each waits in a lane queue or runs upstream.
const MAX_BATCH_CONCURRENCY: u64 = 4096;

pub(super) fn storage(
    c: &mut Checker<'_>,
    raw: Option<&toml::Spanned<RawStorage>>,
) -> StorageConfig {
    let line = c.section_line(raw);
    let default = RawStorage::default();
    let s = raw.map_or(&default, |s| s.get_ref());
    let path = s.path.as_ref().map_or("laneway-data", |p| p.0.as_str());
    if path.trim().is_empty() {
        c.push(line, "storage.path", "must name a directory");
    }
    let default_size = 200 << 20;
    let max_file_size = match &s.max_file_size {
        None => default_size,
        Some(RawSize::Bytes(b)) => usize::try_from(*b).unwrap_or(usize::MAX),
        Some(RawSize::Text(t)) => parse_size(&t.0).unwrap_or_else(|e| {
            c.push(line, "storage.max_file_size", e);
            default_size
        }),
    };
    if max_file_size == 0 {
        c.push(line, "storage.max_file_size", "must be more than 0 bytes");
    }
    let batch_concurrency = match s.batch_concurrency {
        None => StorageConfig::DEFAULT_BATCH_CONCURRENCY,
        Some(n) if (1..=MAX_BATCH_CONCURRENCY).contains(&n) => n as usize,
        Some(_) => {
            c.push(
                line,
                "storage.batch_concurrency",
                format!("must be between 1 and {MAX_BATCH_CONCURRENCY}"),
            );
            StorageConfig::DEFAULT_BATCH_CONCURRENCY
        }
    };
    let url = s.url.as_ref().map(|u| u.0.clone());
    if let Some(u) = &url {
        if let Err(e) = postgres_url(u) {
            c.push(line, "storage.url", e);
        }
    }
    let lease = c.duration(
        line,
        "storage.lease",
        s.lease.as_ref(),
        StorageConfig::DEFAULT_LEASE,
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&lease) {
        c.push(line, "storage.lease", "must be between 1s and 10m");
    }
    StorageConfig {
        path: PathBuf::from(path),
        max_file_size,
        batch_concurrency,
        url,
        lease,
        configured: raw.is_some(),
    }
}

/// Whether `u` names a PostgreSQL database: `postgres://` or `postgresql://`, with a host or a
/// socket directory (`?host=/run/postgresql`). Checked here so that a typo is a config error
/// with its line, not a Batch API that is never up.
fn postgres_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("postgres://")
        .or_else(|| u.strip_prefix("postgresql://"));
    match rest {
        None => Err(format!(
            "`{}` is not a PostgreSQL URL; write postgres://user:password@host:5432/database",
            laneway_core::redact_url(u)
        )),
        Some(r) if r.len() > 2048 => Err("is longer than 2048 characters".into()),
        Some(r) if r.is_empty() || r.starts_with('?') && !r.contains("host=") => {
            Err("names no host; write postgres://user@host/database or ?host=/socket/dir".into())
        }
        Some(_) => Ok(()),
    }
}
