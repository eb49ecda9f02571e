//! `laneway serve`: load the config (or the built-in demo), serve, reload on SIGHUP, drain on
//! SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use laneway_config::{Config, LogFormat};
use laneway_server::Gateway;

#[derive(clap::Args)]
pub struct Args {
    /// Config file (default: ./laneway.toml if present, else the built-in demo)
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, overriding server.listen; port 0 picks a free port
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serving threads, each with its own runtime and connection pool (default: one per core;
    /// 0 serves on one shared multi-threaded runtime)
    #[arg(long)]
    workers: Option<usize>,
    /// Request log format: text or json (overrides server.log_format)
    #[arg(long)]
    log_format: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let default = PathBuf::from("laneway.toml");
    let path = a
        .config
        .clone()
        .or_else(|| default.exists().then_some(default));
    let mut config = match &path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => Config::demo(),
    };
    let json = match a.log_format.as_deref() {
        Some("json") => true,
        Some("text") => false,
        Some(other) => anyhow::bail!("--log-format must be text or json, not `{other}`"),
        None => config.server.log_format == LogFormat::Json,
    };
    crate::logging::init(json);
    let demo = path.is_none();
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // The demo keeps its Batch API files in a directory made for this run alone (random name,
    // 0700), removed when it exits.
    let demo_dir = match path {
        Some(_) => None,
        None => {
            let dir = laneway_storage::private::fresh_temp_dir("laneway-demo")
                .map_err(|e| anyhow::anyhow!("cannot make the demo's storage directory: {e}"))?;
            config.storage.path = dir.clone();
            Some(dir)
        }
    };
    let mocks: std::sync::Arc<dyn laneway_engine::MockLanes> =
        std::sync::Arc::new(crate::mock::MockLanes::default());
    let gw = match Gateway::start_with(config, path.clone(), a.listen, workers, Some(mocks)).await {
        Ok(gw) => gw,
        Err(e) => {
            remove_demo_dir(demo_dir.as_deref());
            anyhow::bail!("cannot start: {e}");
        }
    };
    hint(&gw, demo, path.as_deref(), demo_dir.as_deref());
    reload_on_hangup(&gw);
    crate::signals::terminated().await;
    eprintln!("laneway: draining (up to server.shutdown_grace)");
    let left = gw.drain().await;
    if left > 0 {
        eprintln!("laneway: {left} requests were still running when the grace period ended");
    }
    remove_demo_dir(demo_dir.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// What the operator sees at start: where to send requests, how to try one, the panel.
fn hint(
    gw: &Gateway,
    demo: bool,
    path: Option<&std::path::Path>,
    demo_dir: Option<&std::path::Path>,
) {
    let addr = gw.addr;
    println!("listening on http://{addr}");
    if demo {
        println!("Laneway demo: one in-process mock lane `mock` serves every model matching `mock-*`; no API key needed.");
    } else if let Some(p) = path {
        println!("Laneway serving {}", p.display());
    }
    println!("  API:     http://{addr}/v1");
    if let Some(model) = example_model(&gw.app.topo.load().config) {
        let auth = if gw.app.topo.load().config.keys.is_empty() {
            ""
        } else {
            " -H \"Authorization: Bearer $LANEWAY_KEY\""
        };
        println!("  try:     curl -s http://{addr}/v1/chat/completions{auth} -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'");
        if !auth.is_empty() {
            println!("           (with LANEWAY_KEY set to one of the config's [[key]] secrets)");
        }
    }
    println!("  panel:   http://{addr}/ui");
    println!("  metrics: http://{addr}/metrics");
    if let Some(dir) = demo_dir {
        println!(
            "  storage: {} (private to this run, removed at exit)",
            dir.display()
        );
    }
}

/// A model id the startup hint can name that some route serves: a lane's declared model that a
/// route matches, else a literal route, else a route's pattern with its `*` filled in.
fn example_model(c: &Config) -> Option<String> {
    let declared = c.lanes.iter().flat_map(|l| l.models.iter());
    if let Some(m) = declared.into_iter().find(|m| c.route_for(m).is_some()) {
        return Some(m.clone());
    }
    if let Some(r) = c.routes.iter().find(|r| !r.model.contains(['*', '?', '['])) {
        return Some(r.model.clone());
    }
    c.routes
        .iter()
        .map(|r| r.model.replace('*', "1").replace(['?', '['], ""))
        .find(|m| c.route_for(m).is_some())
}

fn remove_demo_dir(dir: Option<&std::path::Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn reload_on_hangup(gw: &Gateway) {
    #[cfg(unix)]
    {
        let app = gw.app.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                if let Err(e) = app.reload().await {
                    tracing::error!("reload refused, the old configuration stays:\n{e}");
                }
            }
        });
    }
}
