//! `laneway check`: validate a config file and print what it means.

use std::path::PathBuf;
use std::process::ExitCode;

use laneway_config::{describe::describe, Config};

#[derive(clap::Args)]
pub struct Args {
    /// Config file to check (default: ./laneway.toml)
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn run(args: &Args) -> ExitCode {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("laneway.toml"));
    match Config::load(&path) {
        Ok(c) => {
            println!("{}: valid", path.display());
            print!("{}", describe(&c));
            storage(&c.storage)
        }
        Err(e) => {
            let n = e.problems.len();
            eprintln!("{e}");
            eprintln!(
                "{n} problem{} found; the configuration is not valid",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(2)
        }
    }
}

/// Says whether the Batch API's database is reachable and at which schema version; a schema
/// newer than this Laneway's fails the check (the gateway would refuse it at start).
fn storage(c: &laneway_config::StorageConfig) -> ExitCode {
    let (found, ours) = match &c.url {
        // On a thread of its own: the database client waits with a runtime of its own, which
        // cannot be done on this one's threads.
        Some(url) => match std::thread::scope(|t| {
            t.spawn(|| laneway_storage::Postgres::probe(url))
                .join()
                .unwrap_or_else(|_| Err(laneway_storage::Error::Invalid("the probe failed".into())))
        }) {
            Ok(v) => (v, laneway_storage::POSTGRES_SCHEMA_VERSION),
            Err(e) => {
                println!(
                    "storage database: unreachable ({e}); the Batch API answers 503 until it is"
                );
                return ExitCode::SUCCESS;
            }
        },
        None => match laneway_storage::sqlite_version(&c.path) {
            Ok(v) => (v, laneway_storage::SCHEMA_VERSION),
            Err(e) => {
                println!("storage database: cannot be read ({e})");
                return ExitCode::SUCCESS;
            }
        },
    };
    match found {
        None => println!(
            "storage database: reachable, no schema yet (created at start, version {ours})"
        ),
        Some(v) if v > ours => {
            println!("storage database: schema version {v} is newer than this Laneway's {ours}; run a newer Laneway");
            return ExitCode::from(2);
        }
        Some(v) if v < ours => {
            println!("storage database: reachable, schema version {v} (brought to {ours} at start)")
        }
        Some(v) => println!("storage database: reachable, schema version {v}"),
    }
    ExitCode::SUCCESS
}
