//! Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), as text or
//! JSON lines. Standard output is kept for the few lines scripts read (`listening on …`).
//! Text is coloured only on a terminal and never when `NO_COLOR` is set (no-color.org), so a
//! log written to a file or a pipe holds no escape bytes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Whether log text may carry colour: stderr is a terminal and `NO_COLOR` is unset or empty.
fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    // Already initialised (tests call this more than once): keep the first.
    let _ = result;
}
