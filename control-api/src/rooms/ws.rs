//! `GET /v1/rooms/{channel}/ws`: anyone may read; chat needs
//! `?token=API_TOKEN` (browsers cannot set WebSocket headers).
//!
//! A client's write half goes to one of its room's fan-out shards
//! ([`super::fanout`]), which sends `hello`, then the room's events and the
//! replies to the client's own messages; its read half goes to a reader
//! task of its own, which wakes only on input (polling the inbound half
//! zeroes its read buffer, so nothing else should).
//!
//! A client is dropped, with a close frame saying why where the socket
//! still takes one, when it falls more than `client_queue_events` frames
//! behind (`lagged`), when a write does not finish in `send_timeout_ms`
//! (`send_timeout`), or when it breaks the protocol or sends a frame over
//! `max_inbound_frame_bytes` (`protocol`).

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use super::events::Event;
use super::fanout::{AbortOnDrop, Attention, ClientConn, DropReason, FromReader, Presence};
use super::{ChatRefusal, Room, Rooms};
use crate::api::ApiError;
use crate::plane::{blocking, Inner};
use crate::store::{Caller, Store};

/// Read buffer of a client connection: chat frames are small, and an idle
/// client should not hold tungstenite's default 128 KiB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Cap of a client's pending outbound bytes inside tungstenite.
const MAX_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Bytes a client's frames may gather before tungstenite writes them (the
/// shard flushes after each visit anyway).
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

type InboundHalf = futures_util::stream::SplitStream<WebSocket>;

/// Replies the reader may have waiting for the shard; beyond that it stops
/// reading (and TCP pushes back on the client).
const READER_QUEUE: usize = 8;

fn protocol(e: axum::Error) -> DropReason {
    DropReason::Protocol(e.to_string())
}

impl Client {
    /// Splits the socket: the write half goes to one of the room's fan-out
    /// shards (which sends `hello`, then the room's events and this
    /// client's replies), the read half to a reader task of its own.
    async fn run(self, socket: WebSocket) {
        let presence = Presence::new(&self.room, &self.rooms);
        let span = tracing::debug_span!("room_client", channel = %self.room.channel(), account = ?self.caller.as_ref().map(|c| c.account_id));
        let (sink, inbound) = socket.split();
        let shard = self.room.shard_for_new_client();
        let attention = shard.attention();
        let (tx, from_reader) = tokio::sync::mpsc::channel(READER_QUEUE);
        let you = self.caller.as_ref().map(|c| c.account_id);
        let send_timeout = self.send_timeout;
        let reader = tokio::spawn(tracing::Instrument::instrument(self.read(inbound, tx, Arc::clone(&attention)), span));
        let reader = AbortOnDrop(reader.abort_handle());
        shard.attach(ClientConn::new(sink, from_reader, attention, you, send_timeout, presence, reader));
    }

    /// The reader's task: chat messages in, refusals out to the shard.
    async fn read(self, mut inbound: InboundHalf, to_shard: tokio::sync::mpsc::Sender<FromReader>, attention: Arc<Attention>) {
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
