//! `presenced`: parses the command line and runs it (see `cli.rs`, `remote.rs` and the
//! library). Exit codes: 0 done, 1 failed (the message says why), 2 bad usage, 3 `status` of
//! a user without presence.

mod cli;
mod remote;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "presenced=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::Cli::parse().run().await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
