//! The edge's side of the relay: connect to an origin over QUIC, ask for a
//! channel, read the header and frames; on loss, reconnect with backoff and
//! fail over to the next configured origin.
//!
//! Contract: [`UpstreamClient::pull`] runs until its token is cancelled and
//! reports through a synchronous sink: `Connected` (a header arrived; the
//! caller starts or resumes its local publisher), `Frame`, and `Lost` (the
//! caller drops its publisher; the hub's grace period keeps viewers while
//! the next origin is tried). One QUIC connection per origin is shared by
//! every channel pulled from it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::framing::{self, FramingError, RefusalCode, RelayDecoder, RelayFrame, RelayMessage, RelayRequest, StreamHeader};
use crate::quic::{self, QuicError};

/// Time allowed for a QUIC handshake with an origin.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed between sending a request and receiving the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream attempt failed or a pull ended. Every variant is worth
/// retrying (on this origin or the next) except where noted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The origin could not be reached (handshake, timeout, pinned
    /// certificate mismatch).
    #[error("cannot connect to origin {origin}: {message}")]
    Connect {
        /// The origin.
        origin: SocketAddr,
        /// Why.
        message: String,
    },
    /// The origin refused the request. `unauthorized` will not get better
    /// by retrying; `not_live` may on another origin.
    #[error("origin refused: {} ({reason})", code.as_str())]
    Refused {
        /// The origin's code.
        code: RefusalCode,
        /// Its reason.
        reason: String,
    },
    /// The origin sent bytes that are not valid relay framing.
    #[error("origin sent malformed relay data: {0}")]
    Framing(#[from] FramingError),
    /// The origin sent a valid message out of order.
    #[error("origin broke the relay protocol: {0}")]
    Protocol(&'static str),
    /// The QUIC stream or connection failed.
    #[error("relay stream failed: {0}")]
    Stream(String),
    /// The origin ended the stream: the channel ended there.
    #[error("the origin ended the channel")]
    Ended,
    /// No header in time.
    #[error("origin did not answer in time")]
    Timeout,
}

/// Reconnect delays: doubling from `initial` up to `max`, with jitter, reset
/// after a stream that delivered frames. Sans-IO: the caller sleeps.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), next: initial }
    }

    /// The delay before the next attempt; `jitter` in `[0, 1)` spreads it
    /// over `[d/2, d)` so edges do not reconnect in lockstep.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What a pull reports.
#[derive(Debug)]
pub enum PullEvent {
    /// A stream to `origin` is open; frames follow.
    Connected {
        /// Which origin.
        origin: SocketAddr,
        /// Its header.
        header: StreamHeader,
    },
    /// One frame.
    Frame(RelayFrame),
    /// Every frame that had arrived is delivered, and the next is not here
    /// yet: the end of one of the origin's batches, to be sent on now.
    CaughtUp,
    /// The stream to `origin` ended; the next origin will be tried.
    Lost {
        /// Which origin.
        origin: SocketAddr,
        /// Why.
        error: UpstreamError,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Streams that were open and were lost (reconnects that followed).
    pub reconnects: AtomicU64,
    /// Attempts that failed before a header.
    pub failed_attempts: AtomicU64,
    /// Payload and framing bytes received from origins.
    pub bytes_in: AtomicU64,
    /// The newest RTT estimate to an origin, microseconds.
    pub rtt_us: AtomicU64,
    /// Streams currently open.
    pub open_streams: AtomicU64,
}

struct OriginTarget {
    addr: SocketAddr,
    config: quinn::ClientConfig,
}

/// Pulls channels from the configured origins.
pub struct UpstreamClient {
    endpoint: quinn::Endpoint,
    origins: Vec<OriginTarget>,
    connections: Mutex<Vec<Option<quinn::Connection>>>,
    preferred: AtomicUsize,
    edge_id: String,
    node_token: String,
    max_frame_bytes: usize,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    /// Counters.
    pub stats: Arc<UpstreamStats>,
}

impl UpstreamClient {
    /// A client for a validated `[edge]` config. Needs a tokio runtime.
    pub fn new(config: &EdgeConfig) -> Result<UpstreamClient, QuicError> {
        let mut origins = Vec::new();
        for o in &config.origins {
            let addr: SocketAddr = o.quic_addr.parse().map_err(|_| QuicError::Tls(format!("bad origin address {}", o.quic_addr)))?;
            origins.push(OriginTarget { addr, config: quic::pinned_client_config(&o.cert_sha256)? });
        }
        let first = origins.first().map(|o| o.addr).ok_or_else(|| QuicError::Tls("no origin configured".into()))?;
        let endpoint = quic::client_endpoint(first)?;
        Ok(UpstreamClient {
            endpoint,
            connections: Mutex::new(vec![None; origins.len()]),
            origins,
            preferred: AtomicUsize::new(0),
            edge_id: config.id.clone(),
            node_token: config.node_token.clone(),
            max_frame_bytes: config.max_frame_bytes,
            reconnect_initial: Duration::from_millis(config.reconnect_initial_ms),
            reconnect_max: Duration::from_millis(config.reconnect_max_ms),
            stats: Arc::new(UpstreamStats::default()),
        })
    }

    /// Number of configured origins.
    pub fn origin_count(&self) -> usize {
        self.origins.len()
    }

    fn cached(&self, idx: usize) -> Option<quinn::Connection> {
        let conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.get(idx).and_then(|c| c.clone()).filter(|c| c.close_reason().is_none())
    }

    async fn connection(&self, idx: usize) -> Result<quinn::Connection, UpstreamError> {
        if let Some(c) = self.cached(idx) {
            return Ok(c);
        }
        let target = &self.origins[idx];
        let err = |message: String| UpstreamError::Connect { origin: target.addr, message };
        let connecting = self
            .endpoint
            .connect_with(target.config.clone(), target.addr, quic::SERVER_NAME)
            .map_err(|e| err(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| err("handshake timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        self.stats.rtt_us.store(conn.rtt().as_micros() as u64, Ordering::Relaxed);
        let mut conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = conns.get_mut(idx) {
            *slot = Some(conn.clone());
        }
        Ok(conn)
    }

    /// Opens one channel on origin `idx`: request sent, header received.
    pub async fn open(&self, idx: usize, channel: &str) -> Result<(RelayStream, StreamHeader), UpstreamError> {
        let origin = self.origins[idx].addr;
        let conn = self.connection(idx).await?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| UpstreamError::Stream(e.to_string()))?;
        let mut out = BytesMut::new();
        framing::encode(
            &RelayMessage::Request(RelayRequest {
                channel: channel.to_string(),
                rendition: "source".into(),
                edge_id: self.edge_id.clone(),
                token: self.node_token.clone(),
            }),
            &mut out,
        )?;
        send.write_all(&out).await.map_err(|e| UpstreamError::Stream(e.to_string()))?;
        let mut stream = RelayStream {
            origin,
            conn,
            _send: send,
            recv,
            decoder: RelayDecoder::new(self.max_frame_bytes),
            stats: Arc::clone(&self.stats),
        };
        let header = tokio::time::timeout(HEADER_TIMEOUT, stream.next_message())
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        match header {
            Some(RelayMessage::Header(h)) => Ok((stream, h)),
            Some(RelayMessage::Refusal(r)) => Err(UpstreamError::Refused { code: r.code, reason: r.reason }),
            Some(_) => Err(UpstreamError::Protocol("expected a header first")),
            None => Err(UpstreamError::Ended),
        }
    }

    /// Pulls `channel` until `cancel`: from the origin that worked last,
    /// then the others in turn, with backoff between attempts.
    pub async fn pull(&self, channel: &str, cancel: CancellationToken, mut sink: impl FnMut(PullEvent)) {
        let mut backoff = Backoff::new(self.reconnect_initial, self.reconnect_max);
        let mut idx = self.preferred.load(Ordering::Relaxed) % self.origins.len().max(1);
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.open(idx, channel) => r,
            };
            match attempt {
                Ok((mut stream, header)) => {
                    let origin = stream.origin;
                    tracing::info!(channel, %origin, origin_id = %header.origin_id, "upstream open");
                    self.preferred.store(idx, Ordering::Relaxed);
                    self.stats.open_streams.fetch_add(1, Ordering::Relaxed);
                    sink(PullEvent::Connected { origin, header });
                    let mut delivered = false;
                    let error = loop {
                        if cancel.is_cancelled() {
                            self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
                            return;
                        }
                        // Polled once first: if the next frame is not here
                        // yet, the frames read so far were a whole batch.
                        let mut next_frame = std::pin::pin!(stream.next_frame());
                        let next = match std::future::poll_fn(|cx| Poll::Ready(next_frame.as_mut().poll(cx))).await {
                            Poll::Ready(r) => r,
                            Poll::Pending => {
                                if delivered {
                                    sink(PullEvent::CaughtUp);
                                }
                                tokio::select! {
                                    _ = cancel.cancelled() => {
                                        self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
                                        return;
                                    }
                                    r = next_frame => r,
                                }
                            }
                        };
                        match next {
                            Ok(Some(frame)) => {
                                if !delivered {
                                    delivered = true;
                                    backoff.reset();
                                }
                                sink(PullEvent::Frame(frame));
                            }
                            Ok(None) => break UpstreamError::Ended,
                            Err(e) => break e,
                        }
                    };
                    self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel, %origin, error = %error, "upstream lost");
                    sink(PullEvent::Lost { origin, error });
                }
                Err(error) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(channel, origin = %self.origins[idx].addr, error = %error, "upstream attempt failed");
                }
            }
            idx = (idx + 1) % self.origins.len();
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Closes every connection (at shutdown).
    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"edge shutting down");
    }
}

/// One channel's stream from an origin.
pub struct RelayStream {
    origin: SocketAddr,
    conn: quinn::Connection,
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: RelayDecoder,
    stats: Arc<UpstreamStats>,
}

impl RelayStream {
    /// The origin this stream comes from.
    pub fn origin(&self) -> SocketAddr {
        self.origin
    }

    async fn next_message(&mut self) -> Result<Option<RelayMessage>, UpstreamError> {
        loop {
            if let Some(m) = self.decoder.poll_message()? {
                return Ok(Some(m));
            }
            let chunk = self.recv.read_chunk(64 * 1024, true).await.map_err(|e| UpstreamError::Stream(e.to_string()))?;
            match chunk {
                Some(c) => {
                    self.stats.bytes_in.fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
                    self.decoder.handle_input(&c.bytes);
                }
                None if self.decoder.buffered() == 0 => return Ok(None),
                None => return Err(UpstreamError::Protocol("stream ended inside a message")),
            }
        }
    }

    /// The next frame; `Ok(None)` when the origin ended the channel.
    pub async fn next_frame(&mut self) -> Result<Option<RelayFrame>, UpstreamError> {
        let m = self.next_message().await?;
        self.stats.rtt_us.store(self.conn.rtt().as_micros() as u64, Ordering::Relaxed);
        match m {
            Some(RelayMessage::Frame(f)) => Ok(Some(f)),
            Some(_) => Err(UpstreamError::Protocol("only frames may follow the header")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay(0.999_999).as_millis()).collect();
        assert_eq!(got, vec![99, 199, 399, 499, 499]);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(250));
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }
}
