//! Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), as text or
//! JSON lines. Standard output is kept for the few lines scripts read (`listening on …`).

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    // Already initialised (tests call this more than once): keep the first.
    let _ = result;
}
