//! RTMP clients: the stamped publisher on `rml_rtmp`'s `ClientSession`,
//! the measuring player on the lean [`crate::rtmp_play`] session. Thin async shells; the stream itself comes from
//! [`crate::media`] and the measuring from [`crate::probe`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::media::{aac_sequence_header, avc_sequence_header, FrameFactory, AUDIO_SAMPLE_RATE};
use crate::probe::ViewerProbe;
use crate::read_loop::{ConnHandler, ReadLoop};
use crate::rtmp_play::PlaySession;
use crate::target::RtmpTarget;

/// Size of a player's socket read buffer.
const READ_BUF: usize = 16 * 1024;
/// How long connecting, handshaking and being accepted may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and runs the RTMP handshake; returns the session and the bytes
/// the server sent past the handshake.
async fn connect(target: &RtmpTarget) -> anyhow::Result<(TcpStream, ClientSession, Vec<u8>)> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    stream.set_nodelay(true)?;
    let mut handshake = Handshake::new(PeerType::Client);
    let p0_p1 = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| anyhow!("handshake: {e}"))?;
    stream.write_all(&p0_p1).await?;
    let mut buf = [0u8; 4096];
    // C0+C1 out, S0+S1+S2 in, C2 out: a handful of reads at most.
    let remaining = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("server closed the connection during the handshake");
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow!("handshake: {e}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(target.tc_url.clone());
    let (session, _) = ClientSession::new(config).map_err(|e| anyhow!("session: {e}"))?;
    Ok((stream, session, remaining))
}

/// Splits session results into bytes to send and events.
fn collect(
    results: Vec<ClientSessionResult>,
    out: &mut Vec<u8>,
    events: &mut Vec<ClientSessionEvent>,
) {
    for result in results {
        match result {
            ClientSessionResult::OutboundResponse(packet) => out.extend_from_slice(&packet.bytes),
            ClientSessionResult::RaisedEvent(event) => events.push(event),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishStats {
    pub(crate) video_sent: u32,
    pub(crate) audio_sent: u32,
    pub(crate) bytes_sent: u64,
    /// Worst lateness of a frame against its schedule, microseconds.
    pub(crate) max_lag_us: u64,
}

/// Publishes the synthetic stream in real time until `stop` turns true.
///
/// `ready` gets the stream's start time once the server accepted the
/// publish; `video_sent` tracks frames sent so far.
pub(crate) async fn run_publisher(
    target: RtmpTarget,
    factory: FrameFactory,
    clock: Clock,
    ready: oneshot::Sender<u64>,
    video_sent: Arc<AtomicU32>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<PublishStats> {
    let (mut stream, mut session, remaining) =
        tokio::time::timeout(SETUP_TIMEOUT, connect(&target))
            .await
            .context("publisher: connect timed out")??;
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; READ_BUF];

    // connect, then publish, each answered by an event.
    let request = session
        .request_connection(target.app.clone())
        .map_err(|e| anyhow!("publisher: connect request: {e}"))?;
    collect(vec![request], &mut out, &mut events);
    let mut pending = remaining;
    let setup = async {
        loop {
            if !pending.is_empty() {
                let results = session
                    .handle_input(&pending)
                    .map_err(|e| anyhow!("publisher: {e}"))?;
                collect(results, &mut out, &mut events);
                pending.clear();
            }
            for event in events.drain(..) {
                match event {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = session
                            .request_publishing(target.stream.clone(), PublishRequestType::Live)
                            .map_err(|e| anyhow!("publisher: publish request: {e}"))?;
                        if let ClientSessionResult::OutboundResponse(p) = r {
                            out.extend_from_slice(&p.bytes);
                        }
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        bail!("publisher: connect rejected: {description}")
                    }
                    ClientSessionEvent::PublishRequestAccepted => return Ok(()),
                    ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                        bail!("publisher: server answered {code}")
                    }
                    _ => {}
                }
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("publisher: server closed the connection before accepting the publish");
            }
            pending.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .context("publisher: publish was not accepted in time")??;

    let shape = factory.shape().clone();
    let mut metadata = StreamMetadata::new();
    metadata.video_width = Some(1280);
    metadata.video_height = Some(720);
    metadata.video_codec_id = Some(7);
    metadata.video_frame_rate = Some(shape.fps() as f32);
    metadata.audio_codec_id = Some(10);
    metadata.audio_bitrate_kbps = Some(shape.audio_kbps as u32);
    metadata.audio_sample_rate = Some(AUDIO_SAMPLE_RATE as u32);
    metadata.audio_channels = Some(2);
    metadata.audio_is_stereo = Some(true);
    metadata.encoder = Some("westream-bench".to_string());
    let mut stats = PublishStats::default();
    let zero = RtmpTimestamp::new(0);
    let headers = [
        session.publish_metadata(&metadata),
        session.publish_video_data(avc_sequence_header(), zero, false),
        session.publish_audio_data(aac_sequence_header(), zero, false),
    ];
    for r in headers {
        let r = r.map_err(|e| anyhow!("publisher: {e}"))?;
        collect(vec![r], &mut out, &mut events);
    }
    stream.write_all(&out).await?;
    stats.bytes_sent += out.len() as u64;
    out.clear();

    let start_us = clock.now_us();
    let _ = ready.send(start_us);
    let mut video_seq: u32 = 0;
    let mut audio_seq: u32 = 0;
    loop {
        let video_due = start_us + shape.video_due_us(video_seq);
        let audio_due = start_us + shape.audio_due_us(audio_seq);
        let due = video_due.min(audio_due);
        tokio::select! {
            biased;
            // The wait's guard must not live across the awaits below.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = tokio::time::sleep_until(clock.instant_at(due)) => {
                let now = clock.now_us();
                stats.max_lag_us = stats.max_lag_us.max(now.saturating_sub(due));
                let result = if video_due <= audio_due {
                    let ts = RtmpTimestamp::new((shape.video_due_us(video_seq) / 1000) as u32);
                    let body: Bytes = factory.video_frame(video_seq, now);
                    video_seq += 1;
                    session.publish_video_data(body, ts, false)
                } else {
                    let ts = RtmpTimestamp::new((shape.audio_due_us(audio_seq) / 1000) as u32);
                    let body = factory.audio_frame(audio_seq, now);
                    audio_seq += 1;
                    session.publish_audio_data(body, ts, false)
                };
                let r = result.map_err(|e| anyhow!("publisher: {e}"))?;
                collect(vec![r], &mut out, &mut events);
                stream.write_all(&out).await.context("publisher: write")?;
                stats.bytes_sent += out.len() as u64;
                out.clear();
                video_sent.store(video_seq, Ordering::Relaxed);
            }
            read = stream.read(&mut buf) => {
                let n = read.context("publisher: read")?;
                if n == 0 {
                    bail!("publisher: server closed the connection");
                }
                let results = session.handle_input(&buf[..n]).map_err(|e| anyhow!("publisher: {e}"))?;
                collect(results, &mut out, &mut events);
                events.clear();
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
            }
        }
    }
    stats.video_sent = video_seq;
    stats.audio_sent = audio_seq;
    Ok(stats)
}

/// Plays `target` until `stop` turns true, measuring into the returned probe.
pub(crate) async fn run_player(
    target: Arc<RtmpTarget>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> ViewerProbe {
    let mut probe = ViewerProbe::new(clock.now_us());
    let result = tokio::select! {
        r = play(&target, clock, &mut probe) => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
    };
    if let Err(e) = result {
        probe.error = Some(format!("{e:#}"));
    }
    probe
}

async fn play(target: &RtmpTarget, clock: Clock, probe: &mut ViewerProbe) -> anyhow::Result<()> {
    let (mut stream, mut session, remaining) = start_playing(target).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut input: &[u8] = &remaining;
    loop {
        if !input.is_empty() {
            take_input(&mut session, probe, input, clock.now_us(), &mut out)?;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!(SERVER_CLOSED);
        }
        input = &buf[..n];
    }
}

/// Why a player stopped when the server closed the connection.
const SERVER_CLOSED: &str = "server closed the connection";

/// Connects, handshakes and sends the play request; returns the socket,
/// the session and the bytes the server sent past the handshake.
async fn start_playing(target: &RtmpTarget) -> anyhow::Result<(TcpStream, PlaySession, Vec<u8>)> {
    let (mut stream, _, remaining) = connect(target).await?;
    let (session, hello) = PlaySession::new(&target.app, &target.stream, &target.tc_url)?;
    stream.write_all(&hello).await?;
    Ok((stream, session, remaining))
}

/// One read's worth of bytes from the server, `now` its arrival: frames
/// measured into `probe`, replies (acknowledgements) appended to `out`.
fn take_input(
    session: &mut PlaySession,
    probe: &mut ViewerProbe,
    input: &[u8],
    now: u64,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    probe.bytes += input.len() as u64;
    session.handle_input(input, out, |type_id, prefix| {
        if type_id == 9 {
            probe.handle_video(prefix, now);
        } else {
            probe.handle_audio(prefix, now);
        }
    })?;
    if session.is_playing() {
        probe.playing = true;
    }
    Ok(())
}

/// A player read on a [`PlayerLoop`]'s thread instead of a task of its own.
pub(crate) struct LoopPlayer {
    session: PlaySession,
    probe: ViewerProbe,
    /// Replies the socket did not take yet.
    out: Vec<u8>,
}

impl LoopPlayer {
    /// Takes one read, writing any replies without waiting (they are a few
    /// bytes; what the socket does not take waits for the next read).
    fn take(&mut self, tcp: &std::net::TcpStream, input: &[u8], now: u64) -> anyhow::Result<()> {
        use std::io::Write;
        take_input(&mut self.session, &mut self.probe, input, now, &mut self.out)?;
        while !self.out.is_empty() {
            match (&*tcp).write(&self.out) {
                Ok(0) => bail!("the socket took no reply bytes"),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// RTMP players read on one epoll thread ([`ReadLoop`]) that sleeps
/// `pause` once it has read every ready socket (see [`crate::read_loop`]
/// for why). Players connect on tokio ([`PlayerLoop::start_player`]), then
/// move here.
pub(crate) struct PlayerLoop {
    to_loop: std::sync::mpsc::Sender<(std::net::TcpStream, LoopPlayer, Vec<u8>)>,
    done: Arc<std::sync::atomic::AtomicBool>,
    ended: Arc<AtomicU32>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<ViewerProbe>>>,
}

/// The [`PlayerLoop`]'s handler: measures each read, keeps the probes of
/// players that ended.
struct PlayerReads {
    clock: Clock,
    ended: Vec<ViewerProbe>,
    ended_count: Arc<AtomicU32>,
}

impl ConnHandler for PlayerReads {
    type Conn = LoopPlayer;

    fn read(&mut self, _id: usize, tcp: &std::net::TcpStream, player: &mut LoopPlayer, data: Option<&[u8]>) -> bool {
        let Some(input) = data else {
            player.probe.error.get_or_insert_with(|| SERVER_CLOSED.to_string());
            return false;
        };
        match player.take(tcp, input, self.clock.now_us()) {
            Ok(()) => true,
            Err(e) => {
                player.probe.error = Some(format!("{e:#}"));
                false
            }
        }
    }

    fn closed(&mut self, _id: usize, player: LoopPlayer) {
        self.ended.push(player.probe);
        self.ended_count.fetch_add(1, Ordering::Relaxed);
    }
}

impl PlayerLoop {
    pub(crate) fn start(clock: Clock, pause: Duration) -> anyhow::Result<PlayerLoop> {
        let (to_loop, from_connects) = std::sync::mpsc::channel::<(std::net::TcpStream, LoopPlayer, Vec<u8>)>();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loop_done = Arc::clone(&done);
        let ended = Arc::new(AtomicU32::new(0));
        let ended_count = Arc::clone(&ended);
        let thread = std::thread::Builder::new()
            .name("rtmp-players".into())
            .spawn(move || {
                let mut lp = ReadLoop::new(pause)?;
                let mut reads = PlayerReads { clock, ended: Vec::new(), ended_count };
                while !loop_done.load(Ordering::Relaxed) {
                    while let Ok((tcp, player, remaining)) = from_connects.try_recv() {
                        let id = lp.add(tcp, player)?;
                        lp.feed(id, &remaining, &mut reads);
                    }
                    lp.poll(Duration::from_millis(5), &mut reads)?;
                }
                lp.close_all(&mut reads);
                Ok(reads.ended)
            })
            .context("start the players' thread")?;
        Ok(PlayerLoop { to_loop, done, ended, thread })
    }

    /// Players whose connection ended so far (the server closed it or it
    /// broke).
    pub(crate) fn ended(&self) -> u32 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Connects one player and hands it to the loop; `Some(probe)` when it
    /// failed before (the probe says why).
    pub(crate) fn start_player(&self, target: Arc<RtmpTarget>, clock: Clock) -> impl std::future::Future<Output = Option<ViewerProbe>> + Send + 'static {
        let to_loop = self.to_loop.clone();
        async move {
            let mut probe = ViewerProbe::new(clock.now_us());
            let started = tokio::time::timeout(SETUP_TIMEOUT, start_playing(&target))
                .await
                .unwrap_or_else(|_| Err(anyhow!("not playing within {SETUP_TIMEOUT:?}")))
                .and_then(|(stream, session, remaining)| Ok((stream.into_std()?, session, remaining)));
            match started {
                Ok((tcp, session, remaining)) => {
                    let player = LoopPlayer { session, probe, out: Vec::new() };
                    to_loop.send((tcp, player, remaining)).err().map(|e| (e.0).1.probe)
                }
                Err(e) => {
                    probe.error = Some(format!("{e:#}"));
                    Some(probe)
                }
            }
        }
    }

    /// Stops reading and returns the probes of every player it had.
    pub(crate) fn finish(self) -> anyhow::Result<Vec<ViewerProbe>> {
        self.done.store(true, Ordering::Relaxed);
        drop(self.to_loop);
        self.thread.join().map_err(|_| anyhow!("the players' thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::rml_amf0::Amf0Value;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::RtmpMessage;
    use std::collections::HashMap;
    use std::io::{Read, Write};

    /// A scripted RTMP server on loopback: handshake, the replies that
    /// start a play, `frames` stamped video frames, then it closes (once the
    /// player has closed its side).
    /// Returns the bytes it sent past the handshake.
    fn scripted_server(listener: std::net::TcpListener, clock: Clock, frames: u32) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().expect("accept");
            let mut handshake = Handshake::new(PeerType::Server);
            let mut buf = [0u8; 4096];
            loop {
                let n = tcp.read(&mut buf).expect("read");
                assert!(n > 0, "the client left during the handshake");
                match handshake.process_bytes(&buf[..n]).expect("handshake") {
                    HandshakeProcessResult::InProgress { response_bytes } => tcp.write_all(&response_bytes).expect("write"),
                    HandshakeProcessResult::Completed { response_bytes, .. } => {
                        tcp.write_all(&response_bytes).expect("write");
                        break;
                    }
                }
            }
            let mut serializer = ChunkSerializer::new();
            let mut out = serializer.set_max_chunk_size(4096, RtmpTimestamp::new(0)).expect("chunk size").bytes;
            let mut send = |out: &mut Vec<u8>, message: RtmpMessage, stream_id: u32, ts: u32| {
                let payload = message.into_message_payload(RtmpTimestamp::new(ts), stream_id).expect("payload");
                out.extend(serializer.serialize(&payload, false, false).expect("serialize").bytes);
            };
            let command = |name: &str, transaction_id: f64, arguments: Vec<Amf0Value>| RtmpMessage::Amf0Command {
                command_name: name.to_string(),
                transaction_id,
                command_object: Amf0Value::Null,
                additional_arguments: arguments,
            };
            let status = |code: &str| {
                let info = HashMap::from([
                    ("level".to_string(), Amf0Value::Utf8String("status".to_string())),
                    ("code".to_string(), Amf0Value::Utf8String(code.to_string())),
                ]);
                vec![Amf0Value::Object(info)]
            };
            send(&mut out, command("_result", 1.0, status("NetConnection.Connect.Success")), 0, 0);
            send(&mut out, command("_result", 2.0, vec![Amf0Value::Number(1.0)]), 0, 0);
            send(&mut out, command("onStatus", 0.0, status("NetStream.Play.Start")), 1, 0);
            let factory = FrameFactory::new(crate::media::StreamShape::new(2500, 30, 10).expect("shape"));
            let mut sent = 0;
            for seq in 0..frames {
                let data = factory.video_frame(seq, clock.now_us());
                send(&mut out, RtmpMessage::VideoData { data }, 1, seq * 33);
                tcp.write_all(&out).expect("write");
                sent += out.len();
                out.clear();
                // Frames after the first are live: sent once the player
                // has had the first.
                std::thread::sleep(Duration::from_millis(if seq == 0 { 50 } else { 2 }));
            }
            // A graceful close: end of stream for the player, then take
            // what it sent (its commands) until it closes in turn.
            tcp.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let _ = std::io::copy(&mut tcp, &mut std::io::sink());
            sent
        })
    }

    /// A player on the loop plays through a pausing reader: it is playing,
    /// every frame arrives in order and measured, every byte is counted,
    /// and the server's close ends it with a reason.
    #[tokio::test]
    async fn a_player_on_the_loop_measures_every_frame_until_the_server_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = Arc::new(RtmpTarget::parse(&format!("rtmp://{}/live/demo", listener.local_addr().expect("addr"))).expect("url"));
        let clock = Clock::new();
        let server = scripted_server(listener, clock, 25);
        let lp = PlayerLoop::start(clock, Duration::from_millis(1)).expect("loop");
        assert!(lp.start_player(target, clock).await.is_none(), "the player connected");
        let sent = tokio::task::spawn_blocking(move || server.join().expect("server")).await.expect("join");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lp.ended() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let probes = lp.finish().expect("finish");
        assert_eq!(probes.len(), 1);
        let p = &probes[0];
        assert!(p.playing);
        assert_eq!(p.error.as_deref(), Some(SERVER_CLOSED));
        assert_eq!((p.first_key_seq, p.last_video_seq, p.video_frames, p.video_disordered), (Some(0), Some(24), 25, 0));
        assert_eq!(p.latencies_us.len(), 24, "every live frame's latency (all but the first)");
        assert_eq!(p.bytes, sent as u64, "every byte past the handshake");
    }
}
