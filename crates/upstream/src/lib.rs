//! Laneway's side of the conversation with upstreams.
//!
//! # Layout
//! - [`client`]: one pooled HTTP/1.1 client (plain HTTP for local servers, rustls with bundled
//!   roots for hosted providers) with connect and first-byte timeouts.
//! - `pool`: its connections, driven by the requests that use them instead of tasks of their
//!   own; a response body ([`UpstreamBody`]) reads its connection and returns it when done.
//! - [`classify`]: what an upstream answer means: success, retryable or final, and the hints in
//!   `Retry-After`, `retry-after-ms` and `x-ratelimit-*`.
//! - [`sse`]: watches a response body go by to learn its token usage, and removes the usage chunk
//!   Laneway asked for on the client's behalf.
//! - [`Target`]: a lane's URL and key, checked and split once for every request sent to it.
//! - [`models`]: an upstream's `/v1/models` list, read within bounds.
//! - [`error`]: transport failures, each saying whether a retry may help.

pub mod classify;
pub mod client;
pub mod error;
pub mod models;
mod pool;
pub mod sse;
mod target;

pub use classify::{Hints, Outcome};
pub use client::{UpstreamClient, UpstreamRequest};
pub use error::UpstreamError;
pub use pool::UpstreamBody;
pub use target::{Auth, Endpoints, Target, ANTHROPIC_VERSION, X_REQUEST_ID};
