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
            ExitCode::SUCCESS
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
