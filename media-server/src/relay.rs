//! The origin side of the relay (DESIGN.md §5): a QUIC listener from which
//! edges pull channels, one bidirectional stream per channel.
//!
//! Contract: an edge opens a stream and sends one request (channel,
//! rendition, edge id, node token). A bad token, a channel that is not live
//! or a malformed request gets a refusal on that stream; bytes that are not
//! relay framing close that edge's connection and nothing else. Otherwise
//! the origin sends the header, then the channel's hub subscription (metadata,
//! sequence headers, GOP, live frames) as relay frames until the channel
//! ends (FIN) or the edge goes away. The relay is an ordinary hub viewer: a
//! slow edge is skipped forward to a keyframe, never slows the publisher.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use westream_edge::framing::{self, RefusalCode, RelayDecoder, RelayFrame, RelayFrameKind, RelayMessage, StreamHeader};
use westream_edge::quic::{self, QuicError};
use westream_edge::RelayConfig;

use crate::config::valid_channel_name;
use crate::hub::Hub;
use crate::media::FrameKind;

/// QUIC close code for a peer that broke the protocol.
const CLOSE_PROTOCOL: u32 = 2;
/// QUIC close code at shutdown.
const CLOSE_SHUTDOWN: u32 = 0;
/// Largest request accepted (requests carry no media).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Time allowed for an edge's QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running relay listener.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// Where it listens (the real port when configured as 0).
    pub addr: SocketAddr,
    /// Hex SHA-256 of its certificate: what edges pin.
    pub cert_sha256: String,
}

#[derive(Clone)]
struct RelayMetrics {
    streams: IntGauge,
    bytes_out: IntCounter,
    refused: IntCounterVec,
}

impl RelayMetrics {
    fn new(registry: &prometheus::Registry) -> RelayMetrics {
        let streams = IntGauge::new("westream_relay_streams", "Channels relayed to edges now").expect("valid metric");
        let bytes_out = IntCounter::new("westream_relay_bytes_total", "Bytes relayed to edges").expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new("westream_relay_refused_total", "Relay requests or connections refused, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(streams.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes_out.clone()),
            Box::new(refused.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::debug!(error = %e, "relay metric already registered");
            }
        }
        RelayMetrics { streams, bytes_out, refused }
    }
}

struct RelayContext {
    hub: Arc<Hub>,
    token_hashes: Vec<[u8; 32]>,
    node_id: String,
    request_timeout: Duration,
    max_frame_bytes: usize,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Loads (or generates) the certificate, binds the QUIC listener and serves
/// until `shutdown`. `tokens` are the node tokens edges may present.
#[allow(clippy::too_many_arguments)]
pub fn start(
    hub: Arc<Hub>,
    config: &RelayConfig,
    tokens: Vec<String>,
    node_id: String,
    data_dir: &Path,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<RelayInfo, QuicError> {
    let pair = quic::load_or_generate(&data_dir.join(&config.cert_file), &data_dir.join(&config.key_file), config.generate_cert)?;
    let addr = config.listen_addr().map_err(|e| QuicError::Tls(e.to_string()))?;
    let endpoint = quic::server_endpoint(addr, &pair)?;
    let addr = endpoint.local_addr().unwrap_or(addr);
    let cert_sha256 = pair.fingerprint();
    if tokens.is_empty() {
        tracing::warn!("relay enabled without node tokens: every edge will be refused (set relay.node_tokens or control.node_tokens)");
    }
    let ctx = Arc::new(RelayContext {
        metrics: RelayMetrics::new(&hub.metrics().registry),
        hub,
        token_hashes: tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect(),
        node_id,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_frame_bytes: config.max_frame_bytes,
        shutdown,
        tasks: tasks.clone(),
    });
    tracing::info!(%addr, cert_sha256 = %cert_sha256, "relay listening (QUIC)");
    tasks.spawn(accept_loop(endpoint, ctx));
    Ok(RelayInfo { addr, cert_sha256 })
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<RelayContext>) {
    loop {
        let incoming = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let span = tracing::info_span!("relay_conn", %peer);
        ctx.tasks.spawn(serve_connection(Arc::clone(&ctx), incoming).instrument(span));
    }
    endpoint.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"origin shutting down");
    // Let the close reach the edges so they fail over at once.
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
}

async fn serve_connection(ctx: Arc<RelayContext>, incoming: quinn::Incoming) {
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            ctx.metrics.refused.with_label_values(&["handshake"]).inc();
            tracing::info!(error = %e, "relay handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.refused.with_label_values(&["handshake"]).inc();
            return;
        }
    };
    tracing::debug!("edge connected");
    loop {
        let (send, recv) = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                conn.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"origin shutting down");
                return;
            }
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(reason = %e, "edge connection ended");
                    return;
                }
            },
        };
        let span = tracing::info_span!("relay_stream", channel = tracing::field::Empty, edge = tracing::field::Empty);
        ctx.tasks.spawn(serve_stream(Arc::clone(&ctx), conn.clone(), send, recv).instrument(span));
    }
}

enum RequestError {
    Timeout,
    Garbage(String),
    Gone,
}

async fn read_request(ctx: &RelayContext, recv: &mut quinn::RecvStream) -> Result<westream_edge::framing::RelayRequest, RequestError> {
    let mut decoder = RelayDecoder::new(MAX_REQUEST_BYTES);
    let read = async {
        loop {
            match decoder.poll_message() {
                Ok(Some(RelayMessage::Request(r))) => return Ok(r),
                Ok(Some(_)) => return Err(RequestError::Garbage("expected a request".into())),
                Ok(None) => {}
                Err(e) => return Err(RequestError::Garbage(e.to_string())),
            }
            match recv.read_chunk(4096, true).await {
                Ok(Some(c)) => decoder.handle_input(&c.bytes),
                Ok(None) | Err(_) => return Err(RequestError::Gone),
            }
        }
    };
    tokio::time::timeout(ctx.request_timeout, read).await.unwrap_or(Err(RequestError::Timeout))
}

async fn refuse(ctx: &RelayContext, send: &mut quinn::SendStream, code: RefusalCode, reason: &str) {
    ctx.metrics.refused.with_label_values(&[code.as_str()]).inc();
    tracing::info!(code = code.as_str(), reason, "relay request refused");
    let mut out = BytesMut::new();
    let msg = RelayMessage::Refusal(framing::Refusal { code, reason: reason.to_string() });
    if framing::encode(&msg, &mut out).is_ok() {
        let _ = send.write_all(&out).await;
    }
    let _ = send.finish();
    // Give the refusal time to leave before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
}

fn token_ok(ctx: &RelayContext, token: &str) -> bool {
    let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    ctx.token_hashes.iter().fold(false, |found, t| found | (*t == h))
}

async fn serve_stream(ctx: Arc<RelayContext>, conn: quinn::Connection, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let req = match read_request(&ctx, &mut recv).await {
        Ok(r) => r,
        Err(RequestError::Garbage(why)) => {
            // Not our protocol: this edge's connection goes, nothing else.
            ctx.metrics.refused.with_label_values(&["malformed"]).inc();
            tracing::warn!(error = %why, "malformed relay request; closing the connection");
            conn.close(quinn::VarInt::from_u32(CLOSE_PROTOCOL), b"malformed relay request");
            return;
        }
        Err(RequestError::Timeout) => return refuse(&ctx, &mut send, RefusalCode::BadRequest, "no request in time").await,
        Err(RequestError::Gone) => return,
    };
    let span = tracing::Span::current();
    span.record("channel", req.channel.as_str());
    span.record("edge", req.edge_id.as_str());
    if !token_ok(&ctx, &req.token) {
        return refuse(&ctx, &mut send, RefusalCode::Unauthorized, "unknown node token").await;
    }
    if !valid_channel_name(&req.channel) || req.rendition != "source" {
        return refuse(&ctx, &mut send, RefusalCode::BadRequest, "bad channel or rendition").await;
    }
    let Some(stream) = ctx.hub.live(&req.channel) else {
        return refuse(&ctx, &mut send, RefusalCode::NotLive, "channel is not live on this origin").await;
    };
    let Some(mut sub) = stream.subscribe(ctx.hub.metrics()) else {
        return refuse(&ctx, &mut send, RefusalCode::NotLive, "channel ended").await;
    };
    let mut out = BytesMut::new();
    let header = RelayMessage::Header(StreamHeader {
        has_video: stream.has_video(),
        has_audio: stream.has_audio(),
        channel: req.channel.clone(),
        origin_id: ctx.node_id.clone(),
    });
    if framing::encode(&header, &mut out).is_err() || send.write_all(&out).await.is_err() {
        return;
    }
    tracing::info!("relaying to edge");
    ctx.metrics.streams.inc();
    let mut frames = 0u64;
    loop {
        let frame = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = send.stopped() => break,
            f = sub.recv() => match f {
                Some(f) => f,
                None => {
                    let _ = send.finish();
                    break;
                }
            },
        };
        if frame.payload.len() > ctx.max_frame_bytes {
            tracing::warn!(len = frame.payload.len(), "frame over relay.max_frame_bytes not relayed");
            continue;
        }
        let kind = match frame.kind {
            FrameKind::Audio => RelayFrameKind::Audio,
            FrameKind::Video => RelayFrameKind::Video,
            FrameKind::Metadata => RelayFrameKind::Metadata,
        };
        let rf = RelayFrame { kind, dts: frame.dts, payload: frame.payload.clone() };
        let prefix = framing::frame_prefix(&rf);
        let n = (prefix.len() + rf.payload.len()) as u64;
        let mut chunks = [Bytes::copy_from_slice(&prefix), rf.payload];
        if send.write_all_chunks(&mut chunks).await.is_err() {
            break;
        }
        frames += 1;
        ctx.metrics.bytes_out.inc_by(n);
    }
    ctx.metrics.streams.dec();
    tracing::info!(frames, skipped = sub.dropped(), "relay stream ended");
}
