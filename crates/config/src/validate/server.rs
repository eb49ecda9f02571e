//! `[server]`: the listener, the admin and metrics keys, deadlines and connection limits.

use std::net::SocketAddr;
use std::time::Duration;

use laneway_core::Secret;

use super::check::{parse_size, Checker, DEFAULT_LISTEN};
use crate::model::ServerConfig;
use crate::raw::{RawServer, RawSize};

/// The largest `max_connections` accepted; the descriptor limit usually binds far below it.
const MAX_CONNECTIONS: u64 = 1_000_000;

pub(super) fn server(c: &mut Checker<'_>, raw: Option<&toml::Spanned<RawServer>>) -> ServerConfig {
    let line = c.section_line(raw);
    let default = RawServer::default();
    let s = raw.map_or(&default, |s| s.get_ref());
    let listen = match &s.listen {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(v) => {
            let parsed = v.0.parse::<SocketAddr>().ok();
            if parsed.is_none() {
                c.push(
                    line,
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
            c.push(line, "server.max_body", e);
            32 << 20
        }),
    };
    let log_format = s.log_format.unwrap_or_default();
    let auth = s.auth.unwrap_or_default();
    let (admin_key, metrics_key) = operator_keys(c, line, s);
    let (max_connections, max_model_labels) = bounds(c, line, s);
    let secs = Duration::from_secs;
    ServerConfig {
        max_model_labels,
        listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 8400).into()),
        admin_key,
        request_timeout: c.duration(
            line,
            "server.request_timeout",
            s.request_timeout.as_ref(),
            secs(600),
        ),
        shutdown_grace: c.duration(
            line,
            "server.shutdown_grace",
            s.shutdown_grace.as_ref(),
            secs(30),
        ),
        max_body,
        log_format,
        header_timeout: c.duration(
            line,
            "server.header_timeout",
            s.header_timeout.as_ref(),
            secs(10),
        ),
        body_timeout: c.duration(
            line,
            "server.body_timeout",
            s.body_timeout.as_ref(),
            secs(60),
        ),
        idle_timeout: c.duration(
            line,
            "server.idle_timeout",
            s.idle_timeout.as_ref(),
            secs(60),
        ),
        max_connections,
        metrics_key,
        auth,
    }
}

/// The admin and metrics keys; the same secret for both is refused.
fn operator_keys(
    c: &mut Checker<'_>,
    line: Option<usize>,
    s: &RawServer,
) -> (Option<Secret<String>>, Option<Secret<String>>) {
    let admin_key = match &s.admin_key {
        Some(k) if k.0.is_empty() => {
            c.push(
                line,
                "server.admin_key",
                "is empty; remove it to turn the admin API off",
            );
            None
        }
        Some(k) => c.secret(line, "server.admin_key", k),
        None => None,
    };
    let metrics_key = s
        .metrics_key
        .as_ref()
        .and_then(|k| c.secret(line, "server.metrics_key", k));
    if let (Some(a), Some(m)) = (&admin_key, &metrics_key) {
        if a == m {
            c.push(
                line,
                "server.metrics_key",
                "equals server.admin_key: the scraper would hold the admin API; give each its own secret",
            );
        }
    }
    (admin_key, metrics_key)
}

/// `max_connections` and `max_model_labels`, within their bounds.
fn bounds(c: &mut Checker<'_>, line: Option<usize>, s: &RawServer) -> (usize, usize) {
    let max_connections = match s.max_connections {
        None => 10_000,
        Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => n as usize,
        Some(_) => {
            c.push(
                line,
                "server.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            );
            10_000
        }
    };
    let max_model_labels = match s.max_model_labels {
        None => 100,
        Some(n) if n <= 10_000 => n as usize,
        Some(_) => {
            c.push(
                line,
                "server.max_model_labels",
                "must be between 0 and 10000 (each distinct value is a metrics series)",
            );
            100
        }
    };
    (max_connections, max_model_labels)
}
