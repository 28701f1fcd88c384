//! RTMP players written by the channel's fan-out: players that keep up are
//! written by it directly; one whose socket fills up is handed back to its
//! own task, catches up (skipping to a keyframe if it must) and goes direct
//! again, while the other players get every frame. Real ffmpeg publishes,
//! real ffprobe plays; the stalling player is an `rml_rtmp` client with a
//! tiny receive buffer that stops reading for a while.

mod common;

use std::time::Duration;

use common::*;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One video message as the stalling player got it.
#[derive(Debug, Clone, Copy)]
struct Video {
    ts: u32,
    keyframe: bool,
}

async fn write_results(
    stream: &mut TcpStream,
    results: Vec<ClientSessionResult>,
    events: &mut Vec<ClientSessionEvent>,
) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => stream.write_all(&p.bytes).await.unwrap(),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

/// Plays `channel` with a small receive buffer, reads for `read_first`,
/// stops reading for `stall`, then reads until the server closes.
async fn stalling_player(
    addr: std::net::SocketAddr,
    channel: &str,
    read_first: Duration,
    stall: Duration,
) -> Vec<Video> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut handshake = Handshake::new(PeerType::Client);
    stream.write_all(&handshake.generate_outbound_p0_and_p1().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let leftover = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during the handshake");
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await.unwrap(),
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await.unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut events = Vec::new();
    write_results(&mut stream, initial, &mut events).await;
    let r = session.request_connection("live".into()).unwrap();
    write_results(&mut stream, vec![r], &mut events).await;
    let mut videos = Vec::new();
    let mut input = leftover;
    let mut playing = false;
    let started = tokio::time::Instant::now();
    let mut stalled = false;
    loop {
        let results = session.handle_input(&input).unwrap();
        write_results(&mut stream, results, &mut events).await;
        for e in events.drain(..) {
            match e {
                ClientSessionEvent::ConnectionRequestAccepted => {
                    let r = session.request_playback(channel.into()).unwrap();
                    let mut more = Vec::new();
                    write_results(&mut stream, vec![r], &mut more).await;
                }
                ClientSessionEvent::PlaybackRequestAccepted => playing = true,
                // Coded frames only (AVC packet type 1), not the sequence
                // header or the end-of-sequence marker.
                ClientSessionEvent::VideoDataReceived { data, timestamp, .. } if data.len() > 1 && data[1] == 1 => {
                    videos.push(Video { ts: timestamp.value, keyframe: data[0] >> 4 == 1 });
                }
                _ => {}
            }
        }
        if playing && !stalled && started.elapsed() > read_first {
            stalled = true;
            tokio::time::sleep(stall).await;
        }
        let n = match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!("the stalling player got nothing for 20 s"),
        };
        if n == 0 {
            return videos;
        }
        input = buf[..n].to_vec();
    }
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics")) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_socket_fills_is_handed_back_and_resumes_on_a_keyframe_while_others_get_every_frame() {
    // 8 s at 6 Mb/s: a 3 s stall is far more than the socket buffers hold.
    let clip = make_clip_with_bitrate(8, "6M");
    let source_video = count_packets(&clip, "video").await;
    // A small send buffer per player, so the stall fills it for sure.
    let mut config = test_config("");
    config.rtmp.send_buffer_bytes = 64 * 1024;
    let server = westream_media::Server::start(config).await.expect("server starts");
    let addr = server.rtmp_addr;
    // Both players wait for the publisher, so both see the first frame.
    let fast = tokio::spawn(probe(rtmp_url(addr, "demo"), Duration::from_secs(40)));
    let slow = tokio::spawn(stalling_player(addr, "demo", Duration::from_millis(1500), Duration::from_secs(3)));
    poll_until(|| async { server.hub.subscribers("demo") }, |n| *n == 2).await;
    let mut publisher = publish(&clip, &rtmp_url(addr, "demo-key"), &[]);
    // The player that keeps up is written by the fan-out.
    let metrics_url = format!("http://{}/metrics", server.http_addr);
    let (_, text) =
        poll_until(|| http_get(&metrics_url), |(_, t)| metric(t, "westream_rtmp_direct_viewers") >= 1).await;
    assert!(metric(&text, "westream_rtmp_direct_viewers") >= 1, "{text}");
    assert!(publisher.wait().await.unwrap().success(), "publisher failed");

    let fast = fast.await.unwrap();
    let slow = slow.await.unwrap();
    let (_, text) = http_get(&metrics_url).await;
    assert!(metric(&text, "westream_rtmp_handbacks_total") >= 1, "the stalled player was never handed back:\n{text}");

    // The player that kept up got every frame, in order.
    fast.assert_monotonic();
    assert_eq!(fast.of("video").len(), source_video);
    // The stalled one: in order, never a frame twice, and wherever frames
    // are missing the next one is a keyframe.
    assert!(slow[0].keyframe, "{:?}", &slow[..3]);
    let mut gaps = 0;
    for pair in slow.windows(2) {
        assert!(pair[1].ts > pair[0].ts, "timestamps went backwards or repeated: {pair:?}");
        if pair[1].ts - pair[0].ts > 100 {
            gaps += 1;
            assert!(pair[1].keyframe, "after a skip the player must restart on a keyframe: {pair:?}");
        }
    }
    assert!(slow.len() < source_video || gaps == 0, "{} of {source_video} frames, {gaps} gaps", slow.len());
    // And it caught up to the end of the stream.
    let last_fast = fast.of("video").last().unwrap().dts.unwrap();
    let last_slow = i64::from(slow.last().unwrap().ts);
    assert!(
        (last_fast - last_slow).abs() <= 100,
        "stalled player ended at {last_slow} ms, the stream at {last_fast} ms"
    );
    server.shutdown().await;
}
