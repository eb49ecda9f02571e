//! The effective configuration in words, for `laneway check` and operators.

use std::fmt::Write;

use crate::model::*;

fn limits(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.max_concurrent {
        parts.push(format!("{c} in flight"));
    }
    if let Some(r) = l.rate {
        parts.push(format!("{}/s burst {}", r.per_second, r.burst));
    }
    if let Some(r) = l.rpm {
        parts.push(format!("{r} rpm"));
    }
    if let Some(t) = l.tpm {
        parts.push(format!("{t} tpm"));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(", ")
    }
}

fn on_limit(o: OnLimit) -> &'static str {
    match o {
        OnLimit::Reject => "reject",
        OnLimit::Queue => "queue",
    }
}

pub fn describe(c: &Config) -> String {
    let mut out = String::new();
    let s = &c.server;
    let _ =
        writeln!(
        out,
        "server: listen {}, admin API {}, request timeout {}, shutdown grace {}, max body {} bytes",
        s.listen,
        if s.admin_key.is_some() { "on (key ****)" } else { "off" },
        humantime::format_duration(s.request_timeout),
        humantime::format_duration(s.shutdown_grace),
        s.max_body
    );
    lanes(&mut out, c);
    routes(&mut out, c);
    keys(&mut out, c);
    rest(&mut out, c);
    out
}

fn lanes(out: &mut String, c: &Config) {
    let _ = writeln!(out, "lanes ({}):", c.lanes.len());
    for l in &c.lanes {
        let _ = writeln!(
            out,
            "  {} [{}] {}{}{}: {}{}; queue {} for {}, on limit {}",
            l.name,
            l.kind.as_str(),
            if l.url.is_empty() {
                "(in-process)".into()
            } else {
                laneway_core::redact_url(&l.url)
            },
            l.model
                .as_ref()
                .map(|m| format!(" as {m}"))
                .unwrap_or_default(),
            if l.api_key.is_some() {
                ", key ****"
            } else {
                ""
            },
            limits(&l.limits),
            if l.adaptive { ", adaptive" } else { "" },
            l.queue.max_len,
            humantime::format_duration(l.queue.timeout),
            on_limit(l.on_limit),
        );
    }
}

fn routes(out: &mut String, c: &Config) {
    let _ = writeln!(out, "routes ({}):", c.routes.len());
    for r in &c.routes {
        let names: Vec<&str> = r.lanes.iter().map(|&i| c.lanes[i].name.as_str()).collect();
        let _ = write!(out, "  {} -> {}", r.model, names.join(", "));
        if !r.fallbacks.is_empty() {
            let _ = write!(out, " (fallbacks: {})", r.fallbacks.join(", "));
        }
        out.push('\n');
    }
}

fn keys(out: &mut String, c: &Config) {
    if c.keys.is_empty() {
        let _ = writeln!(out, "keys: none (no API key is required)");
    } else {
        let _ = writeln!(out, "keys ({}):", c.keys.len());
        for k in &c.keys {
            let _ = writeln!(
                out,
                "  {} (****): models {}; {}; priority {}, weight {}, on limit {}",
                k.name,
                if k.models.is_empty() {
                    "all".to_string()
                } else {
                    k.models.join(", ")
                },
                limits(&k.limits),
                k.priority,
                k.weight,
                on_limit(k.on_limit),
            );
        }
    }
}

/// Retry, the limit store and storage.
fn rest(out: &mut String, c: &Config) {
    let r = &c.retry;
    let _ = writeln!(
        out,
        "retry: {} attempts, budget {}% + {}/s, backoff {}..{}",
        r.max_attempts,
        r.budget_ratio * 100.0,
        r.budget_min_per_second,
        humantime::format_duration(r.backoff_base),
        humantime::format_duration(r.backoff_max)
    );
    let _ = writeln!(
        out,
        "limits store: {}, on store error: {}, prefix {}, timeout {}, lease {}",
        match c.limits.store {
            LimitStore::Memory => "memory",
            LimitStore::Redis(_) => "redis (****)",
        },
        if c.limits.fail_open { "open" } else { "closed" },
        c.limits.prefix,
        humantime::format_duration(c.limits.timeout),
        humantime::format_duration(c.limits.lease)
    );
    let _ = match &c.storage.url {
        Some(url) => writeln!(
            out,
            "storage: PostgreSQL {} (files up to {} bytes, item lease {})",
            laneway_core::redact_url(url),
            c.storage.max_file_size,
            humantime::format_duration(c.storage.lease)
        ),
        None => writeln!(
            out,
            "storage: {} (files up to {} bytes)",
            c.storage.path.display(),
            c.storage.max_file_size
        ),
    };
}
