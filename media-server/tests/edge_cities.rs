//! Origin + control plane (one `serve`) + three edges in three cities, all
//! on loopback: each edge registers and heartbeats; a client near each city
//! is sent to that city's edge for HLS, HTTP-FLV and RTMP; ffprobe plays the
//! answer and finds h264 + aac; only that edge pulled the channel; an edge
//! that stops is out of rotation within two heartbeat intervals.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use westream_media::edge::EdgeNode;
use westream_media::{Config, Server};

const NODE_TOKEN: &str = "cities-node-token";
const HEARTBEAT_MS: u64 = 300;
const CITIES: [(&str, f64, f64); 3] = [("paris", 48.8566, 2.3522), ("tokyo", 35.6762, 139.6503), ("newyork", 40.7128, -74.0060)];

async fn start_origin() -> Server {
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
shutdown_timeout_ms = 2000
[hub]
publisher_grace_ms = 400
[hls]
segment_duration_ms = 1000
[relay]
enabled = true
quic_listen = "127.0.0.1:0"
[control]
dev_mode = true
admin_token = "dev-admin-token"
node_tokens = ["{NODE_TOKEN}"]
[control.edges]
policy = "round_robin"
tolerance_km = 50.0
heartbeat_timeout_ms = {}
{DEMO_SEED}"#,
        scratch_dir("cities-origin").display(),
        2 * HEARTBEAT_MS
    );
    Server::start(Config::parse(&text).expect("origin config")).await.expect("origin starts")
}

async fn start_edge(origin: &Server, id: &str, lat: f64, lon: f64) -> EdgeNode {
    let relay = origin.relay.as_ref().unwrap();
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
shutdown_timeout_ms = 2000
usage_report_interval_ms = 300
[hub]
publisher_grace_ms = 400
[hls]
segment_duration_ms = 1000
[edge]
id = "{id}"
region = "{id}"
latitude = {lat}
longitude = {lon}
node_token = "{NODE_TOKEN}"
heartbeat_interval_ms = {HEARTBEAT_MS}
upstream_idle_timeout_ms = 20000
upstream_wait_ms = 5000
[[edge.origins]]
quic_addr = "{}"
cert_sha256 = "{}"
"#,
        scratch_dir("cities-edge").display(),
        relay.addr,
        relay.cert_sha256
    );
    let control = format!("http://{}", origin.http_addr);
    EdgeNode::start(Config::parse(&text).expect("edge config"), Some(control)).await.expect("edge starts")
}

async fn admin_edges(origin: &Server) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/edges", origin.http_addr))
        .bearer_auth("dev-admin-token")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["edges"].as_array().cloned().unwrap_or_default()
}

async fn play_answer(origin: &Server, format: &str, lat: f64, lon: f64) -> Value {
    let url = format!("http://{}/v1/play/demo?format={format}&lat={lat}&lon={lon}", origin.http_addr);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The codecs ffprobe finds at a live URL (it reads only the stream start).
async fn codecs_at(url: &str) -> Vec<String> {
    let child = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "8000000", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.expect("ffprobe in time").unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v.dedup();
    assert!(!v.is_empty(), "ffprobe found nothing at {url}: {}", String::from_utf8_lossy(&out.stderr));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_city_is_served_by_its_own_edge_in_every_format_and_a_dead_edge_leaves_rotation() {
    let origin = start_origin().await;
    let mut edges = Vec::new();
    for (id, lat, lon) in CITIES {
        edges.push(start_edge(&origin, id, lat, lon).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = admin_edges(&origin).await;
        if listed.len() == 3 && listed.iter().all(|e| e["healthy"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "edges did not all register: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let clip = make_clip(ClipSpec { seconds: 30, ..ClipSpec::default() });
    let _ffmpeg = publish(&clip, &rtmp_url(origin.rtmp_addr, "demo-key"), &[]);
    wait_media(&origin, "demo").await;

    for (i, (id, lat, lon)) in CITIES.iter().enumerate() {
        // A client a few km from the city.
        let (clat, clon) = (lat + 0.05, lon - 0.05);
        let mut urls = Vec::new();
        for format in ["flv", "hls", "rtmp"] {
            let answer = play_answer(&origin, format, clat, clon).await;
            assert_eq!(answer["edge"], *id, "{format}: {answer}");
            urls.push(answer["url"].as_str().unwrap().to_string());
        }
        assert_eq!(edges[i].upstreams.pulls_started(), 0, "{id} pulled before its viewers came");
        let (a, b, c) = tokio::join!(codecs_at(&urls[0]), codecs_at(&urls[1]), codecs_at(&urls[2]));
        for (url, codecs) in urls.iter().zip([a, b, c]) {
            assert_eq!(codecs, vec!["aac", "h264"], "{url}");
        }
        assert_eq!(edges[i].upstreams.pulls_started(), 1, "{id} pulls the channel once for all formats");
        for (j, other) in edges.iter().enumerate().skip(i + 1) {
            assert_eq!(other.upstreams.pulls_started(), 0, "edge {j} pulled without a viewer");
        }
    }

    // Each edge reported the bytes it served to the control plane, under its own id.
    let store = origin.control.as_ref().unwrap().store();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let store = std::sync::Arc::clone(&store);
        let usage = tokio::task::spawn_blocking(move || store.channel_usage("demo", 1000, i64::MAX / 2)).await.unwrap().unwrap().unwrap();
        let served = |node: &str| usage.records.iter().filter(|r| r.node_id == node).map(|r| r.bytes_out).sum::<i64>();
        if CITIES.iter().all(|(id, _, _)| served(id) > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "edges did not report usage: {:?}", usage.records.iter().map(|r| (&r.node_id, r.bytes_out)).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Tokyo dies: within two heartbeat intervals (the configured timeout)
    // plus a beat of slack its clients go elsewhere.
    let tokyo = edges.remove(1);
    tokyo.shutdown().await;
    let stopped = Instant::now();
    loop {
        let answer = play_answer(&origin, "flv", 35.7, 139.7).await;
        if answer["edge"] != "tokyo" {
            assert!(answer["edge"].is_string(), "another edge takes over: {answer}");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_millis(4 * HEARTBEAT_MS + 500), "tokyo still chosen after {:?}", stopped.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for e in edges {
        e.shutdown().await;
    }
    origin.shutdown().await;
}
