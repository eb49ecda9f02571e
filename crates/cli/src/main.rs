//! `laneway`: the gateway, the mock upstream, the batch runner, the config checker and the
//! Onwards importer.

mod batch;
mod check;
mod import;
mod logging;
mod mock;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An OpenAI-compatible LLM gateway: lanes, limits, fair queues and retries.
#[derive(Parser)]
#[command(name = "laneway", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no config: the built-in demo on 127.0.0.1:8400)
    Serve(serve::Args),
    /// Run the OpenAI-compatible mock upstream
    Mock(mock::Args),
    /// Run an OpenAI Batch input file (JSONL) through a gateway with bounded concurrency
    Batch(batch::Args),
    /// Validate a config and print the effective lanes, routes, keys and limits
    Check(check::Args),
    /// Print the Laneway TOML equivalent of an Onwards JSON config
    Import(import::Args),
    /// Print a shell completion script: `laneway completions bash > /etc/bash_completion.d/laneway`
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "laneway",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("laneway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Mock(a) => mock::run(a).await,
            Command::Batch(a) => batch::run(a).await,
            Command::Check(a) => Ok(check::run(&a)),
            Command::Import(a) => Ok(import::run(&a)),
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("laneway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
