//! `presenced`: parses the command line and runs it (see `cli.rs` and the library).

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "presenced=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::Cli::parse().run().await
}
