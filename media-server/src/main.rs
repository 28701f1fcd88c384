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
    /// The control plane alone (REST API under /v1, /metrics, /healthz) on
    /// --http-listen, for origins and edges in other processes.
    Control(ServeArgs),
    /// An edge: pulls channels from the origins in `[edge]` over QUIC when
    /// viewers ask, serves RTMP play, HTTP-FLV and HLS, registers with the
    /// control plane given by --control.
    Edge(EdgeArgs),
    /// Parse and validate a config file, then exit.
    CheckConfig(ServeArgs),
    /// Close the open reward epoch now, compute it and anchor it on the
    /// settlement chain (the data dir's control plane and chain; not while
    /// a server holds the embedded chain: use POST /v1/admin/epochs there).
    /// Prints the epoch as JSON.
    Settle(ServeArgs),
    /// Recompute every epoch's Merkle root from the stored allocations,
    /// compare with the chain and check the distributor's solvency. Prints
    /// a report as JSON; exits 1 on any mismatch.
    Verify(ServeArgs),
}

#[derive(Args)]
struct EdgeArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The control plane's base URL (e.g. http://10.0.0.1:8080): play
    /// authorization, usage reports, registration and heartbeats.
    #[arg(long)]
    control: Option<String>,
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
    /// Overrides relay.quic_listen (UDP).
    #[arg(long)]
    relay_listen: Option<String>,
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
        if let Some(a) = &self.relay_listen {
            config.relay.quic_listen = a.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    // Logs go to stderr, so `settle` and `verify` print only their JSON on stdout.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
        Command::Serve(args) => runtime()?.block_on(serve(args.load()?)),
        Command::Settle(args) => runtime()?.block_on(settle(args.load()?)),
        Command::Verify(args) => {
            let ok = runtime()?.block_on(verify(args.load()?))?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Control(args) => runtime()?.block_on(control(args.load()?)),
        Command::Edge(args) => {
            let config = args.serve.load()?;
            runtime()?.block_on(edge(config, args.control))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

/// Opens the control plane of `config`'s data dir (a `[control]` table is required).
async fn open_plane(config: &Config, role: &str) -> anyhow::Result<westream_control::ControlPlane> {
    let control_config = config.control.clone().with_context(|| format!("`westream {role}` needs a [control] table in the config"))?;
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    Ok(tokio::task::spawn_blocking(move || westream_control::ControlPlane::open(control_config, &data_dir)).await??)
}

async fn settle(config: Config) -> anyhow::Result<()> {
    let plane = open_plane(&config, "settle").await?;
    let settlement = plane.start_settlement(&config.server.data_dir).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let epoch = settlement.run_epoch(now).await?;
    println!("{}", serde_json::to_string_pretty(&epoch)?);
    Ok(())
}

async fn verify(config: Config) -> anyhow::Result<bool> {
    let plane = open_plane(&config, "verify").await?;
    let settlement_config = &plane.config().settlement;
    let chain = westream_control::settlement::open_chain_snapshot(settlement_config, &config.server.data_dir).await?;
    let report = westream_control::settlement::Settlement::new(&plane, chain).verify().await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    for problem in &report.problems {
        tracing::error!(%problem, "verify");
    }
    Ok(report.ok())
}

async fn control(config: Config) -> anyhow::Result<()> {
    let plane = open_plane(&config, "control").await?;
    let data_dir = config.server.data_dir.clone();
    let registry = prometheus::Registry::new();
    plane.register_metrics(&registry)?;
    let flusher_stop = tokio_util::sync::CancellationToken::new();
    let flusher = {
        let stop = flusher_stop.clone();
        tokio::spawn(plane.clone().run_activity_flusher(async move { stop.cancelled().await }))
    };
    if plane.config().rewards.enabled {
        let settlement = plane.start_settlement(&data_dir).await?;
        let stop = flusher_stop.clone();
        tokio::spawn(std::sync::Arc::clone(&settlement).run_deposit_watcher(async move { stop.cancelled().await }));
        let stop = flusher_stop.clone();
        tokio::spawn(settlement.run_scheduler(async move { stop.cancelled().await }));
    }
    let metrics = move || {
        let registry = registry.clone();
        async move { prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_default() }
    };
    let app = plane
        .router()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let addr = config.http_addr()?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "westream control plane serving");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    westream_control::serve::serve(listener, app, wait_for_signal()).await?;
    flusher_stop.cancel();
    let _ = flusher.await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.server.data_dir.display()))?;
    let signalled = wait_for_signal();
    let server = Server::start(config).await?;
    signalled.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn edge(config: Config, control: Option<String>) -> anyhow::Result<()> {
    let signalled = wait_for_signal();
    let node = westream_media::edge::EdgeNode::start(config, control).await?;
    signalled.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Listens for SIGTERM from this call on (not from the first poll), so a
/// SIGTERM that arrives while the server is still starting stops it cleanly
/// instead of killing it; the returned future ends on SIGTERM or Ctrl-C.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    async move {
        let mut term = match term {
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
}
