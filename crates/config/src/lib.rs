//! Laneway's configuration, read in two stages.
//!
//! # Layout
//! - [`raw`]: the TOML file as written (`deny_unknown_fields`, `${ENV}` substitution).
//! - [`validate`]: raw → [`Config`], collecting every problem with its line and key path.
//! - [`model`]: the validated types the rest of Laneway uses; they cannot hold invalid values.
//! - [`builder`]: a config built in code, written as TOML and validated like a file.
//! - [`describe`]: the effective configuration as `laneway check` prints it, secrets masked.
//! - [`error`]: [`ConfigError`], one entry per problem.
//! - [`onwards`]: Onwards JSON configs, translated to Laneway TOML and then validated as such.

pub mod builder;
pub mod describe;
pub mod env;
pub mod error;
pub mod model;
pub mod onwards;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use model::*;

impl Config {
    /// Reads and validates a config file.
    /// An Onwards JSON config (a file whose text starts with `{`) is read as it is.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        let parsed = if onwards::is_json(&text) {
            onwards::to_toml(&text, false).and_then(|toml| {
                Self::parse(&toml).map_err(|mut e| {
                    // Lines of the translation mean nothing in the JSON file; paths still do.
                    for p in &mut e.problems {
                        p.line = None;
                        p.message.push_str(
                            " (in the Laneway translation; `laneway import FILE` prints it)",
                        );
                    }
                    e
                })
            })
        } else {
            Self::parse(&text)
        };
        parsed.map_err(|mut e| {
            e.file = Some(path.to_owned());
            e
        })
    }

    /// Parses and validates config text with `vars` as the environment `${NAME}` reads, for
    /// callers (tests, embedders) that must not touch the process environment.
    pub fn parse_with_vars(
        text: &str,
        vars: std::collections::HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        env::with_vars(vars, || Self::parse(text))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // Reading stops at the first problem serde meets; unset variables are all found first,
        // so that one run names every one of them.
        let unset = env::unset_in(text);
        if unset.len() > 1 {
            return Err(ConfigError {
                file: None,
                problems: unset
                    .into_iter()
                    .map(|(line, path, name)| Problem {
                        line: Some(line),
                        path,
                        message: format!("environment variable `{name}` is not set"),
                    })
                    .collect(),
            });
        }
        let de = toml::Deserializer::new(text);
        let raw: raw::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned tables show up in the path under serde's private name; users never wrote it.
            let path = e
                .path()
                .to_string()
                .split('.')
                .filter(|seg| !seg.contains("$__serde_spanned"))
                .collect::<Vec<_>>()
                .join(".");
            let inner = e.into_inner();
            let span = inner.span().map(|s| s.start);
            let path = match path.as_str() {
                // The TOML itself failed (a number too large, say) before serde saw a key: the
                // key written on that line names it.
                "" | "." => span
                    .and_then(|s| error::key_at(text, s))
                    .unwrap_or_default(),
                _ => path,
            };
            ConfigError {
                file: None,
                problems: vec![Problem {
                    line: span.map(|s| error::line_of(text, s)),
                    path,
                    message: error::plain_types(inner.message().trim()),
                }],
            }
        })?;
        validate::validate(raw, text).map_err(|problems| ConfigError {
            file: None,
            problems,
        })
    }

    /// The built-in demo: one in-process mock lane named `mock` serving `mock-*`, no auth.
    /// Its `storage.path` is the default; `laneway serve` points it at a fresh private
    /// directory of its own for the demo's Batch API files and batches.
    pub fn demo() -> Self {
        Self::parse(
            r#"
            [[lane]]
            name = "mock"
            kind = "mock"

            [[route]]
            model = "mock-*"
            lanes = ["mock"]
            "#,
        )
        .expect("the demo config is valid")
    }

    /// The first route whose pattern matches the model: the one rule that routes a request.
    pub fn route_for(&self, model: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| laneway_core::glob::matches(&r.model, model))
    }
}

/// The route a fallback leads to: the route written with that same pattern, or the first route
/// whose pattern matches the fallback as a literal model id.
fn fallback_target(routes: &[RouteConfig], fallback: &str) -> Option<usize> {
    use laneway_core::glob;
    routes.iter().position(|r| r.model == fallback).or_else(|| {
        glob::is_literal(fallback)
            .then(|| {
                routes
                    .iter()
                    .position(|r| glob::matches(&r.model, fallback))
            })
            .flatten()
    })
}

#[cfg(test)]
mod tests;
