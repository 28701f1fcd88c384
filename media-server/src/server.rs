//! The all-in-one server: binds the listeners, wires hub, hooks and
//! protocols together, and shuts down cleanly.

use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use westream_control::hooks::MediaHooks;
use westream_control::ControlPlane;

use crate::metering::UsageReporter;
use crate::transcode::Transcoding;

use crate::audience::Audience;
use crate::auth::StaticChannels;
use crate::config::{ms, Config};
use crate::hls::{self, HlsPackager};
use crate::http::{self, HttpContext};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::rtmp::{self, RtmpContext};


/// The HTTP server's future, whichever listener it serves.
type ServeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;
/// Startup failures, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The embedded control plane could not open its database.
    #[error("control plane: {0}")]
    Control(String),
    /// The QUIC relay could not start (certificate, TLS, UDP bind).
    #[error("relay: {0}")]
    Relay(#[from] westream_edge::quic::QuicError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    /// Where RTMP listens (the real port when configured as 0).
    pub rtmp_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The hub, for embedding and tests.
    pub hub: Arc<Hub>,
    /// The HLS packager, when `[hls] enabled`.
    pub hls: Option<Arc<HlsPackager>>,
    /// Transcoding (pool, active renditions).
    pub transcoding: Arc<Transcoding>,
    /// Viewer counts by channel and protocol.
    pub audience: Arc<Audience>,
    /// The embedded control plane, when `[control]` is configured.
    pub control: Option<Arc<ControlPlane>>,
    /// The QUIC relay for edges, when `[relay] enabled`.
    pub relay: Option<crate::relay::RelayInfo>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    shutdown_timeout: Duration,
}

impl Server {
    /// Validates `config`, binds and starts serving, with the config's
    /// channel table as the publish/play authority.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let Some(control_config) = config.control.clone() else {
            let hooks: Arc<dyn MediaHooks> = Arc::new(StaticChannels::from_config(&config));
            return Server::start_with(config, hooks, axum::Router::new()).await;
        };
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir { path: data_dir.clone(), source })?;
        let rewards = control_config.rewards.enabled;
        let plane = {
            let data_dir = data_dir.clone();
            tokio::task::spawn_blocking(move || ControlPlane::open(control_config, &data_dir))
                .await
                .map_err(|e| StartError::Control(e.to_string()))?
                .map_err(|e| StartError::Control(e.to_string()))?
        };
        // The settlement chain (embedded by default) opens before anything
        // listens, so a data dir another process holds fails the start.
        let settlement = if rewards {
            Some(plane.start_settlement(&data_dir).await.map_err(|e| StartError::Control(e.to_string()))?)
        } else {
            None
        };
        let mut server = Server::start_with(config, plane.hooks(), plane.router()).await?;
        plane
            .register_metrics(&server.hub.metrics().registry)
            .map_err(|e| StartError::Control(e.to_string()))?;
        server.tasks.spawn(crate::room_feed::run(
            Arc::clone(&server.hub),
            Arc::clone(&server.audience),
            Arc::clone(&server.transcoding),
            plane.rooms(),
            Duration::from_secs(1),
            server.shutdown.clone(),
        ));
        // The rewards' activity tally goes to the database every
        // `control.rewards.flush_interval_ms`, and once more at shutdown.
        let stop = server.shutdown.clone();
        server.tasks.spawn(plane.clone().run_activity_flusher(async move { stop.cancelled().await }));
        if let Some(settlement) = settlement {
            let stop = server.shutdown.clone();
            server.tasks.spawn(Arc::clone(&settlement).run_deposit_watcher(async move { stop.cancelled().await }));
            let stop = server.shutdown.clone();
            server.tasks.spawn(settlement.run_scheduler(async move { stop.cancelled().await }));
        }
        server.control = Some(Arc::new(plane));
        Ok(server)
    }

    /// Starts with another authority (the control plane) and extra routes
    /// merged into the HTTP listener.
    pub async fn start_with(
        config: Config,
        hooks: Arc<dyn MediaHooks>,
        extra: axum::Router,
    ) -> Result<Server, StartError> {
        config.validate()?;
        let rtmp_addr = config.rtmp_addr()?;
        let http_addr = config.http_addr()?;
        let rtmp_listener = TcpListener::bind(rtmp_addr)
            .await
            .map_err(|source| StartError::Bind { what: "rtmp", addr: rtmp_addr, source })?;
        let http_listener = TcpListener::bind(http_addr)
            .await
            .map_err(|source| StartError::Bind { what: "http", addr: http_addr, source })?;
        let rtmp_addr = rtmp_listener.local_addr().unwrap_or(rtmp_addr);
        let http_addr = http_listener.local_addr().unwrap_or(http_addr);

        let metrics = Metrics::new();
        let hub = Hub::new(config.hub.to_hub_config(), metrics);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Before RTMP accepts anything, so no channel goes live unseen.
        let hls = config.hls.enabled.then(|| {
            HlsPackager::start(
                Arc::clone(&hub),
                config.hls.clone(),
                config.server.data_dir.clone(),
                shutdown.clone(),
                tasks.clone(),
            )
        });

        let transcoding = Transcoding::start(
            Arc::clone(&hub),
            hub.subscribe_went_live(),
            config.transcoder.clone(),
            rtmp_addr,
            shutdown.clone(),
            tasks.clone(),
        )
        .await;
        if let Some(hls) = &hls {
            let renditions = Arc::clone(&transcoding);
            hls.set_source_of(Box::new(move |c| match renditions.split_rendition(c) {
                (source, Some(_)) => Some(source.to_string()),
                _ => None,
            }));
        }

        // An HLS player fetches a playlist about once per segment; three
        // missed fetches and it is gone.
        let audience = Arc::new(Audience::new((3 * config.hls.segment_duration_ms).max(6000)));

        let renditions = Arc::clone(&transcoding);
        let reporter = UsageReporter::new(
            Arc::clone(&hub),
            Arc::clone(&hooks),
            config.server.node_id.clone(),
            ms(config.server.usage_report_interval_ms),
        )
        .with_source_of(move |c| renditions.split_rendition(c).0.to_string())
        .with_audience(Arc::clone(&audience));
        tasks.spawn(reporter.run(shutdown.clone()));
        let rtmp_ctx = Arc::new(RtmpContext {
            hub: Arc::clone(&hub),
            hooks: Arc::clone(&hooks),
            config: config.rtmp.clone(),
            shutdown: shutdown.clone(),
            transcoding: Arc::clone(&transcoding),
            audience: Arc::clone(&audience),
        });
        tasks.spawn(rtmp::serve(rtmp_listener, rtmp_ctx, tasks.clone()));

        let http_ctx = Arc::new(HttpContext {
            hub: Arc::clone(&hub),
            hooks: Arc::clone(&hooks),
            config: config.http.clone(),
            shutdown: shutdown.clone(),
            transcoding: Arc::clone(&transcoding),
            audience: Arc::clone(&audience),
        });
        let mut app = http::router(http_ctx).merge(http::web::router(config.http.web_dir.clone()));
        let mut hls_http = None;
        if let Some(packager) = &hls {
            let ctx = Arc::new(hls::http::HlsHttpContext {
                packager: Arc::clone(packager),
                hooks,
                cors_allow_origin: hls::http::HlsHttpContext::cors_header(&config.http.cors_allow_origin),
                transcoding: Arc::clone(&transcoding),
                audience: Arc::clone(&audience),
            });
            app = app.merge(hls::http::router(Arc::clone(&ctx)));
            hls_http = Some(ctx);
        }
        let relay = if config.relay.enabled {
            let mut tokens = config.relay.node_tokens.clone();
            if let Some(control) = &config.control {
                tokens.extend(control.node_tokens.iter().cloned());
            }
            Some(crate::relay::start(
                Arc::clone(&hub),
                &config.relay,
                tokens,
                config.server.node_id.clone(),
                &config.server.data_dir,
                shutdown.clone(),
                tasks.clone(),
            )
            .inspect_err(|_| shutdown.cancel())?)
        } else {
            None
        };
        let app = app.merge(extra);
        let token = shutdown.clone();
        let stopped = async move { token.cancelled().await };
        // With HLS on, its fast path takes the connections first and hands
        // hyper the ones that ask for anything else.
        let served = match hls_http {
            Some(ctx) => hls::fast_path::start(http_listener, ctx, shutdown.clone(), tasks.clone())
                .map(|handed_over| {
                    // The fast path set TCP_NODELAY on accept.
                    Box::pin(westream_control::serve::serve(handed_over, app, stopped)) as ServeFuture
                })
                .map_err(|source| StartError::Bind { what: "http", addr: http_addr, source })
                .inspect_err(|_| shutdown.cancel())?,
            None => {
                // No Nagle: small writes (room events, playlists, FLV tags) leave
                // at once instead of waiting ~40 ms for the peer's delayed ACK.
                let http_listener = http_listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                });
                Box::pin(westream_control::serve::serve(http_listener, app, stopped))
            }
        };
        tasks.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "http server failed");
            }
        });
        tracing::info!(%rtmp_addr, %http_addr, "westream serving");
        Ok(Server {
            rtmp_addr,
            http_addr,
            hub,
            hls,
            control: None,
            relay,
            transcoding,
            audience,
            shutdown,
            tasks,
            shutdown_timeout: ms(config.server.shutdown_timeout_ms),
        })
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every connection, and waits (bounded by
    /// `shutdown_timeout_ms`) for the tasks to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown timeout: some connections did not close in time");
        }
    }
}
