//! RTMP ingest and play: `rml_rtmp`'s sans-IO handshake and server session
//! behind a validating [`guard::ChunkGuard`], driven by one tokio task per
//! connection; media to players goes out as shared pre-serialized chunks
//! ([`chunks`]).

pub mod chunks;
pub mod connection;
pub mod guard;
pub mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use westream_control::hooks::MediaHooks;

use crate::config::RtmpConfig;
use crate::hub::Hub;

/// What every RTMP connection task shares.
pub struct RtmpContext {
    /// The stream hub.
    pub hub: Arc<Hub>,
    /// Publish/play authorization.
    pub hooks: Arc<dyn MediaHooks>,
    /// `[rtmp]` settings.
    pub config: RtmpConfig,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Rendition names and the internal rendition publish path.
    pub transcoding: Arc<crate::transcode::Transcoding>,
    /// Viewer counts by channel and protocol.
    pub audience: Arc<crate::audience::Audience>,
}

/// Accepts RTMP connections until shutdown; each runs in its own task
/// tracked by `tasks`.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, tasks: TaskTracker) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let ids = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer): (_, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "rtmp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.hub.metrics().rejected.with_label_values(&["too_many_connections"]).inc();
            tracing::warn!(%peer, "rtmp connection refused: max_connections reached");
            continue;
        };
        let conn_id = ids.fetch_add(1, Ordering::Relaxed);
        let ctx = Arc::clone(&ctx);
        let span = tracing::info_span!("rtmp", conn = conn_id, %peer, channel = tracing::field::Empty);
        tasks.spawn(
            async move {
                ctx.hub.metrics().rtmp_connections.inc();
                match connection::run(socket, peer, &ctx).await {
                    Ok(()) => tracing::debug!("connection closed"),
                    Err(e) if e.is_peer_fault() => {
                        tracing::info!(error = %e, "connection closed: bad input from peer")
                    }
                    Err(e) => tracing::debug!(error = %e, "connection closed"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}
