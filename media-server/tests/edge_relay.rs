//! Edges pull channels from origins over QUIC: ffmpeg publishes to an
//! origin, ffprobe plays HTTP-FLV and HLS from an edge; wrong tokens and
//! garbage are refused without harm to other edges; an edge lets go of an
//! idle upstream and fails over to a second origin.

mod common;

use std::time::{Duration, Instant};

use common::*;
use westream_media::edge::EdgeNode;
use westream_media::{Config, Server};

const TOKEN: &str = "edge-node-token";

/// An origin with the relay on an ephemeral UDP port.
async fn start_origin(node_id: &str) -> Server {
    let extra = format!("[relay]\nenabled = true\nquic_listen = \"127.0.0.1:0\"\nnode_tokens = [\"{TOKEN}\"]\n");
    let mut cfg = test_config(&extra);
    cfg.server.node_id = node_id.into();
    Server::start(cfg).await.expect("origin starts")
}

/// An edge config pulling from `origins`, as TOML.
fn edge_config(origins: &[&Server], token: &str, extra_hub: &str, idle_ms: u64) -> Config {
    let mut text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
shutdown_timeout_ms = 2000
[hub]
{extra_hub}
[hls]
segment_duration_ms = 1000
[edge]
id = "edge-test"
node_token = "{token}"
upstream_idle_timeout_ms = {idle_ms}
upstream_wait_ms = 4000
reconnect_initial_ms = 100
reconnect_max_ms = 500
"#,
        scratch_dir("edge").display()
    );
    for o in origins {
        let relay = o.relay.as_ref().expect("origin has a relay");
        text.push_str(&format!("[[edge.origins]]\nquic_addr = \"{}\"\ncert_sha256 = \"{}\"\n", relay.addr, relay.cert_sha256));
    }
    Config::parse(&text).expect("edge config parses")
}

/// Samples the edge's channel every 10 ms while it is live (up to 100
/// samples in 5 s): (samples, samples with frames held for a batch).
async fn held_while_live(edge: &EdgeNode, channel: &str) -> (u32, u32) {
    let (mut samples, mut held) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while samples < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(stream) = edge.server.hub.live(channel).filter(|s| s.has_video()) {
            samples += 1;
            held += u32::from(stream.held() > 0);
        }
    }
    (samples, held)
}

fn flv_url(edge: &EdgeNode, channel: &str) -> String {
    format!("http://{}/live/{channel}.flv", edge.server.http_addr)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulls_a_channel_over_quic_and_serves_flv_and_hls_with_h264_and_aac() {
    let clip = make_clip(ClipSpec { seconds: 10, ..ClipSpec::default() });
    let origin = start_origin("origin-a").await;
    let mut ffmpeg = publish(&clip, &rtmp_url(origin.rtmp_addr, "demo-key"), &[]);
    wait_media(&origin, "demo").await;
    // The edge's own merged writes would hold each frame up to 100 ms.
    let edge_hub = "publisher_grace_ms = 400\nmerge_write_ms = 100";
    let edge = EdgeNode::start(edge_config(&[&origin], TOKEN, edge_hub, 500), None).await.expect("edge starts");
    assert!(edge.upstreams.active().is_empty(), "nothing is pulled before a viewer asks");

    // HLS first: the first request starts the upstream and waits for a segment.
    let hls = probe(format!("http://{}/live/demo/index.m3u8", edge.server.http_addr), Duration::from_secs(30));
    let flv = probe(flv_url(&edge, "demo"), Duration::from_secs(30));
    let (hls, flv, held) = tokio::join!(hls, flv, held_while_live(&edge, "demo"));
    // The origin batched the frames already (its merged writes): the edge
    // sends each batch on once it has read it, so between batches it holds
    // nothing, where its own 100 ms would hold frames nearly always.
    assert!(held.0 >= 50, "the edge's channel was seldom live: {held:?}");
    assert!(held.1 * 2 < held.0, "the edge held frames in {} of {} samples", held.1, held.0);
    assert!(flv.success, "ffprobe FLV failed: {}", flv.stderr);
    assert_eq!(flv.codec_names(), vec!["aac", "h264"], "{}", flv.stderr);
    assert!(flv.of("video").len() > 30, "few video packets from the edge: {}", flv.of("video").len());
    assert!(flv.of("video").first().is_some_and(|p| p.keyframe), "the edge's FLV starts on a keyframe");
    flv.assert_monotonic();
    let mut hls_codecs = hls.codec_names();
    hls_codecs.dedup();
    assert_eq!(hls_codecs, vec!["aac", "h264"], "{}", hls.stderr);
    assert!(!hls.of("video").is_empty());
    // One pull served both protocols.
    assert_eq!(edge.upstreams.pulls_started(), 1);
    let _ = ffmpeg.wait().await;

    // The channel ended at the origin, the viewers left: the upstream goes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !edge.upstreams.active().is_empty() {
        assert!(Instant::now() < deadline, "upstream never released: {:?}", edge.upstreams.active());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(&format!("http://{}/metrics", edge.server.http_addr)).await;
    assert!(metric(&metrics, "westream_edge_upstream_bytes_total") > 10_000.0, "{metrics}");
    edge.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_node_token_and_garbage_frames_are_refused_without_affecting_a_good_edge() {
    let clip = make_clip(ClipSpec { seconds: 8, ..ClipSpec::default() });
    let origin = start_origin("origin-a").await;
    let _ffmpeg = publish(&clip, &rtmp_url(origin.rtmp_addr, "demo-key"), &[]);
    wait_media(&origin, "demo").await;

    let good = EdgeNode::start(edge_config(&[&origin], TOKEN, "", 5000), None).await.unwrap();
    let bad = EdgeNode::start(edge_config(&[&origin], "not-the-token", "", 5000), None).await.unwrap();
    let good_reader = reqwest::get(flv_url(&good, "demo")).await.unwrap();
    assert_eq!(good_reader.status(), 200);

    // A QUIC client that pins the right certificate but sends garbage.
    let relay = origin.relay.clone().unwrap();
    let endpoint = westream_edge::quic::client_endpoint(relay.addr).unwrap();
    let cfg = westream_edge::quic::pinned_client_config(&relay.cert_sha256).unwrap();
    let conn = endpoint.connect_with(cfg, relay.addr, westream_edge::quic::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\x07garbage that is not relay framing").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.expect("origin closes a garbage connection");
    assert!(closed.to_string().contains("malformed"), "{closed}");

    // A client that pins another fingerprint never gets through the handshake.
    let wrong = westream_edge::quic::pinned_client_config(&"0".repeat(64)).unwrap();
    let attempt = endpoint.connect_with(wrong, relay.addr, westream_edge::quic::SERVER_NAME).unwrap().await;
    assert!(attempt.is_err(), "a mismatched pin must fail the handshake");

    let (status, body) = http_get(&flv_url(&bad, "demo")).await;
    assert_eq!(status, 404, "{body}");
    let (_, metrics) = http_get(&format!("http://{}/metrics", origin.http_addr)).await;
    assert!(metrics.contains("westream_relay_refused_total{reason=\"unauthorized\"}"), "{metrics}");

    // The good edge's viewer kept receiving all along.
    let mut reader = good_reader;
    let mut bytes = 0usize;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), reader.chunk()).await {
            Ok(Ok(Some(c))) => bytes += c.len(),
            other => panic!("good edge's reader stalled or ended: {other:?}"),
        }
    }
    assert!(bytes > 20_000, "good edge delivered only {bytes} bytes");
    good.shutdown().await;
    bad.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_origin_dies_the_edge_fails_over_and_the_reader_keeps_receiving() {
    let clip = make_clip(ClipSpec { seconds: 16, ..ClipSpec::default() });
    let first = start_origin("origin-a").await;
    let second = start_origin("origin-b").await;
    let _p1 = publish(&clip, &rtmp_url(first.rtmp_addr, "demo-key"), &[]);
    let _p2 = publish(&clip, &rtmp_url(second.rtmp_addr, "demo-key"), &[]);
    wait_media(&first, "demo").await;
    wait_media(&second, "demo").await;
    let edge = EdgeNode::start(edge_config(&[&first, &second], TOKEN, "publisher_grace_ms = 8000", 5000), None).await.unwrap();

    // ffmpeg reads FLV from the edge for the whole test.
    let out = scratch_dir("failover").join("read.flv");
    let mut reader = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &flv_url(&edge, "demo"), "-c", "copy", "-f", "flv", "-y"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // And a byte counter, to measure the gap.
    let mut counter = reqwest::get(flv_url(&edge, "demo")).await.unwrap();
    assert_eq!(counter.status(), 200);
    let mut last_data = Instant::now();
    let started = Instant::now();
    let mut killed = false;
    let mut longest_gap = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(10) {
        if !killed && started.elapsed() > Duration::from_secs(2) {
            killed = true;
            // Stop the origin the edge is pulling from (the first).
            first.shutdown_token().cancel();
        }
        match tokio::time::timeout(Duration::from_secs(6), counter.chunk()).await {
            Ok(Ok(Some(_))) => {
                longest_gap = longest_gap.max(last_data.elapsed());
                last_data = Instant::now();
            }
            other => panic!("the edge's FLV stalled or ended after the origin died: {other:?}"),
        }
    }
    assert!(longest_gap < Duration::from_secs(5), "gap of {longest_gap:?}");
    assert!(reader.try_wait().unwrap().is_none(), "ffmpeg's read ended (EOF) after the failover");
    assert!(edge.upstreams.stats().reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let _ = reader.kill().await;
    assert!(count_packets(&out, "video").await > 100, "the reader got few frames");
    edge.shutdown().await;
    second.shutdown().await;
    first.shutdown().await;
}
