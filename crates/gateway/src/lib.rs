//! The Laneway gateway: an OpenAI-compatible HTTP server in front of lanes.
//!
//! # Layout
//! - [`auth`]: who is asking: the request's ids, client keys, the admin key, the metrics key
//!   (constant-time comparisons).
//! - [`label`]: names shared by metrics, the request table and the topology; `names`: the header
//!   names Laneway sets, built once.
//! - [`conn`]: client connections: accept, header/idle timeouts, the connection limit.
//! - [`server`]: the router and the middleware every request passes (ids, panics, error shape).
//! - [`proxy`]: the OpenAI endpoints, from body to relayed response (the request path).
//! - [`forward`]: admission on the route's pool, retries that prefer another lane, fallbacks.
//! - [`attempt`]: one upstream call and its verdict, fed back to the lane's health.
//! - [`body`]: the relayed response body, which owns the request's permit.
//! - [`waiting`]: streams that wait in a queue start at once and report where they stand.
//! - [`respond`]: the one place errors become responses.
//! - [`topology`]: the configuration in force as live lanes, routes and keys; swapped on reload.
//! - [`table`]: every request in the gateway, for the admin API and the panel.
//! - [`ledger`]: the request log line and per-request metrics.
//! - [`retry`]: backoff, the delay before a retry, and the retry budget.
//! - [`reload`]: what a reload changes, and the changes that would weaken access it refuses.
//! - [`catalog`]: the model ids `/v1/models` lists, with upstream discovery for patterns.
//! - [`control`]: lane controls at run time (pause, resume, drain, concurrency by hand).
//! - `inside`: requests that start in the process (batch items, [`App::call_whole`]) on the request
//!   path without HTTP.
//! - [`batch`]: the OpenAI Batch API (`/v1/files`, `/v1/batches`), durable in SQLite, its items
//!   below every interactive request in the lanes' queues.
//! - [`metrics`], [`ops`], [`admin`], [`ui`]: the operator surface; [`views`]: what the
//!   admin API and the panel show.

pub mod admin;
pub mod attempt;
pub mod auth;
pub mod batch;
pub mod body;
pub mod catalog;
pub mod conn;
pub mod control;
pub mod forward;
mod inside;
pub use inside::Whole;
pub mod label;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod respond;
pub mod responses;
pub mod retry;
pub mod server;
mod shared;
pub mod table;
pub mod topology;
pub mod ui;
pub mod views;
pub mod waiting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use laneway_config::Config;
use laneway_upstream::UpstreamClient;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::topology::{Mocks, Topology};

/// Shared state of a running gateway.
pub struct App {
    pub topo: ArcSwap<Topology>,
    pub table: Arc<table::Table>,
    connect_timeout: Duration,
    pub metrics: metrics::Metrics,
    pub mocks: Mocks,
    /// The file reloads read; `None` for the built-in demo.
    pub config_path: Option<PathBuf>,
    pub draining: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
    pub conns: Arc<conn::Conns>,
    pub catalog: catalog::Catalog,
    /// Where queued requests stand, shared by the streams that report it.
    pub standings: views::StandingCache,
    /// The limit store shared with other replicas; `None` with `store = "memory"`.
    pub store: Option<laneway_store::Store>,
    /// Serve on local limits while the shared store is down (else refuse with 503).
    pub fail_open: bool,
    /// Batch API files and batches.
    pub batches: batch::Batches,
    /// Which lane made each Responses API id.
    pub responses: responses::ResponseLanes,
}

impl App {
    pub async fn new(config: Config, config_path: Option<PathBuf>) -> std::io::Result<Arc<Self>> {
        let mocks = Mocks::default();
        let connect = config
            .lanes
            .iter()
            .map(|l| l.connect_timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let store = match &config.limits.store {
            laneway_config::LimitStore::Memory => None,
            laneway_config::LimitStore::Redis(url) => Some(
                laneway_store::Store::open(laneway_store::Options {
                    url: url.expose().clone(),
                    prefix: config.limits.prefix.clone(),
                    timeout: config.limits.timeout,
                    lease: config.limits.lease,
                    fail_open: config.limits.fail_open,
                })
                .map_err(std::io::Error::other)?,
            ),
        };
        let fail_open = config.limits.fail_open;
        let batches = batch::Batches::new(config.storage.clone());
        let topo = Topology::build(config, None, &mocks).await?;
        Ok(Arc::new(Self {
            topo: ArcSwap::from_pointee(topo),
            table: Arc::default(),
            connect_timeout: connect,
            metrics: metrics::Metrics::default(),
            mocks,
            config_path,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            conns: Arc::default(),
            catalog: catalog::Catalog::default(),
            standings: views::StandingCache::default(),
            store,
            fail_open,
            batches,
            responses: responses::ResponseLanes::default(),
        }))
    }

    /// The upstream client of the current thread. Each serving thread keeps its own connection
    /// pool, so a request and its upstream connection stay on one thread: no cross-thread
    /// wake-ups on the hot path, and no pool lock shared by every core.
    pub fn client(&self) -> UpstreamClient {
        thread_local! {
            static CLIENT: std::cell::OnceCell<UpstreamClient> = const { std::cell::OnceCell::new() };
        }
        CLIENT.with(|c| {
            c.get_or_init(|| UpstreamClient::new(self.connect_timeout))
                .clone()
        })
    }

    /// Re-reads the config file and swaps it in; on any problem the old config stays and the
    /// problems are returned in `laneway check`'s words.
    pub async fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = self
            .config_path
            .as_ref()
            .ok_or("the gateway runs the built-in demo; there is no config file to reload")?;
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let old = self.topo.load_full();
        if let Some(why) = reload::weakens_access(&old.config, &config) {
            tracing::warn!(path = %path.display(), "reload refused: {why}");
            return Err(why);
        }
        // The store's connection and where rates are counted are fixed at start.
        if old.config.storage != config.storage {
            let why = "the [storage] section changed; it takes effect on restart, so the reload \
                       is refused (undo the change to reload the rest)"
                .to_owned();
            tracing::warn!(path = %path.display(), "reload refused: {why}");
            return Err(why);
        }
        if old.config.limits != config.limits {
            let why = "the [limits] section changed; it takes effect on restart, so the reload is \
                       refused (undo the change to reload the rest)"
                .to_owned();
            tracing::warn!(path = %path.display(), "reload refused: {why}");
            return Err(why);
        }
        let changes = reload::describe_changes(&old.config, &config);
        let topo = Topology::build(config, Some(&old), &self.mocks)
            .await
            .map_err(|e| format!("could not start a mock lane: {e}"))?;
        self.topo.store(Arc::new(topo));
        tracing::info!(path = %path.display(), "configuration reloaded");
        for change in changes {
            tracing::info!(target: "laneway::reload", "{change}");
        }
        Ok(())
    }
}

/// A gateway serving on a socket.
pub struct Gateway {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: CancellationToken,
}

/// Binds `addr` for this process alone. `SO_REUSEADDR` only lets a restart bind while old
/// connections sit in TIME_WAIT; `SO_REUSEPORT` is never set, because the kernel lets any
/// process of the same user join such a port and take a share of its connections, so a second
/// gateway (an open demo, say) could answer half of a keyed gateway's clients. A port in use
/// is an error at start.
fn exclusive_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(1024)
}

impl Gateway {
    /// Binds `listen` (or the config's `server.listen`) and serves on the caller's runtime.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        listen: Option<SocketAddr>,
    ) -> std::io::Result<Self> {
        Self::start_with(config, config_path, listen, 0).await
    }

    /// Like [`Gateway::start`], with `workers` extra threads (thread per core) each running
    /// its own single-threaded runtime and accepting from the one listening socket (each holds
    /// a duplicate of its descriptor; the kernel hands every connection to one of them). Requests
    /// then live entirely on one thread, as in nginx's worker model; lanes, keys and the request
    /// table are still shared. `0` serves on the caller's runtime.
    pub async fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        listen: Option<SocketAddr>,
        workers: usize,
    ) -> std::io::Result<Self> {
        let listener = exclusive_listener(listen.unwrap_or(config.server.listen))?;
        let addr = listener.local_addr()?;
        let app = App::new(config, config_path).await?;
        batch::resume(&app).await?;
        let shutdown = CancellationToken::new();
        let router = server::router(app.clone());
        if workers == 0 {
            let tasks = tokio_util::task::TaskTracker::new();
            tokio::spawn(conn::accept_loop(
                listener,
                app.clone(),
                router,
                shutdown.clone(),
                tasks,
            ));
        } else {
            let listener = listener.into_std()?;
            for i in 0..workers {
                let (app, router, token) = (app.clone(), router.clone(), shutdown.clone());
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let listener = {
                    let _enter = runtime.enter();
                    TcpListener::from_std(listener.try_clone()?)?
                };
                std::thread::Builder::new()
                    .name(format!("laneway-worker-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            let tasks = tokio_util::task::TaskTracker::new();
                            conn::accept_loop(listener, app, router, token, tasks.clone()).await;
                            // Connections live on this thread's runtime: let the ones serving a
                            // request finish before it goes.
                            tasks.close();
                            tasks.wait().await;
                        })
                    })?;
            }
        }
        Ok(Self {
            addr,
            app,
            shutdown,
        })
    }

    /// Stops accepting, closes idle and half-sent connections, lets running requests finish for
    /// up to `shutdown_grace`, then returns how many were still running when the grace ran out.
    pub async fn drain(self) -> usize {
        self.app.draining.store(true, Ordering::Release);
        // Batches take no new items; what they had not recorded runs after a restart.
        self.app.batches.stop();
        let grace = self.app.topo.load().config.server.shutdown_grace;
        self.shutdown.cancel();
        let app = &self.app;
        let finished = async {
            // Only while shutting down: a short poll is simpler than a notification on every
            // request's end.
            while !(app.table.is_empty() && app.conns.responding() == 0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(grace, finished).await {
            Ok(()) => 0,
            Err(_) => app.table.len().max(app.conns.responding()),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
