//! `westream serve` (origin + control plane) and two `westream edge`
//! processes: the edges register, a client near each is sent to it, ffprobe
//! plays HTTP-FLV from the chosen edge process, and an edge killed with
//! SIGKILL is out of rotation within two heartbeat intervals. And an origin
//! process killed with SIGKILL under an edge: the edge fails over to the
//! next origin while its viewer keeps reading.

mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::Cluster;
use common::*;

const HEARTBEAT_MS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_processes_register_serve_their_region_and_a_killed_edge_leaves_rotation() {
    let mut cluster = Cluster::start_origin(scratch_dir("cluster"), 2 * HEARTBEAT_MS);
    cluster.add_edge("paris", 48.8566, 2.3522, HEARTBEAT_MS);
    cluster.add_edge("tokyo", 35.6762, 139.6503, HEARTBEAT_MS);
    cluster.wait_all_healthy().await;

    let clip = make_clip(ClipSpec { seconds: 10, ..ClipSpec::default() });
    let _ffmpeg = publish(&clip, &rtmp_url(cluster.origin.rtmp, "demo-key"), &[]);

    let answer = cluster.play("flv", 48.9, 2.3).await;
    assert_eq!(answer["edge"], "paris", "{answer}");
    let url = answer["url"].as_str().unwrap().to_string();
    assert!(url.contains(&cluster.edges[0].1.http.to_string()), "{url}");
    // The origin may still be starting the channel: the edge waits for it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let probed = loop {
        let p = probe(&url, Duration::from_secs(30)).await;
        if p.success && !p.of("video").is_empty() {
            break p;
        }
        assert!(Instant::now() < deadline, "no media from the edge process: {} / {}", p.stderr, cluster.edges[0].1.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(probed.codec_names(), vec!["aac", "h264"]);

    let answer = cluster.play("hls", 35.6, 139.7).await;
    assert_eq!(answer["edge"], "tokyo", "{answer}");
    cluster.edges[1].1.kill();
    let killed = Instant::now();
    loop {
        let answer = cluster.play("hls", 35.6, 139.7).await;
        if answer["edge"] == "paris" {
            break;
        }
        assert!(killed.elapsed() < Duration::from_millis(3 * HEARTBEAT_MS + 600), "tokyo still chosen: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The edge pulls from a plain origin process; that process is killed with
/// SIGKILL (no goodbye on the QUIC connection) while ffmpeg reads HTTP-FLV
/// from the edge. The edge notices the silence, fails over to the next
/// origin, and the reader keeps receiving frames: a gap of a few seconds,
/// no EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_with_sigkill_fails_over_and_the_edge_reader_keeps_receiving() {
    let mut cluster = Cluster::start_origin(scratch_dir("cluster-kill"), 2 * HEARTBEAT_MS);
    cluster.add_origin("origin-b");
    cluster.edge_grace_ms = 10_000;
    let clip = make_clip(ClipSpec { seconds: 20, ..ClipSpec::default() });
    let _to_main = publish(&clip, &rtmp_url(cluster.origin.rtmp, "demo-key"), &[]);
    let _to_b = publish(&clip, &rtmp_url(cluster.origins[0].0.rtmp, "demo-key"), &[]);
    // Both origins live before the edge asks (it asks origin-b first).
    for http in [cluster.origin.http, cluster.origins[0].0.http] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !reqwest::get(format!("http://{http}/live/demo.flv")).await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "demo never went live on {http}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.add_edge("paris", 48.8566, 2.3522, HEARTBEAT_MS);
    cluster.wait_all_healthy().await;
    let edge_http = cluster.edges[0].1.http;
    let url = format!("http://{edge_http}/live/demo.flv");

    // Wait until the edge serves the channel (from origin-b, listed first).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut counter = loop {
        let resp = reqwest::get(&url).await.unwrap();
        if resp.status() == 200 {
            break resp;
        }
        assert!(Instant::now() < deadline, "edge never served demo: {}", cluster.edges[0].1.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = scratch_dir("cluster-kill-read").join("read.flv");
    let mut reader = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", &url, "-c", "copy", "-f", "flv", "-y"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let started = Instant::now();
    let mut last_data = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(12) {
        if !killed && started.elapsed() > Duration::from_secs(2) {
            killed = true;
            cluster.origins[0].0.kill();
        }
        match tokio::time::timeout(Duration::from_secs(8), counter.chunk()).await {
            Ok(Ok(Some(_))) => {
                longest_gap = longest_gap.max(last_data.elapsed());
                last_data = Instant::now();
            }
            other => panic!("the edge's FLV stalled or ended after the origin was killed: {other:?}\n{}", cluster.edges[0].1.log()),
        }
    }
    eprintln!("longest gap at the edge viewer across the SIGKILL failover: {longest_gap:?}");
    assert!(longest_gap < Duration::from_secs(6), "gap of {longest_gap:?}");
    assert!(reader.try_wait().unwrap().is_none(), "ffmpeg's read ended (EOF) after the failover");
    let (_, metrics) = http_get(&format!("http://{edge_http}/metrics")).await;
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("westream_edge_upstream_reconnects_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reconnects >= 1.0, "the edge counted no upstream reconnect:\n{metrics}");
    // SIGINT: ffmpeg flushes what it read and exits (SIGKILL would lose its buffer).
    let pid = reader.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.wait()).await;
    let frames = count_packets(&out, "video").await;
    assert!(frames > 150, "the reader got few frames: {frames}");
}
