//! Laneway's engine: the life of one request from admission to its answer, with no HTTP server,
//! metrics registry or database in it. The server (`laneway-server`), the Batch API
//! (`laneway-batches`) and the library (`laneway-batch`) all drive requests through it.
//!
//! # Layout
//! - [`topology`]: the configuration in force as live lanes, routes and keys; swapped on reload.
//! - [`auth`]: who a request is (its ids) and which key it presents.
//! - [`route`]: a body read, routed, checked against its key and registered in [`table`].
//! - [`forward`]: admission on the route's pool, retries that prefer another lane, fallbacks.
//! - [`attempt`]: one upstream call and its verdict, fed back to the lane's health.
//! - [`retry`]: backoff, the delay before a retry, the retry budget.
//! - `shared`: the limits shared by replicas (the store), held around an attempt.
//! - [`relay`]: an answer with everything the request holds until its body ends ([`body`]).
//! - [`call`]: requests that start in the process (Batch API items, the library).
//! - [`ledger`]: what happened to one request, recorded once at its end.
//! - [`responses`]: which lane made each Responses API id.
//! - [`error`]: the one error type; [`render`]: every form a refusal takes.
//! - [`observe`]: what the engine tells its listener (the server's metrics).

pub mod attempt;
pub mod auth;
pub mod body;
pub mod call;
pub mod error;
pub mod forward;
pub mod ids;
pub mod label;
pub mod ledger;
pub mod names;
pub mod observe;
pub mod plan;
pub mod relay;
pub mod render;
pub mod responses;
pub mod retry;
pub mod route;
mod shared;
pub mod table;
pub mod topology;

pub use call::Whole;
pub use error::Error;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use laneway_admission::shared::SharedLimits;
use laneway_config::Config;
use laneway_upstream::UpstreamClient;

use crate::observe::{Observe, Quiet};
use crate::responses::{IdRecord, ResponseLanes};
use crate::topology::Topology;

/// Starts the upstream of a `kind = "mock"` lane and gives its URL. The binary supplies one
/// (it owns `laneway mock`); an engine without one refuses such lanes.
pub trait MockLanes: Send + Sync {
    fn url_for<'a>(
        &'a self,
        lane: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<String>> + Send + 'a>>;
}

/// What an engine is built with beside its config; every part is optional.
#[derive(Default)]
pub struct Parts {
    /// Who listens to the engine (the server's metrics); nobody by default.
    pub observer: Option<Arc<dyn Observe>>,
    /// Starts `kind = "mock"` lanes.
    pub mocks: Option<Arc<dyn MockLanes>>,
    /// Where response ids are kept beyond this process's memory.
    pub ids: Option<Arc<dyn IdRecord>>,
    /// The limits shared with other replicas; required when the config's `[limits]` names a
    /// store (`laneway_store::from_config` opens the Redis one).
    pub limits: Option<Arc<dyn SharedLimits>>,
}

/// The engine of a running gateway or library: the live topology and what outlives a reload.
pub struct Engine {
    pub topo: ArcSwap<Topology>,
    /// Every request inside, queued or running.
    pub table: Arc<table::Table>,
    /// The limits shared with other replicas; `None` with `store = "memory"`.
    pub store: Option<Arc<dyn SharedLimits>>,
    /// Which lane made each Responses API id.
    pub responses: ResponseLanes,
    observer: Arc<dyn Observe>,
    mocks: Option<Arc<dyn MockLanes>>,
}

impl Engine {
    pub async fn new(config: Config, parts: Parts) -> std::io::Result<Arc<Self>> {
        if config.limits.is_shared() && parts.limits.is_none() {
            // Its lanes count no rates of their own: they are the store's.
            return Err(std::io::Error::other(
                "[limits] names a shared store, but none was opened for this engine",
            ));
        }
        let store = parts.limits;
        let topo = Topology::build(config, None, parts.mocks.as_deref()).await?;
        Ok(Arc::new(Self {
            topo: ArcSwap::from_pointee(topo),
            table: Arc::default(),
            store,
            responses: ResponseLanes::new(parts.ids),
            observer: parts.observer.unwrap_or_else(|| Arc::new(Quiet)),
            mocks: parts.mocks,
        }))
    }

    /// Builds the topology of `config`, carrying over the lanes and keys of the one in force,
    /// and swaps it in.
    pub async fn swap(&self, config: Config) -> std::io::Result<()> {
        let old = self.topo.load_full();
        let topo = Topology::build(config, Some(&old), self.mocks.as_deref()).await?;
        self.topo.store(Arc::new(topo));
        Ok(())
    }

    /// Who listens to this engine.
    pub fn observer(&self) -> &dyn Observe {
        &*self.observer
    }

    /// Serve on local limits while the shared store is down (else refuse with 503).
    pub fn fail_open(&self) -> bool {
        self.topo.load().config.limits.fail_open
    }

    /// The upstream client of the current thread. Each serving thread keeps its own connection
    /// pool, so a request and its upstream connection stay on one thread: no cross-thread
    /// wake-ups on the hot path, and no pool lock shared by every core. Each lane's own
    /// `connect_timeout` travels with its targets; this one is only the fallback.
    pub fn client(&self) -> UpstreamClient {
        thread_local! {
            static CLIENT: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
        }
        CLIENT.with(|c| {
            c.get_or_init(|| UpstreamClient::new(Duration::from_secs(10)))
                .clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_config_with_a_shared_store_needs_one_given() {
        // Lanes of such a config count no rates themselves: without the store they would
        // enforce none.
        let config = Config::parse(
            "[[lane]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/v1\"\nrpm = 10\n\
             [[route]]\nmodel = \"*\"\nlanes = [\"a\"]\n\
             [limits]\nstore = \"redis://127.0.0.1:9\"\n",
        )
        .unwrap();
        let e = Engine::new(config, Parts::default()).await.err().unwrap();
        assert!(e.to_string().contains("shared store"), "{e}");
    }
}
