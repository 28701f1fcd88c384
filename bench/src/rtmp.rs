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
    let (mut stream, _, remaining) = connect(target).await?;
    let (mut session, hello) = PlaySession::new(&target.app, &target.stream, &target.tc_url)?;
    stream.write_all(&hello).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut input: &[u8] = &remaining;
    loop {
        if !input.is_empty() {
            probe.bytes += input.len() as u64;
            let now = clock.now_us();
            session.handle_input(input, &mut out, |type_id, prefix| {
                if type_id == 9 {
                    probe.handle_video(prefix, now);
                } else {
                    probe.handle_audio(prefix, now);
                }
            })?;
            if session.is_playing() {
                probe.playing = true;
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        input = &buf[..n];
    }
}
