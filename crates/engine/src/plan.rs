//! What every attempt of one request needs to know about it.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use laneway_core::wire::{Endpoint, RequestMeta};
use tokio::time::Instant;

use crate::table::Entry;
use crate::topology::{KeyLive, Topology};
use crate::Engine;

/// Everything about the request that every attempt needs.
pub struct Plan<'a> {
    pub engine: &'a Arc<Engine>,
    pub topo: &'a Topology,
    pub entry: &'a Arc<Entry>,
    pub key: &'a KeyLive,
    pub meta: &'a RequestMeta,
    pub body: &'a Bytes,
    pub endpoint: Endpoint,
    pub priority: i32,
    pub tokens: u64,
    pub deadline: Instant,
    /// The only pool position the request may run on (see [`crate::route::Prepared::pin`]).
    pub pin: Option<usize>,
    /// Client headers passed upstream.
    pub pass: Option<&'a HeaderMap>,
}
