//! `[[key]]`: client keys and their limits, and how they sit with the server's own keys.

use std::collections::HashSet;
use std::num::NonZeroU32;

use super::check::Checker;
use crate::model::*;
use crate::raw::RawKey;

pub(super) fn keys(c: &mut Checker<'_>, raw: &[toml::Spanned<RawKey>]) -> Vec<KeyConfig> {
    let mut keys = Vec::with_capacity(raw.len());
    let mut key_names = HashSet::new();
    let mut secrets = HashSet::new();
    for (i, spanned) in raw.iter().enumerate() {
        let line = c.line(&spanned.span());
        let k = spanned.get_ref();
        let p = format!("key[{i}]");
        if k.name.0.is_empty() {
            c.push(line, format!("{p}.name"), "must not be empty");
        } else if k.name.0 == "-" {
            c.push(
                line,
                format!("{p}.name"),
                "`-` is the name logs and metrics give requests without a key; choose another",
            );
        } else if !key_names.insert(k.name.0.clone()) {
            c.push(
                line,
                format!("{p}.name"),
                format!("key `{}` is defined twice", k.name.0),
            );
        }
        if k.key.0.is_empty() {
            c.push(line, format!("{p}.key"), "must not be empty");
        } else if !c.clean(line, &format!("{p}.key"), &k.key.0) {
            // Said already.
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
            key: laneway_core::Secret::new(k.key.0.clone()),
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
            on_limit: k.on_limit.unwrap_or(OnLimit::Reject),
        });
    }
    keys
}

/// The server's own keys must not double as client keys, and a gateway declared open has none.
pub(super) fn against_server(
    c: &mut Checker<'_>,
    raw: &[toml::Spanned<RawKey>],
    keys: &[KeyConfig],
    server: &ServerConfig,
) {
    for (i, (k, spanned)) in keys.iter().zip(raw).enumerate() {
        let line = c.line(&spanned.span());
        let same = |other: &Option<laneway_core::Secret<String>>| {
            other.as_ref().is_some_and(|o| o.expose() == k.key.expose())
        };
        if same(&server.admin_key) {
            c.push(
                line,
                format!("key[{i}].key"),
                "equals server.admin_key: a client with it could run the admin API",
            );
        }
        if same(&server.metrics_key) {
            c.push(
                line,
                format!("key[{i}].key"),
                "equals server.metrics_key; give each its own secret",
            );
        }
    }
    if server.auth == Auth::None && !keys.is_empty() {
        c.push(
            c.section_line(raw.first()),
            "server.auth",
            "is \"none\" but [[key]]s are listed: remove the keys, or the auth line to require them",
        );
    }
}
