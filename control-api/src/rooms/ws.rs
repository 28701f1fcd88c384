//! `GET /v1/rooms/{channel}/ws`: anyone may read; chat needs
//! `?token=API_TOKEN` (browsers cannot set WebSocket headers).
//!
//! The upgrade is answered here (RFC 6455 4.2.2), and the connection taken
//! back from hyper as its socket ([`crate::serve::raw_tcp`]). The socket's
//! write half goes to one of the room's fan-out shards ([`super::fanout`]),
//! which writes `hello`, then the room's events and the replies to the
//! client's own messages as WebSocket frames of its own; the read half goes
//! to a reader task, which parses the client's frames with tungstenite
//! (masking, fragments, UTF-8, limits, ping and close) and wakes only on
//! input. What tungstenite answers itself (pong, the close reply) it writes
//! into a [`ReadSide`], which passes the bytes on to the shard: the shard is
//! the only writer of the socket.
//!
//! A client is dropped, with a close frame saying why where the socket
//! still takes one, when it falls more than `client_queue_events` frames
//! behind (`lagged`), when a write does not finish in `send_timeout_ms`
//! (`send_timeout`), or when it breaks the protocol or sends a frame over
//! `max_inbound_frame_bytes` (`protocol`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::events::Event;
use super::fanout::{AbortOnDrop, Attention, ClientConn, DropReason, FromReader, Presence};
use super::{ChatRefusal, Room, Rooms};
use crate::api::ApiError;
use crate::plane::{blocking, Inner};
use crate::store::{Caller, Store};

/// Read buffer of a client connection: chat frames are small, and an idle
/// client should not hold tungstenite's default 128 KiB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Protocol replies (pongs, the close reply) not yet handed to the shard, at
/// most: a client that pings faster than it reads is dropped.
const MAX_WIRE_REPLY_BYTES: usize = 16 * 1024;

/// `?token=` and `?share=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WsQuery {
    token: Option<String>,
    share: Option<String>,
}

/// Client -> server messages.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Inbound {
    Chat { text: String },
}

pub(crate) async fn connect(
    State(state): State<Arc<Inner>>,
    Path(channel): Path<String>,
    q: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<RawUpgrade, UpgradeRefused>,
) -> Result<Response, ApiError> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let room = crate::api::existing_room(&state, &channel).await?;
    let upgrade = upgrade.map_err(ApiError::from)?;
    let caller = match q.token.as_deref() {
        Some(t) => Some(crate::api::authenticate(&state, t).await?),
        None => None,
    };
    let cfg = &state.config.rooms;
    if room.clients() >= cfg.max_clients_per_room {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "room_full",
            "this room has as many clients as it takes; retry later",
        ));
    }
    if let Some(code) = q.share.filter(|c| !c.is_empty() && c.len() <= 64) {
        let ch = channel.clone();
        // Attribution is best effort: a failed count never refuses a viewer.
        let store = Arc::clone(&state.store);
        tokio::spawn(async move {
            if let Err(e) = blocking(&store, move |s| s.record_share_play(&code, &ch)).await {
                tracing::warn!(error = %e, "share play not counted");
            }
        });
    }
    let client = Client {
        rooms: Arc::clone(&state.rooms),
        store: Arc::clone(&state.store),
        room,
        caller,
        send_timeout: Duration::from_millis(cfg.send_timeout_ms),
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(cfg.max_inbound_frame_bytes))
        .max_frame_size(Some(cfg.max_inbound_frame_bytes));
    let channel = client.room.channel().to_string();
    let RawUpgrade { accept, on_upgrade } = upgrade;
    tokio::spawn(async move {
        match on_upgrade.await.map(crate::serve::raw_tcp) {
            Ok(Ok((tcp, read))) => client.run(tcp, read, ws_config).await,
            Ok(Err(_)) => tracing::error!(
                %channel,
                "room WebSocket on a connection that is not a TCP socket served by westream_control::serve::serve; closed"
            ),
            Err(e) => tracing::debug!(%channel, error = %e, "room WebSocket upgrade failed"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_default())
}

/// A valid WebSocket upgrade request (RFC 6455 4.2.1), answered by the
/// handler: the `Sec-WebSocket-Accept` value and the connection to come.
pub(crate) struct RawUpgrade {
    accept: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
pub(crate) struct UpgradeRefused {
    status: StatusCode,
    reason: &'static str,
}

impl From<UpgradeRefused> for ApiError {
    fn from(e: UpgradeRefused) -> Self {
        ApiError::new(e.status, "websocket_required", format!("open this route as a WebSocket: {}", e.reason))
    }
}

impl axum::response::IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for RawUpgrade {
    type Rejection = UpgradeRefused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let refuse = |status, reason| Err(UpgradeRefused { status, reason });
        if parts.method != Method::GET {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "the request method must be GET");
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return refuse(StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'");
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return refuse(StatusCode::BAD_REQUEST, "`Upgrade` header did not include 'websocket'");
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
            return refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Version` header did not include '13'");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` header missing");
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Ok(accept) = HeaderValue::from_str(&accept) else {
            return refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` header is not a key");
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return refuse(StatusCode::UPGRADE_REQUIRED, "WebSocket request couldn't be upgraded since no upgrade state was present");
        };
        Ok(RawUpgrade { accept, on_upgrade })
    }
}

/// The reader's end of the socket, as tungstenite's stream: reads come from
/// the socket; what tungstenite writes (pongs, the close reply) is staged
/// and, at each flush, handed to the shard as wire bytes.
struct ReadSide {
    read: OwnedReadHalf,
    staged: Vec<u8>,
    to_shard: mpsc::Sender<FromReader>,
    attention: Arc<Attention>,
}

impl ReadSide {
    /// Hands what tungstenite wrote to the shard.
    fn forward(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let wire = Bytes::from(std::mem::take(&mut self.staged));
        match self.to_shard.try_send(FromReader::Wire(wire)) {
            Ok(()) => {
                self.attention.raise();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::Error::other("control frames come faster than their replies leave")),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.staged.len() + buf.len() > MAX_WIRE_REPLY_BYTES {
            return Poll::Ready(Err(io::Error::other("control frames come faster than their replies leave")));
        }
        self.staged.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.forward())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Clone)]
struct Client {
    rooms: Arc<Rooms>,
    store: Arc<dyn Store>,
    room: Arc<Room>,
    caller: Option<Caller>,
    send_timeout: Duration,
}

type InboundStream = WebSocketStream<ReadSide>;

/// Replies the reader may have waiting for the shard; beyond that it stops
/// reading (and TCP pushes back on the client).
const READER_QUEUE: usize = 8;

fn protocol(e: tokio_tungstenite::tungstenite::Error) -> DropReason {
    DropReason::Protocol(e.to_string())
}

impl Client {
    /// Splits the socket: the write half goes to one of the room's fan-out
    /// shards (which sends `hello`, then the room's events and this
    /// client's replies), the read half to a reader task of its own.
    async fn run(self, tcp: TcpStream, read: Bytes, ws_config: WebSocketConfig) {
        let presence = Presence::new(&self.room, &self.rooms);
        let span = tracing::debug_span!("room_client", channel = %self.room.channel(), account = ?self.caller.as_ref().map(|c| c.account_id));
        let (read_half, sink) = tcp.into_split();
        let shard = self.room.shard_for_new_client(self.rooms.metrics());
        let attention = shard.attention();
        let (tx, from_reader) = mpsc::channel(READER_QUEUE);
        let side = ReadSide { read: read_half, staged: Vec::new(), to_shard: tx.clone(), attention: Arc::clone(&attention) };
        let inbound = WebSocketStream::from_partially_read(side, read.to_vec(), Role::Server, Some(ws_config)).await;
        let you = self.caller.as_ref().map(|c| c.account_id);
        let send_timeout = self.send_timeout;
        let reader = tokio::spawn(tracing::Instrument::instrument(self.read(inbound, tx, Arc::clone(&attention)), span));
        let reader = AbortOnDrop(reader.abort_handle());
        shard.attach(ClientConn::new(sink, from_reader, attention, you, send_timeout, presence, reader));
    }

    /// The reader's task: chat messages in, refusals out to the shard.
    async fn read(self, mut inbound: InboundStream, to_shard: mpsc::Sender<FromReader>, attention: Arc<Attention>) {
        let outcome = loop {
            let reply = match inbound.next().await {
                Some(Ok(Message::Text(t))) => match self.handle_text(t.as_str()) {
                    Ok(()) => continue,
                    Err(refusal) => {
                        self.rooms.metrics().chat_refused.with_label_values(&[refusal.code()]).inc();
                        let message = refusal.to_string();
                        Event::Error { code: refusal.code(), message: &message }.to_bytes()
                    }
                },
                Some(Ok(Message::Binary(_))) => Event::Error { code: "bad_message", message: "send JSON text frames" }.to_bytes(),
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the close reply; its flush writes
                    // it and then reports the connection closed, without
                    // flushing the stream: hand the bytes on here.
                    let _ = inbound.flush().await;
                    let _ = inbound.get_mut().forward();
                    break Ok(());
                }
                None => break Ok(()),
                Some(Ok(_)) => continue, // pings are answered by tungstenite (through ReadSide)
                Some(Err(e)) => break Err(protocol(e)),
            };
            if to_shard.send(FromReader::Reply(reply)).await.is_err() {
                return; // the client is gone
            }
            attention.raise();
        };
        if let Err(reason) = &outcome {
            tracing::debug!(reason = ?reason, "room client broke the protocol");
        }
        let _ = to_shard.send(FromReader::Ended(outcome)).await;
        attention.raise();
    }

    fn handle_text(&self, text: &str) -> Result<(), ChatRefusal> {
        let Inbound::Chat { text } = serde_json::from_str::<Inbound>(text)
            .map_err(|_| ChatRefusal::BadMessage(r#"expected {"type":"chat","text":"..."}"#.into()))?;
        let record = self.rooms.handle_chat(&self.room, self.caller.as_ref(), &text)?;
        if let (true, Some(caller)) = (record, &self.caller) {
            let (rooms, account, now) = (Arc::clone(&self.rooms), caller.account_id, self.rooms.now_ms());
            rooms.activity().account(account, now, |i| i.chat_messages += 1);
            let store = Arc::clone(&self.store);
            tokio::spawn(async move {
                match blocking(&store, move |s| s.record_activity(account, now)).await {
                    Ok(events) => rooms.mark_active(account, events),
                    Err(e) => tracing::warn!(error = %e, "chat activity not recorded"),
                }
            });
        }
        Ok(())
    }
}
