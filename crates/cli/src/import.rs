//! `laneway import ONWARDS.json`: print the Laneway TOML equivalent of an Onwards config, with a
//! comment on everything that could not be mapped. The output is checked before it is printed.

use std::path::PathBuf;
use std::process::ExitCode;

use laneway_config::{onwards, Config};

#[derive(clap::Args)]
pub struct Args {
    /// The Onwards JSON config
    file: PathBuf,
    /// Queue requests when a lane or key is full instead of refusing them at once with 429 (Onwards refuses)
    #[arg(long)]
    queue: bool,
}

pub fn run(a: &Args) -> ExitCode {
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("laneway: cannot read {}: {e}", a.file.display());
            return ExitCode::from(2);
        }
    };
    let translated = onwards::to_toml(&text, a.queue).and_then(|toml| {
        // The translation must itself be a valid config before anyone relies on it.
        Config::parse(&toml).map(|_| toml)
    });
    match translated {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(mut e) => {
            e.file = Some(a.file.clone());
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
