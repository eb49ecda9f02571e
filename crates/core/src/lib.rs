//! Shared vocabulary of Laneway's crates.
//!
//! # Layout
//! - [`error`]: the catalogue of gateway error codes and the OpenAI error envelope. Every crate
//!   speaks in [`error::ApiError`]; exactly one place in the gateway turns it into a response.
//! - [`wire`]: reads the few fields Laneway needs (`model`, `stream`, `max_tokens`, …) from a
//!   request body without re-serialising it, and rewrites the model name in place.
//! - [`secret`]: [`Secret`], a wrapper whose `Debug`/`Display`/`Serialize` never print the value.
//! - [`glob`]: the tiny `*`/`?` matcher used for model patterns.
//! - [`id`]: request ids.
//! - [`duration`]: durations read from outside, saturating and capped.

pub mod duration;
pub mod error;
pub mod form;
pub mod glob;
pub mod id;
pub mod record;
pub mod secret;
pub mod wire;

pub use error::{ApiError, ErrorCode};
pub use secret::{redact_url, Secret};
