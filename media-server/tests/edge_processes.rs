//! `westream serve` (origin + control plane) and two `westream edge`
//! processes: the edges register, a client near each is sent to it, ffprobe
//! plays HTTP-FLV from the chosen edge process, and an edge killed with
//! SIGKILL is out of rotation within two heartbeat intervals.

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
