//! `[[lane]]` and `[[route]]`: upstreams and which model ids reach them.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use super::check::Checker;
use crate::model::*;
use crate::raw::{RawLane, RawRoute};

/// A local server runs one request at a time unless told otherwise.
const LOCAL_CONCURRENCY: NonZeroU32 = NonZeroU32::MIN;

pub(super) fn lanes(c: &mut Checker<'_>, raw: &[toml::Spanned<RawLane>]) -> Vec<LaneConfig> {
    let mut lanes = Vec::with_capacity(raw.len());
    let mut lane_names = HashSet::new();
    for (i, spanned) in raw.iter().enumerate() {
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
        let kind = l.kind.unwrap_or(LaneKind::OpenAi);
        let url = lane_url(c, line, &p, l, kind);
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
        let queue = lane_queue(c, line, &p, l);
        lanes.push(LaneConfig {
            name,
            url,
            api_key: l
                .api_key
                .as_ref()
                .and_then(|k| c.secret(line, &format!("{p}.api_key"), k)),
            models: l.models.iter().flatten().map(|m| m.0.clone()).collect(),
            model: l.model.as_ref().map(|m| m.0.clone()),
            kind,
            api: l.api.unwrap_or_default(),
            limits,
            queue,
            adaptive: l.adaptive.unwrap_or(false),
            on_limit: l.on_limit.unwrap_or(OnLimit::Queue),
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
    lanes
}

/// The lane's base URL, checked: `http(s)://` with a host; none for a mock lane.
fn lane_url(
    c: &mut Checker<'_>,
    line: Option<usize>,
    p: &str,
    l: &RawLane,
    kind: LaneKind,
) -> String {
    match (&l.url, kind) {
        (Some(u), _) => {
            let u = u.0.trim_end_matches('/').to_string();
            if !c.clean(line, &format!("{p}.url"), &u) {
                // Said already.
            } else if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
                c.push(
                    line,
                    format!("{p}.url"),
                    format!(
                        "`{}` is not an http:// or https:// URL",
                        laneway_core::redact_url(&u)
                    ),
                );
            } else if !has_host(&u) {
                c.push(
                    line,
                    format!("{p}.url"),
                    format!(
                        "`{}` does not parse as a URL with a host",
                        laneway_core::redact_url(&u)
                    ),
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
    }
}

/// The lane's queue: its length and how long a request may wait in it.
fn lane_queue(c: &mut Checker<'_>, line: Option<usize>, p: &str, l: &RawLane) -> QueueConfig {
    match &l.queue {
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
    }
}

pub(super) fn routes(
    c: &mut Checker<'_>,
    raw: &[toml::Spanned<RawRoute>],
    lanes: &[LaneConfig],
) -> Vec<RouteConfig> {
    let mut routes = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
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
            fallback_routes: Vec::new(),
        });
    }
    for (i, spanned) in raw.iter().enumerate() {
        let line = c.line(&spanned.span());
        for (j, f) in routes[i].fallbacks.clone().iter().enumerate() {
            // A fallback pattern must lead somewhere other than back into its own route.
            let target = crate::fallback_target(&routes, f);
            if let Some(t) = target {
                routes[i].fallback_routes.push(t);
            }
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
    routes
}

/// Whether `url` parses as the HTTP client will read it, with a host to connect to.
fn has_host(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| !a.host().is_empty()))
        .unwrap_or(false)
}
