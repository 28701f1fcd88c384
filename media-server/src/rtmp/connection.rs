//! One RTMP connection: handshake, then a session that either publishes one
//! channel or plays one.
//!
//! The task owns the socket. Inbound bytes pass the [`ChunkGuard`] before the
//! `rml_rtmp` session sees them; publish and play requests are decided by the
//! [`MediaHooks`] and the hub; a player's media is written from the shared
//! chunk encodings of each frame, many frames per syscall. A player that
//! keeps up is written by the channel's fan-out instead of its own task
//! ([`super::writer`]): one `send` per batch, no wake-up per viewer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{RtmpMessage, UserControlEventType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use westream_control::hooks::{Denied, PlayProtocol, PlayRequest, PublishRequest};

use super::guard::{ChunkGuard, GuardConfig, GuardError};
use super::writer::{Meter, Mode, Writer};
use super::RtmpContext;
use crate::audience::{Connected, ViewerGuard};
use crate::auth::mask_key;
use crate::config::ms;
use crate::hub::{GoDirect, Publisher, Subscription};
use crate::media::{metadata, FrameKind};

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error (reset, broken pipe).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer failed the RTMP handshake.
    #[error("handshake: {0:?}")]
    Handshake(HandshakeError),
    /// The peer broke a chunk-level rule or limit.
    #[error("chunk stream: {0}")]
    Guard(#[from] GuardError),
    /// The RTMP session refused a message (malformed AMF and the like).
    #[error("session: {0}")]
    Session(#[from] ServerSessionError),
    /// The peer was too slow or silent.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A publish or play was refused; the client was told why.
    #[error("refused: {0}")]
    Refused(String),
}

impl ConnError {
    /// Whether the peer sent something it should not have.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, ConnError::Handshake(_) | ConnError::Guard(_) | ConnError::Session(_))
    }
}

enum Role {
    Idle,
    Publishing { publisher: Publisher, stream_id: u32 },
    /// `internal`: our own transcoder worker, whose bytes are not metered
    /// and who is no viewer (`_counted` is `None`).
    Playing { sub: Box<Subscription>, stream_id: u32, internal: bool, _counted: Option<ViewerGuard> },
}

struct Conn<'a> {
    ctx: &'a RtmpContext,
    peer: SocketAddr,
    session: ServerSession,
    guard: ChunkGuard,
    reader: OwnedReadHalf,
    writer: Arc<Writer>,
    /// Messages waiting for the next [`Conn::flush`].
    out: VecDeque<Bytes>,
    role: Role,
    app: Option<String>,
    /// Set once a publish or play was refused: flush, then close.
    closing: Option<String>,
}

/// Runs a connection to its end.
pub async fn run(socket: TcpStream, peer: SocketAddr, ctx: &RtmpContext) -> Result<(), ConnError> {
    socket.set_nodelay(true)?;
    let (mut reader, mut writer) = socket.into_split();
    let handshake_timeout = ms(ctx.config.handshake_timeout_ms);
    let leftover = tokio::time::timeout(handshake_timeout, handshake(&mut reader, &mut writer))
        .await
        .map_err(|_| ConnError::Timeout("handshake"))??;

    let session_config = ServerSessionConfig {
        chunk_size: ctx.config.chunk_size,
        ..ServerSessionConfig::new()
    };
    let (session, initial) = ServerSession::new(session_config)?;
    let guard = ChunkGuard::new(GuardConfig {
        max_message_bytes: ctx.config.max_message_bytes,
        max_amf_bytes: ctx.config.max_amf_bytes,
        ..GuardConfig::default()
    });
    let mut conn = Conn {
        ctx,
        peer,
        session,
        guard,
        reader,
        writer: Writer::new(writer, ctx.config.chunk_size as usize)?,
        out: VecDeque::new(),
        role: Role::Idle,
        app: None,
        closing: None,
    };
    conn.handle_results(initial).await?;
    conn.handle_input(&leftover).await?;
    conn.flush().await?;
    let result = conn.run_loop().await;
    conn.finish();
    result
}

async fn handshake(reader: &mut OwnedReadHalf, writer: &mut OwnedWriteHalf) -> Result<Vec<u8>, ConnError> {
    let mut hs = Handshake::new(PeerType::Server);
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match hs.process_bytes(&buf[..n]).map_err(ConnError::Handshake)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                writer.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                writer.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

impl Conn<'_> {
    async fn run_loop(&mut self) -> Result<(), ConnError> {
        let mut buf = vec![0u8; 64 * 1024];
        let idle = ms(self.ctx.config.idle_timeout_ms);
        // One registration with the shared shutdown token for the whole
        // connection, not one per loop turn (every viewer shares the token).
        let ctx = self.ctx;
        let shutdown = ctx.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            if let Some(reason) = self.closing.take() {
                self.flush().await?;
                return Err(ConnError::Refused(reason));
            }
            let playing = matches!(self.role, Role::Playing { .. });
            if playing {
                let mode = self.writer.mode();
                let Role::Playing { sub, .. } = &mut self.role else { unreachable!() };
                match mode {
                    Mode::Ended => return self.channel_ended().await,
                    Mode::Failed(kind) => return Err(ConnError::Io(kind.into())),
                    Mode::Closed => return Ok(()),
                    Mode::Owner if sub.is_direct() => {
                        // Back from the fan-out (the socket filled up):
                        // write what it queued, then catch up.
                        sub.resume(self.writer.cursor());
                        self.flush().await?;
                        continue;
                    }
                    Mode::Owner | Mode::Direct => {}
                }
                // While direct, the fan-out writes the media and this task
                // only answers the player until it is handed back.
                let writer = &self.writer;
                let next = async {
                    match mode {
                        Mode::Direct => {
                            writer.handed_back().await;
                            None
                        }
                        _ => Some(sub.recv().await),
                    }
                };
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    n = self.reader.read(&mut buf) => {
                        let n = n?;
                        if n == 0 { return Ok(()); }
                        self.handle_input(&buf[..n]).await?;
                        self.flush().await?;
                    }
                    next = next => match next {
                        // Handed back or ended: the mode says which.
                        None => {}
                        Some(Some(f)) => self.send_frames(f).await?,
                        Some(None) => return self.channel_ended().await,
                    }
                }
            } else {
                let stop = match &self.role {
                    Role::Publishing { publisher, .. } => Some(publisher.stop_token()),
                    _ => None,
                };
                let stopped = async {
                    match &stop {
                        Some(t) => t.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = stopped => {
                        tracing::info!("publisher stopped by the server");
                        self.send_status("status", "NetStream.Publish.Unpublish.Success", "stopped by the server")?;
                        self.flush().await?;
                        return Ok(());
                    }
                    r = tokio::time::timeout(idle, self.reader.read(&mut buf)) => {
                        let n = r.map_err(|_| ConnError::Timeout("no data from peer"))??;
                        if n == 0 { return Ok(()); }
                        self.handle_input(&buf[..n]).await?;
                        self.flush().await?;
                    }
                }
            }
        }
    }

    /// The channel ended for good: tell the player, then close.
    async fn channel_ended(&mut self) -> Result<(), ConnError> {
        self.send_status("status", "NetStream.Play.UnpublishNotify", "channel ended")?;
        self.flush().await?;
        Ok(())
    }

    async fn handle_input(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if data.is_empty() {
            return Ok(());
        }
        self.guard.inspect(data)?;
        let results = self.session.handle_input(data)?;
        self.handle_results(results).await
    }

    async fn handle_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), ConnError> {
        let mut queue: VecDeque<ServerSessionResult> = results.into();
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.push_back(Bytes::from(p.bytes)),
                ServerSessionResult::RaisedEvent(ev) => {
                    let more = self.handle_event(ev).await?;
                    queue.extend(more);
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn handle_event(&mut self, ev: ServerSessionEvent) -> Result<Vec<ServerSessionResult>, ConnError> {
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                if !self.ctx.config.apps.iter().any(|a| a == &app_name) {
                    self.refuse("unknown_app", format!("unknown application '{app_name}'"));
                    return Ok(self.session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        &format!("unknown application '{app_name}'"),
                    )?);
                }
                self.app = Some(app_name);
                Ok(self.session.accept_request(request_id)?)
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                self.on_publish(request_id, app_name, stream_key).await
            }
            ServerSessionEvent::PlayStreamRequested { request_id, app_name, stream_key, stream_id, .. } => {
                self.on_play(request_id, app_name, stream_key, stream_id).await
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                let body = metadata::encode_on_metadata(&metadata);
                self.push(FrameKind::Metadata, 0, body)?;
                Ok(vec![])
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.push(FrameKind::Video, timestamp.value, data)?;
                Ok(vec![])
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.push(FrameKind::Audio, timestamp.value, data)?;
                Ok(vec![])
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if matches!(self.role, Role::Publishing { .. }) {
                    tracing::info!("publisher finished");
                    self.end_role();
                }
                Ok(vec![])
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                if matches!(self.role, Role::Playing { .. }) {
                    self.end_role();
                }
                Ok(vec![])
            }
            _ => Ok(vec![]),
        }
    }

    fn push(&mut self, kind: FrameKind, ts: u32, data: Bytes) -> Result<(), ConnError> {
        let Role::Publishing { publisher, .. } = &self.role else {
            // Media from a connection that is not publishing is ignored.
            return Ok(());
        };
        match publisher.push(kind, ts, data) {
            Ok(_) => Ok(()),
            Err(crate::hub::HubError::Frame(e)) => {
                tracing::debug!(error = %e, "skipped unparsable frame");
                Ok(())
            }
            Err(e) => Err(ConnError::Refused(e.to_string())),
        }
    }

    async fn on_publish(
        &mut self,
        request_id: u32,
        app: String,
        stream_key: String,
    ) -> Result<Vec<ServerSessionResult>, ConnError> {
        if !matches!(self.role, Role::Idle) {
            self.refuse("bad_state", "this connection already publishes or plays".into());
            return Ok(self.session.reject_request(request_id, "NetStream.Publish.BadName", "already active")?);
        }
        let req = PublishRequest { app, stream_key: stream_key.clone(), client_addr: Some(self.peer) };
        let internal = self.ctx.transcoding.internal_grant(&stream_key);
        let decision = match internal {
            Some(channel) => Ok(westream_control::hooks::PublishGrant { channel }),
            None => self.ctx.hooks.authorize_publish(&req).await.and_then(|g| {
                // Rendition names are published by our transcoder only.
                match self.ctx.transcoding.split_rendition(&g.channel).1 {
                    Some(_) => Err(westream_control::hooks::Denied::Forbidden(format!(
                        "'{}' is a rendition name, published by the transcoder only",
                        g.channel
                    ))),
                    None => Ok(g),
                }
            }),
        };
        let key_for_log = if stream_key.starts_with(crate::transcode::INTERNAL_PREFIX) {
            "(internal)".to_string()
        } else {
            mask_key(&stream_key)
        };
        let grant = match decision {
            Ok(g) => g,
            Err(denied) => {
                tracing::warn!(key = %key_for_log, reason = %denied, "publish refused");
                self.ctx.hub.metrics().rejected.with_label_values(&[denied.label()]).inc();
                self.send_status("error", "NetStream.Publish.BadName", &denied.to_string())?;
                self.closing = Some(denied.to_string());
                return Ok(vec![]);
            }
        };
        tracing::Span::current().record("channel", grant.channel.as_str());
        let publisher = match self.ctx.hub.publish(&grant.channel) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(reason = %e, "publish refused");
                self.ctx.hub.metrics().rejected.with_label_values(&["already_publishing"]).inc();
                self.send_status("error", "NetStream.Publish.BadName", &e.to_string())?;
                self.closing = Some(e.to_string());
                return Ok(vec![]);
            }
        };
        tracing::info!(key = %key_for_log, "publishing");
        self.role = Role::Publishing { publisher, stream_id: 0 };
        Ok(self.session.accept_request(request_id)?)
    }

    async fn on_play(
        &mut self,
        request_id: u32,
        app: String,
        name: String,
        stream_id: u32,
    ) -> Result<Vec<ServerSessionResult>, ConnError> {
        if !matches!(self.role, Role::Idle) {
            self.refuse("bad_state", "this connection already publishes or plays".into());
            return Ok(self.session.reject_request(request_id, "NetStream.Play.Failed", "already active")?);
        }
        let (channel, token, viewer) = split_play_name(&name);
        let internal = self.ctx.transcoding.is_internal_play(&name);
        // A rendition is played under its source channel's rights.
        let (base, _) = self.ctx.transcoding.split_rendition(channel);
        let req = PlayRequest {
            app,
            channel: base.to_string(),
            token,
            protocol: PlayProtocol::Rtmp,
            client_addr: Some(self.peer),
        };
        if let Err(denied) = self.ctx.hooks.authorize_play(&req).await {
            tracing::info!(reason = %denied, "play refused");
            self.ctx.hub.metrics().rejected.with_label_values(&[denied.label()]).inc();
            // A channel that does not exist is "not found"; a policy refusal
            // (a ticketed broadcast without a valid token, ...) a failed play.
            let code = match denied {
                Denied::UnknownChannel { .. } | Denied::UnknownApp { .. } => "NetStream.Play.StreamNotFound",
                _ => "NetStream.Play.Failed",
            };
            self.send_status("error", code, &denied.to_string())?;
            self.closing = Some(denied.to_string());
            return Ok(vec![]);
        }
        tracing::Span::current().record("channel", channel);
        let sub = self.ctx.hub.watch(channel);
        tracing::debug!(live = sub.stream().is_live(), "playing");
        self.ctx.hub.metrics().viewers.with_label_values(&["rtmp"]).inc();
        let counted = (!internal).then(|| self.ctx.audience.join_as(base, Connected::Rtmp, viewer.as_deref()));
        if self.ctx.config.send_buffer_bytes > 0 {
            self.writer.set_send_buffer(self.ctx.config.send_buffer_bytes)?;
        }
        let metrics = self.ctx.hub.metrics();
        self.writer.set_meter(Meter {
            stream: (!internal).then(|| Arc::clone(sub.stream())),
            bytes_out: (!internal).then(|| metrics.bytes_out_rtmp.clone()),
            frames_dropped: metrics.frames_dropped.clone(),
            direct_viewers: metrics.rtmp_direct_viewers.clone(),
            handbacks: metrics.rtmp_handbacks.clone(),
        });
        self.role = Role::Playing { sub: Box::new(sub), stream_id, internal, _counted: counted };
        // rml_rtmp's accept would also send `|RtmpSampleAccess` and a
        // `NetStream.Data.Start` data message, which FFmpeg turns into extra
        // data and subtitle streams; answer the play ourselves instead.
        let _ = request_id;
        self.send_message(
            RtmpMessage::UserControl {
                event_type: UserControlEventType::StreamBegin,
                stream_id: Some(stream_id),
                buffer_length: None,
                timestamp: None,
            },
            0,
        )?;
        self.send_status("status", "NetStream.Play.Reset", "reset")?;
        self.send_status("status", "NetStream.Play.Start", &format!("playing {channel}"))?;
        Ok(vec![])
    }

    fn refuse(&mut self, label: &str, reason: String) {
        self.ctx.hub.metrics().rejected.with_label_values(&[label]).inc();
        tracing::warn!(%reason, "request refused");
        self.closing = Some(reason);
    }

    /// Writes an `onStatus` on the play or publish stream.
    fn send_status(&mut self, level: &str, code: &str, description: &str) -> Result<(), ConnError> {
        let stream_id = match &self.role {
            Role::Playing { stream_id, .. } | Role::Publishing { stream_id, .. } => *stream_id,
            Role::Idle => 1,
        };
        let props = [("level", level), ("code", code), ("description", description)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), rml_amf0::Amf0Value::Utf8String(v.to_string())))
            .collect();
        let msg = RtmpMessage::Amf0Command {
            command_name: "onStatus".into(),
            transaction_id: 0.0,
            command_object: rml_amf0::Amf0Value::Null,
            additional_arguments: vec![rml_amf0::Amf0Value::Object(props)],
        };
        self.send_message(msg, stream_id.max(1))
    }

    /// Writes a message with a fresh serializer: a full (type 0) header is
    /// valid whatever the session sent on that chunk stream before.
    fn send_message(&mut self, msg: RtmpMessage, stream_id: u32) -> Result<(), ConnError> {
        let payload = msg
            .into_message_payload(RtmpTimestamp::new(0), stream_id)
            .map_err(ServerSessionError::from)?;
        let mut ser = ChunkSerializer::new();
        ser.set_max_chunk_size(self.ctx.config.chunk_size, RtmpTimestamp::new(0))
            .map_err(ServerSessionError::from)?;
        let packet = ser.serialize(&payload, true, false).map_err(ServerSessionError::from)?;
        self.out.push_back(Bytes::from(packet.bytes));
        Ok(())
    }

    /// Queues `first` and whatever else is ready, then writes them together;
    /// once nothing more is waiting, hands the player to the fan-out.
    async fn send_frames(&mut self, first: Arc<crate::media::Frame>) -> Result<(), ConnError> {
        let Role::Playing { sub, stream_id, internal, _counted } = &mut self.role else { return Ok(()) };
        let internal = *internal;
        if let Some(guard) = _counted {
            guard.saw_media();
        }
        let chunk_size = self.ctx.config.chunk_size as usize;
        let encode = |f: &crate::media::Frame| {
            if *stream_id == 1 {
                f.rtmp_chunks(chunk_size)
            } else {
                super::chunks::encode_frame(f, *stream_id, chunk_size)
            }
        };
        let mut queued = 0usize;
        let b = encode(&first);
        queued += b.len();
        self.out.push_back(b);
        // Up to 64 frames or 1 MiB per write; the hub already hands audio
        // over together with the next video frame.
        let mut drained = false;
        while self.out.len() < 64 && queued < 1 << 20 {
            let Some(f) = sub.try_recv() else {
                drained = true;
                break;
            };
            let b = encode(&f);
            queued += b.len();
            self.out.push_back(b);
        }
        // The shared encodings are for message stream id 1 (what players use).
        let direct = drained && *stream_id == 1;
        let stream = Arc::clone(sub.stream());
        let written = self.flush().await?;
        if !internal {
            stream.bytes_out.fetch_add(written as u64, Ordering::Relaxed);
        }
        if direct && self.writer.mode() == Mode::Owner && self.closing.is_none() {
            let Role::Playing { sub, .. } = &mut self.role else { return Ok(()) };
            if sub.go_direct(Arc::clone(&self.writer) as Arc<dyn crate::hub::DirectSink>) == GoDirect::Armed {
                tracing::trace!("fan-out writes this player now");
            }
        }
        Ok(())
    }

    /// Writes everything queued, many buffers per syscall.
    async fn flush(&mut self) -> Result<usize, ConnError> {
        let timeout = ms(self.ctx.config.idle_timeout_ms);
        let written = tokio::time::timeout(timeout, self.writer.flush(&mut self.out))
            .await
            .map_err(|_| ConnError::Timeout("peer stopped reading"))??;
        if written > 0 && matches!(self.role, Role::Playing { internal: false, .. }) {
            self.ctx.hub.metrics().bytes_out_rtmp.inc_by(written as u64);
        }
        Ok(written)
    }

    fn end_role(&mut self) {
        if let Role::Playing { .. } = self.role {
            self.ctx.hub.metrics().viewers.with_label_values(&["rtmp"]).dec();
        }
        self.role = Role::Idle;
    }

    fn finish(&mut self) {
        self.writer.close();
        self.end_role();
    }
}

/// Splits `channel?token=…&viewer=…` (players put a play token and a viewer
/// token in the stream name; percent-encoded as in an HTTP query, or plain).
fn split_play_name(name: &str) -> (&str, Option<String>, Option<String>) {
    match name.split_once('?') {
        None => (name, None, None),
        Some((channel, query)) => {
            let param = |key: &str| query.split('&').find_map(|kv| kv.strip_prefix(key)).map(percent_decode);
            (channel, param("token="), param("viewer="))
        }
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn play_name_splits_off_a_token() {
        assert_eq!(split_play_name("demo"), ("demo", None, None));
        assert_eq!(split_play_name("demo?token=abc&x=1"), ("demo", Some("abc".into()), None));
        assert_eq!(split_play_name("demo?x=1"), ("demo", None, None));
        assert_eq!(split_play_name("demo?token=a%2Bb%2F.c%zz%4"), ("demo", Some("a+b/.c%zz%4".into()), None));
        assert_eq!(split_play_name("demo?viewer=v.w&token=t"), ("demo", Some("t".into()), Some("v.w".into())));
    }
}
