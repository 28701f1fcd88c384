//! The `westream` binary: parses the command line and config, then runs a
//! role from the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use westream_media::{Config, Server};

#[derive(Parser)]
#[command(name = "westream", version, about = "WeStream live-streaming media server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// All-in-one server: RTMP ingest and play, HTTP-FLV, metrics.
    Serve(ServeArgs),
    /// Parse and validate a config file, then exit.
    CheckConfig(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file (see configs/dev.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides server.rtmp_listen.
    #[arg(long)]
    rtmp_listen: Option<String>,
    /// Overrides server.http_listen.
    #[arg(long)]
    http_listen: Option<String>,
    /// Overrides server.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(a) = &self.rtmp_listen {
            config.server.rtmp_listen = a.clone();
        }
        if let Some(a) = &self.http_listen {
            config.server.http_listen = a.clone();
        }
        if let Some(d) = &self.data_dir {
            config.server.data_dir = d.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => {
            args.load()?;
            println!("config ok");
            Ok(())
        }
        Command::Serve(args) => {
            let config = args.load()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            rt.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.server.data_dir.display()))?;
    let server = Server::start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
