//! `[retry]`, `[limits]` and `[storage]`.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::{parse_size, Checker};
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
    let store = match l.store.as_ref().map(|s| s.0.as_str()) {
        None | Some("memory") => LimitStore::Memory,
        Some(u) if u.starts_with("redis://") => {
            // Accepting it while counting locally would silently multiply every limit by the
            // number of replicas.
            c.push(
                line,
                "limits.store",
                "limits shared through Redis are not available in this version of Laneway; \
                 use \"memory\" (each replica then enforces its own limits)",
            );
            LimitStore::Redis(laneway_core::Secret::new(u.to_string()))
        }
        Some(o) => {
            c.push(
                line,
                "limits.store",
                format!("`{o}` is neither \"memory\" nor a redis:// URL"),
            );
            LimitStore::Memory
        }
    };
    // Only a shared store can fail; until one exists the setting would do nothing.
    if l.on_store_error.is_some() {
        c.push(
            line,
            "limits.on_store_error",
            "applies to a shared limit store, which this version of Laneway does not have yet; \
             remove it",
        );
    }
    let fail_open = true;
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
    }
}

pub(super) fn storage(
    c: &mut Checker<'_>,
    raw: Option<&toml::Spanned<RawStorage>>,
) -> StorageConfig {
    let line = c.section_line(raw);
    let default = RawStorage::default();
    let s = raw.map_or(&default, |s| s.get_ref());
    // Storage holds batch files; until the Batch API exists the section would do nothing.
    if s.path.is_some() || s.max_file_size.is_some() {
        c.push(
            line,
            "storage",
            "holds Batch API files, which this version of Laneway does not serve yet; remove the \
             [storage] section",
        );
    }
    let path = s.path.as_ref().map_or("laneway-data", |p| p.0.as_str());
    let default_size = 200 << 20;
    let max_file_size = match &s.max_file_size {
        None => default_size,
        Some(RawSize::Bytes(b)) => usize::try_from(*b).unwrap_or(usize::MAX),
        Some(RawSize::Text(t)) => parse_size(&t.0).unwrap_or_else(|e| {
            c.push(line, "storage.max_file_size", e);
            default_size
        }),
    };
    StorageConfig {
        path: PathBuf::from(path),
        max_file_size,
    }
}
