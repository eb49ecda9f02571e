//! Laneway's HTTP server: an OpenAI-compatible gateway in front of lanes.
//!
//! Requests run through the engine (`laneway-engine`); this crate is what sits between it and
//! a socket, and the operator's surface.
//!
//! # Layout
//! - [`conn`]: client connections: accept, header/idle timeouts, the connection limit.
//! - [`server`]: the router and the middleware every request passes (ids, panics, error shape).
//! - [`proxy`]: the OpenAI endpoints: a request read and handed to the engine, the answer
//!   relayed.
//! - [`waiting`]: streams that wait in a queue start at once and report where they stand.
//! - [`responses`]: calls on a Responses API id, sent to the lane that made it.
//! - [`respond`]: an engine error as an axum response (rendered by `laneway_engine::render`).
//! - [`auth`]: the admin and metrics keys (client keys are the engine's).
//! - [`reload`]: what a reload changes, and the changes it refuses.
//! - [`catalog`]: the model ids `/v1/models` lists, with upstream discovery for patterns.
//! - [`control`]: lane controls at run time (pause, resume, drain, concurrency by hand).
//! - [`metrics`], [`ops`], [`admin`], [`ui`]: the operator surface; [`views`]: what the
//!   admin API and the panel show.
//!
//! The Batch API (`laneway-batches`) stands beside this crate; the router mounts its routes.

pub mod admin;
mod around;
pub mod auth;
pub mod catalog;
pub mod conn;
pub mod control;
pub mod fleet;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod responses;
pub mod server;
#[cfg(test)]
mod sizes_tests;
pub mod ui;
pub mod views;
pub mod waiting;

pub use laneway_engine::{label, names};

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use laneway_batches::{Api, Batches};
use laneway_config::Config;
use laneway_engine::{Engine, MockLanes, Parts};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// Shared state of a running gateway: the engine requests run through, and what the HTTP
/// surface adds around it. Reads of the engine's state go through `Deref`.
pub struct App {
    engine: Arc<Engine>,
    pub metrics: Arc<metrics::Metrics>,
    /// The file reloads read; `None` for the built-in demo.
    pub config_path: Option<PathBuf>,
    pub draining: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
    pub conns: Arc<conn::Conns>,
    pub catalog: catalog::Catalog,
    /// Where queued requests stand, shared by the streams that report it.
    pub standings: views::StandingCache,
    /// The Batch API (files and batches), beside the server.
    pub batches: Arc<Api>,
    /// The limit store shared with other replicas (the engine holds it too, as a trait
    /// object); here for its health and gauges. `None` with `store = "memory"`.
    pub store: Option<laneway_store::Store>,
    /// This replica's part in a fleet sharing the store: one admin view, actions for all.
    pub fleet: Option<fleet::Fleet>,
}

impl Deref for App {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl App {
    pub async fn new(
        config: Config,
        config_path: Option<PathBuf>,
        mocks: Option<Arc<dyn MockLanes>>,
    ) -> std::io::Result<Arc<Self>> {
        let metrics = Arc::new(metrics::Metrics::default());
        let batches = Batches::new(config.storage.clone());
        let store = laneway_store::from_config(&config.limits)?;
        let parts = Parts {
            observer: Some(metrics.clone()),
            mocks,
            // With a shared store every replica finds the lane of an id any replica made; on one
            // machine the storage database keeps them across restarts.
            ids: Some(match &store {
                Some(s) => Arc::new(s.clone()) as Arc<dyn laneway_core::record::IdRecord>,
                None => batches.id_record(),
            }),
            limits: store
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn laneway_admission::shared::SharedLimits>),
        };
        let engine = Engine::new(config, parts).await?;
        Ok(Arc::new(Self {
            batches: Arc::new(Api {
                engine: engine.clone(),
                batches,
            }),
            engine,
            metrics,
            fleet: store.clone().map(fleet::Fleet::new),
            store,
            config_path,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            conns: Arc::default(),
            catalog: catalog::Catalog::default(),
            standings: views::StandingCache::default(),
        }))
    }

    /// The engine requests run through.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
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
        let refusal = reload::weakens_access(&old.config, &config)
            .or_else(|| reload::needs_restart(&old.config, &config));
        if let Some(why) = refusal {
            tracing::warn!(path = %path.display(), "reload refused: {why}");
            return Err(why);
        }
        let changes = reload::describe_changes(&old.config, &config);
        self.engine
            .swap(config)
            .await
            .map_err(|e| format!("could not start a mock lane: {e}"))?;
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
        Self::start_with(config, config_path, listen, 0, None).await
    }

    /// Like [`Gateway::start`], with `workers` extra threads (thread per core) each running
    /// its own single-threaded runtime and accepting from the one listening socket (each holds
    /// a duplicate of its descriptor; the kernel hands every connection to one of them). Requests
    /// then live entirely on one thread, as in nginx's worker model; lanes, keys and the request
    /// table are still shared. `0` serves on the caller's runtime. `mocks` starts the lanes of
    /// `kind = "mock"` (the binary supplies it; without it such lanes are refused).
    pub async fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        listen: Option<SocketAddr>,
        workers: usize,
        mocks: Option<Arc<dyn MockLanes>>,
    ) -> std::io::Result<Self> {
        let listener = exclusive_listener(listen.unwrap_or(config.server.listen))?;
        let addr = listener.local_addr()?;
        let app = App::new(config, config_path, mocks).await?;
        laneway_batches::resume(&app.batches).await?;
        fleet::spawn(&app, admin::act_here);
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
        self.app.batches.batches.stop();
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
