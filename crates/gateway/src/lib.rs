//! The Laneway gateway: an OpenAI-compatible HTTP server in front of lanes.
//!
//! # Layout
//! - [`server`]: the router and the request-id middleware.
//! - [`proxy`]: the OpenAI endpoints, from body to relayed response (the request path).
//! - [`body`]: the relayed response body, which owns the request's permit.
//! - [`respond`]: the one place errors become responses.
//! - [`runtime`]: the configuration in force as live lanes, routes and keys; swapped on reload.
//! - [`table`]: every request in the gateway, for the admin API and the panel.
//! - [`ledger`]: the request log line and per-request metrics.
//! - [`retry`]: backoff and the retry budget.
//! - [`metrics`], [`ops`], [`admin`], [`ui`]: the operator surface.

pub mod admin;
pub mod body;
pub mod ledger;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod respond;
pub mod retry;
pub mod runtime;
pub mod server;
pub mod table;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use laneway_config::Config;
use laneway_upstream::UpstreamClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::{Mocks, Runtime};

/// Shared state of a running gateway.
pub struct App {
    pub rt: ArcSwap<Runtime>,
    pub table: Arc<table::Table>,
    pub client: UpstreamClient,
    pub metrics: metrics::Metrics,
    pub mocks: Mocks,
    /// The file reloads read; `None` for the built-in demo.
    pub config_path: Option<PathBuf>,
    pub draining: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
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
        let rt = Runtime::build(config, None, &mocks).await?;
        Ok(Arc::new(Self {
            rt: ArcSwap::from_pointee(rt),
            table: Arc::default(),
            client: UpstreamClient::new(connect),
            metrics: metrics::Metrics::default(),
            mocks,
            config_path,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
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
        let old = self.rt.load_full();
        let rt = Runtime::build(config, Some(&old), &self.mocks)
            .await
            .map_err(|e| format!("could not start a mock lane: {e}"))?;
        self.rt.store(Arc::new(rt));
        tracing::info!(path = %path.display(), "configuration reloaded");
        Ok(())
    }
}

/// A gateway serving on a socket.
pub struct Gateway {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds `listen` (or the config's `server.listen`) and serves in the background.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        listen: Option<SocketAddr>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen.unwrap_or(config.server.listen)).await?;
        let addr = listener.local_addr()?;
        let app = App::new(config, config_path).await?;
        let shutdown = CancellationToken::new();
        let router = server::router(app.clone());
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server stopped");
            }
        });
        Ok(Self {
            addr,
            app,
            shutdown,
            task,
        })
    }

    /// Stops accepting, lets running requests finish for up to `shutdown_grace`, then returns.
    /// Returns how many requests were still running when the grace ran out.
    pub async fn drain(self) -> usize {
        self.app.draining.store(true, Ordering::Release);
        let grace = self.app.rt.load().config.server.shutdown_grace;
        self.shutdown.cancel();
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(_) => 0,
            Err(_) => {
                let left = self.app.table.len();
                task.abort();
                left
            }
        }
    }
}
