//! The HTTP-FLV player: one GET, a chunked (or plain) FLV body, tags fed to
//! the probe. hyper's HTTP/1 client connection does the HTTP; the FLV
//! demuxer keeps only each tag's first bytes.

use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::flv::{FlvDemuxer, TAG_AUDIO, TAG_PREFIX_LEN, TAG_VIDEO};
use crate::probe::ViewerProbe;
use crate::stamp::{STAMP_LEN, VIDEO_STAMP_OFFSET};
use crate::target::HttpTarget;

// The kept prefix of a tag must reach past the video stamp.
const _: () = assert!(TAG_PREFIX_LEN >= VIDEO_STAMP_OFFSET + STAMP_LEN);

/// Plays `target` until `stop` turns true, measuring into the returned
/// probe (with every video frame's arrival time when `record_arrivals`).
pub(crate) async fn run_player(
    target: Arc<HttpTarget>,
    clock: Clock,
    record_arrivals: bool,
    mut stop: watch::Receiver<bool>,
) -> ViewerProbe {
    let mut probe = ViewerProbe::new(clock.now_us());
    if record_arrivals {
        probe.video_arrivals = Some(Vec::new());
    }
    let result = tokio::select! {
        r = play(&target, clock, &mut probe, false) => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
    };
    if let Err(e) = result {
        probe.error = Some(format!("{e:#}"));
    }
    probe
}

/// Connects, plays until the first video keyframe and hangs up; the probe's
/// startup is the time to that keyframe.
pub(crate) async fn first_keyframe(target: &HttpTarget, clock: Clock) -> anyhow::Result<ViewerProbe> {
    let mut probe = ViewerProbe::new(clock.now_us());
    play(target, clock, &mut probe, true).await?;
    Ok(probe)
}

async fn play(
    target: &HttpTarget,
    clock: Clock,
    probe: &mut ViewerProbe,
    until_keyframe: bool,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake")?;
    let request = Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, "westream-bench")
        .body(Empty::<Bytes>::new())?;
    let receive = async {
        let response = sender.send_request(request).await.context("http request")?;
        if !response.status().is_success() {
            bail!("http status {}", response.status());
        }
        probe.playing = true;
        let mut body = response.into_body();
        let mut demuxer = FlvDemuxer::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.context("http body")?.into_data() else {
                continue;
            };
            probe.bytes += data.len() as u64;
            let now = clock.now_us();
            demuxer.handle_input(&data, |tag| match tag.tag_type {
                TAG_VIDEO => probe.handle_video(tag.prefix(), now),
                TAG_AUDIO => probe.handle_audio(tag.prefix(), now),
                _ => {}
            })?;
            if until_keyframe && probe.first_key_seq.is_some() {
                return Ok(());
            }
        }
        bail!("server ended the stream")
    };
    tokio::select! {
        r = conn => {
            r.context("http connection")?;
            bail!("server closed the connection")
        }
        r = receive => r,
    }
}
