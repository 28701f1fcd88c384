//! `GET /v1/rooms/{channel}/ws`: two tasks per client. The writer sends
//! `hello`, then the room's shared events and the replies to the client's
//! own messages; the reader reads chat messages. Anyone may read; chat
//! needs `?token=API_TOKEN` (browsers cannot set WebSocket headers).
//!
//! Why two: a task polls every branch it waits on each time it wakes, and
//! polling the WebSocket's inbound half zeroes its read buffer. With one
//! task that happened on every outbound frame, 10,000 times per frame in a
//! big room; the reader's task wakes only on input.
//!
//! A client is dropped, with a close frame saying why where the socket
//! still takes one, when it falls more than `client_queue_events` frames
//! behind (`lagged`), when a send does not finish in `send_timeout_ms`
//! (`send_timeout`), or when it breaks the protocol or sends a frame over
//! `max_inbound_frame_bytes` (`protocol`).

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::events::Event;
use super::{ChatRefusal, Room, Rooms};
use crate::api::ApiError;
use crate::plane::{blocking, Inner};
use crate::store::{Caller, Store};

/// Read buffer of a client connection: chat frames are small, and an idle
/// client should not hold tungstenite's default 128 KiB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Cap of a client's pending outbound bytes inside tungstenite.
const MAX_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// How long a close frame to a dropped client may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);
/// Frames already queued for a client go out in one write, up to this many
/// (no waiting here: the room batches; see `rooms::batch`).
const MAX_FRAMES_PER_WRITE: usize = 32;
/// Bytes a client's frames may gather before tungstenite writes them.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let room = crate::api::existing_room(&state, &channel).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(e.status(), "websocket_required", format!("open this route as a WebSocket: {}", e.body_text()))
    })?;
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
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(cfg.max_inbound_frame_bytes)
        .max_frame_size(cfg.max_inbound_frame_bytes)
        .on_upgrade(move |socket| client.run(socket)))
}

#[derive(Clone)]
struct Client {
    rooms: Arc<Rooms>,
    store: Arc<dyn Store>,
    room: Arc<Room>,
    caller: Option<Caller>,
    send_timeout: Duration,
}

/// Why the server dropped a client.
#[derive(Debug)]
enum DropReason {
    Lagged(u64),
    SendTimeout,
    Protocol(String),
}

impl DropReason {
    fn label(&self) -> &'static str {
        match self {
            DropReason::Lagged(_) => "lagged",
            DropReason::SendTimeout => "send_timeout",
            DropReason::Protocol(_) => "protocol",
        }
    }
}

/// Counts the client in its room and in the gauge for as long as it lives.
struct Presence {
    room: Arc<Room>,
    rooms: Arc<Rooms>,
}

impl Presence {
    fn new(room: &Arc<Room>, rooms: &Arc<Rooms>) -> Self {
        room.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rooms.metrics().ws_clients.inc();
        Presence {
            room: Arc::clone(room),
            rooms: Arc::clone(rooms),
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.room.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.rooms.metrics().ws_clients.dec();
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type InboundHalf = futures_util::stream::SplitStream<WebSocket>;

/// What the reader tells the writer.
enum FromReader {
    /// An error event for this client (a refused chat, a binary frame).
    Reply(Utf8Bytes),
    /// The client closed (`Ok`) or broke the protocol.
    Ended(Result<(), DropReason>),
}

/// Replies the reader may have waiting for the writer; beyond that it stops
/// reading (and TCP pushes back on the client).
const READER_QUEUE: usize = 8;

/// Ends the reader's task with the writer's.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn protocol(e: axum::Error) -> DropReason {
    DropReason::Protocol(e.to_string())
}

impl Client {
    async fn run(self, socket: WebSocket) {
        let _presence = Presence::new(&self.room, &self.rooms);
        let span = tracing::debug_span!("room_client", channel = %self.room.channel(), account = ?self.caller.as_ref().map(|c| c.account_id));
        let (mut sink, inbound) = socket.split();
        let outcome = tracing::Instrument::instrument(self.serve(&mut sink, inbound), span).await;
        if let Err(reason) = outcome {
            self.rooms.metrics().ws_drops.with_label_values(&[reason.label()]).inc();
            tracing::debug!(reason = ?reason, "room client dropped");
            let text = match &reason {
                DropReason::Lagged(n) => format!("too slow: {n} frames behind"),
                DropReason::SendTimeout => "too slow: send timed out".to_string(),
                DropReason::Protocol(e) => format!("protocol error: {e}"),
            };
            let frame = CloseFrame {
                // 1008: policy violation.
                code: 1008,
                reason: Utf8Bytes::from(text.chars().take(100).collect::<String>()),
            };
            // A stuck socket will not take it either; do not wait long.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        }
    }

    async fn send(&self, sink: &mut Sink, msg: Message) -> Result<(), DropReason> {
        self.timed(async { sink.send(msg).await.map_err(protocol) }).await
    }

    /// One timer for a whole write, however many frames it carries.
    async fn timed(&self, op: impl std::future::Future<Output = Result<(), DropReason>>) -> Result<(), DropReason> {
        tokio::time::timeout(self.send_timeout, op).await.unwrap_or(Err(DropReason::SendTimeout))
    }

    /// Writes `first` and whatever else is already queued in one flush: at
    /// 10,000 clients a busy room costs one write per client per wake-up,
    /// not one per event.
    async fn send_queued(
        &self,
        sink: &mut Sink,
        first: Utf8Bytes,
        events: &mut tokio::sync::broadcast::Receiver<Utf8Bytes>,
    ) -> Result<(), DropReason> {
        self.timed(async {
            sink.feed(Message::Text(first)).await.map_err(protocol)?;
            for _ in 1..MAX_FRAMES_PER_WRITE {
                match events.try_recv() {
                    Ok(next) => sink.feed(Message::Text(next)).await.map_err(protocol)?,
                    Err(TryRecvError::Lagged(n)) => return Err(DropReason::Lagged(n)),
                    // Empty, or closed (the next recv says so).
                    Err(_) => break,
                }
            }
            sink.flush().await.map_err(protocol)
        })
        .await
    }

    async fn serve(&self, sink: &mut Sink, inbound: InboundHalf) -> Result<(), DropReason> {
        let (hello, mut events) = self
            .rooms
            .join(&self.room, self.caller.as_ref().map(|c| c.account_id));
        self.send(sink, Message::Text(hello)).await?;
        let (tx, mut from_reader) = tokio::sync::mpsc::channel(READER_QUEUE);
        let reader = tokio::spawn(tracing::Instrument::in_current_span(self.clone().read(inbound, tx)));
        let _reader = AbortOnDrop(reader.abort_handle());
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(bytes) => self.send_queued(sink, bytes, &mut events).await?,
                    Err(RecvError::Lagged(n)) => return Err(DropReason::Lagged(n)),
                    Err(RecvError::Closed) => return Ok(()),
                },
                msg = from_reader.recv() => match msg {
                    Some(FromReader::Reply(text)) => self.send(sink, Message::Text(text)).await?,
                    Some(FromReader::Ended(outcome)) => return outcome,
                    None => return Ok(()),
                },
            }
        }
    }

    /// The reader's task: chat messages in, refusals out to the writer.
    async fn read(self, mut inbound: InboundHalf, to_writer: tokio::sync::mpsc::Sender<FromReader>) {
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
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => continue, // ping and pong are answered by tungstenite
                Some(Err(e)) => break Err(protocol(e)),
            };
            if to_writer.send(FromReader::Reply(reply)).await.is_err() {
                return; // the writer is gone
            }
        };
        let _ = to_writer.send(FromReader::Ended(outcome)).await;
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
