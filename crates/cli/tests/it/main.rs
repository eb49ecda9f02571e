//! Laneway's integration tests: real gateways and mock upstreams on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

mod admin;
mod admission;
mod batches;
mod binary;
mod conns;
mod control;
mod endpoints;
mod errors;
mod fleet;
mod hostile;
mod mock;
mod onwards;
mod proxy;
mod resilience;
mod shared;
mod util;
mod waiting;
