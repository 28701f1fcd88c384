//! The transcoder pool wired into the origin, with real ffmpeg workers:
//! renditions go live as ordinary channels, are listed in the master
//! playlist, come back when a worker dies, queue beyond the slots, and
//! cannot be published from outside.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use westream_media::{Config, Server};
use westream_transcoder::JobState;

/// Encodes are heavy on two cores: one test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LADDERS: &str = r#"
[ladders.passthrough]
[ladders.test]
renditions = [
    { name = "720p", height = 720, video_bitrate_kbps = 600, maxrate_kbps = 700, bufsize_kbps = 1400, preset = "ultrafast", audio_bitrate_kbps = 64 },
    { name = "480p", height = 480, video_bitrate_kbps = 400, maxrate_kbps = 450, bufsize_kbps = 900, preset = "ultrafast", audio_bitrate_kbps = 64 },
    { name = "360p", height = 360, video_bitrate_kbps = 250, maxrate_kbps = 300, bufsize_kbps = 600, preset = "ultrafast", audio_bitrate_kbps = 48 },
]
"#;

fn config(slots: usize) -> Config {
    let dir = scratch_dir("ladders");
    let ladders = dir.join("ladders.toml");
    std::fs::write(&ladders, LADDERS).unwrap();
    test_config(&format!(
        r#"
[transcoder]
ladders_file = "{}"
default_ladder = "test"
[transcoder.pool]
slots = {slots}
restart_backoff_min_ms = 300
"#,
        ladders.display()
    ))
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(sequence, duration ms)` of each segment of a media playlist.
fn media_segments(playlist: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut duration = None;
    for line in playlist.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.split(',').next().and_then(|d| d.parse::<f64>().ok()).map(|d| (d * 1000.0).round() as u64);
        } else if let Some(seq) = line.strip_suffix(".ts").and_then(|n| n.parse().ok()) {
            out.extend(duration.take().map(|d| (seq, d)));
        }
    }
    out
}

/// The first video timestamp of a URL, ms, as ffprobe reads it.
async fn video_start_ms(url: String) -> u64 {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-read_intervals", "%+#1", "-of", "csv=p=0", &url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("ffprobe in time").expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let seconds: f64 = text.split(',').next().unwrap_or("").trim().parse().unwrap_or_else(|_| panic!("no start time for {url}: {text:?}"));
    (seconds * 1000.0).round() as u64
}

fn running_pid(server: &Server, channel: &str) -> Option<u32> {
    match server.transcoding.pool()?.job_status(channel)?.state {
        JobState::Running { pid, .. } => Some(pid),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_720p_source_gets_its_ladder_as_live_channels_listed_in_the_master_playlist() {
    let _serial = SERIAL.lock().await;
    let clip = make_sized_clip(1280, 720, 20);
    let server = Server::start(config(1)).await.unwrap();
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    for r in ["720p", "480p", "360p"] {
        let name = format!("demo_{r}");
        wait_until(&name, Duration::from_secs(20), || server.hub.live(&name).is_some()).await;
    }
    let http = server.http_addr;
    for (r, w, h) in [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)] {
        let streams = probe_streams(&format!("http://{http}/live/demo_{r}.flv")).await;
        assert!(streams.iter().any(|s| s.1 == "h264" && s.2 == w && s.3 == h), "{r} flv: {streams:?}");
        assert!(streams.iter().any(|s| s.1 == "aac"), "{r} flv: {streams:?}");
    }
    // HLS: every rendition in the master, ordered by bandwidth, and playable.
    let master_url = format!("http://{http}/live/demo/index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(20);
    let master = loop {
        let (code, text) = http_get(&master_url).await;
        if code == 200 && text.matches("#EXT-X-STREAM-INF").count() == 4 {
            break text;
        }
        assert!(Instant::now() < deadline, "master never listed 4 variants: {code} {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let bandwidths: Vec<u64> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .map(|l| l.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
        .collect();
    let mut sorted = bandwidths.clone();
    sorted.sort();
    assert_eq!(bandwidths, sorted, "variants ordered by bandwidth:\n{master}");
    for needle in ["RESOLUTION=854x480", "RESOLUTION=640x360", "../demo_480p/source.m3u8", "AVERAGE-BANDWIDTH=", "FRAME-RATE=", "avc1."] {
        assert!(master.contains(needle), "{needle} missing:\n{master}");
    }
    let streams = probe_streams(&format!("http://{http}/live/demo_480p/index.m3u8")).await;
    assert!(streams.iter().any(|s| s.1 == "h264" && s.2 == 854 && s.3 == 480), "480p hls: {streams:?}");
    assert!(streams.iter().any(|s| s.1 == "aac"), "480p hls: {streams:?}");

    // Segment boundaries: every rendition's segment N covers what the
    // source's segment N does (same number, duration within one frame at
    // 25 fps). Also note how long after the source's each one appears.
    let names = ["demo", "demo_720p", "demo_480p", "demo_360p"];
    let mut seen: Vec<std::collections::BTreeMap<u64, (u64, Instant)>> = vec![Default::default(); names.len()];
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut first_poll: Option<Instant> = None;
    loop {
        for (i, name) in names.iter().enumerate() {
            let (code, text) = http_get(&format!("http://{http}/live/{name}/source.m3u8")).await;
            if code == 200 {
                for (seq, ms) in media_segments(&text) {
                    seen[i].entry(seq).or_insert((ms, Instant::now()));
                }
            }
        }
        first_poll.get_or_insert_with(Instant::now);
        let common = seen[0].keys().filter(|k| seen[1..].iter().all(|r| r.contains_key(k))).count();
        if common >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "renditions never shared 3 segment numbers with the source: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lags = Vec::new();
    for (seq, (source_ms, source_at)) in &seen[0] {
        for (i, rendition) in seen.iter().enumerate().skip(1) {
            if let Some((ms, at)) = rendition.get(seq) {
                assert!(ms.abs_diff(*source_ms) <= 40, "{} segment {seq}: {ms} ms vs source {source_ms} ms", names[i]);
                // Only segments that appeared while we watched.
                if first_poll.is_some_and(|t| *source_at > t) {
                    lags.push(at.saturating_duration_since(*source_at).as_millis());
                }
            }
        }
    }
    // Same numbers must mean the same media: the first video frame of the
    // newest common segment has the same timestamp in every rendition.
    let newest = *seen[0].keys().filter(|k| seen[1..].iter().all(|r| r.contains_key(k))).max().unwrap();
    let start = |name: &str| video_start_ms(format!("http://{http}/live/{name}/{newest}.ts"));
    let source_start = start(names[0]).await;
    for name in &names[1..] {
        let rendition_start = start(name).await;
        assert!(rendition_start.abs_diff(source_start) <= 1, "{name} segment {newest} starts at {rendition_start} ms, the source's at {source_start} ms");
    }
    lags.sort();
    if let (Some(p50), Some(max)) = (lags.get(lags.len() / 2), lags.last()) {
        eprintln!("rendition segment published after the source's: {} samples, p50 {p50} ms, max {max} ms", lags.len());
    }
    let _ = publisher.kill().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_360p_source_gets_no_upscaled_renditions() {
    let _serial = SERIAL.lock().await;
    let clip = make_sized_clip(640, 360, 12);
    let server = Server::start(config(1)).await.unwrap();
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    wait_until("demo_360p", Duration::from_secs(20), || server.hub.live("demo_360p").is_some()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.hub.live("demo_480p").is_none() && server.hub.live("demo_720p").is_none());
    assert_eq!(server.transcoding.renditions("demo"), vec!["360p".to_string()]);
    let _ = publisher.kill().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_comes_back_and_source_viewers_never_notice() {
    let _serial = SERIAL.lock().await;
    let clip = make_sized_clip(640, 360, 25);
    let server = Server::start(config(1)).await.unwrap();
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    wait_until("demo_360p", Duration::from_secs(20), || server.hub.live("demo_360p").is_some()).await;
    // A source viewer counts bytes the whole time.
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&seen);
    let url = format!("http://{}/live/demo.flv", server.http_addr);
    let reader = tokio::spawn(async move {
        let mut resp = reqwest::get(&url).await.unwrap();
        while let Ok(Some(c)) = resp.chunk().await {
            s2.fetch_add(c.len(), Ordering::Relaxed);
        }
    });
    let pid = running_pid(&server, "demo").expect("worker running");
    let before_kill = seen.load(Ordering::Relaxed);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    wait_until("a new worker", Duration::from_secs(15), || running_pid(&server, "demo").is_some_and(|p| p != pid)).await;
    wait_until("demo_360p back", Duration::from_secs(15), || server.hub.live("demo_360p").is_some_and(|s| s.info().publishing)).await;
    let streams = probe_streams(&format!("http://{}/live/demo_360p.flv", server.http_addr)).await;
    assert!(streams.iter().any(|s| s.1 == "h264" && s.3 == 360), "{streams:?}");
    // The source viewer kept receiving throughout.
    assert!(seen.load(Ordering::Relaxed) > before_kill + 100_000, "source viewer stalled");
    assert!(!reader.is_finished(), "source viewer must still be connected");
    reader.abort();
    let _ = publisher.kill().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_slots_a_channel_queues_as_passthrough_and_starts_when_a_slot_frees() {
    let _serial = SERIAL.lock().await;
    let short = make_sized_clip(640, 360, 6);
    let long = make_sized_clip(640, 360, 25);
    let server = Server::start(config(1)).await.unwrap();
    let mut first = publish(&short, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_until("demo worker", Duration::from_secs(20), || running_pid(&server, "demo").is_some()).await;
    let mut second = publish(&long, &rtmp_url(server.rtmp_addr, "other-key"), &[]);
    let pool = server.transcoding.pool().unwrap();
    wait_until("other queued", Duration::from_secs(20), || {
        matches!(pool.job_status("other").map(|s| s.state), Some(JobState::Queued { position: 1 }))
    })
    .await;
    // Operators see the queue over HTTP: the running job with its PID, the
    // waiting one with its position.
    let (code, body) = http_get(&format!("http://{}/transcoder/jobs", server.http_addr)).await;
    assert_eq!(code, 200, "{body}");
    let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jobs["slots"], 1, "{jobs}");
    let job = |c: &str| jobs["jobs"].as_array().unwrap().iter().find(|j| j["channel"] == c).cloned().unwrap_or_default();
    assert_eq!(job("other")["state"], "queued", "{jobs}");
    assert_eq!(job("other")["position"], 1, "{jobs}");
    assert_eq!(job("demo")["state"], "running", "{jobs}");
    assert_eq!(job("demo")["pid"].as_u64().map(|p| p as u32), running_pid(&server, "demo"), "{jobs}");
    // Served as passthrough meanwhile.
    let streams = probe_streams(&format!("http://{}/live/other.flv", server.http_addr)).await;
    assert!(streams.iter().any(|s| s.1 == "h264"), "{streams:?}");
    assert!(server.hub.live("other_360p").is_none());
    // The first source ends; its slot goes to the queued channel.
    first.wait().await.unwrap();
    wait_until("other transcoding", Duration::from_secs(20), || server.hub.live("other_360p").is_some()).await;
    let _ = second.kill().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_cannot_be_published_from_outside() {
    let _serial = SERIAL.lock().await;
    let clip = make_clip(ClipSpec { seconds: 3, ..ClipSpec::default() });
    let server = Server::start(config(1)).await.unwrap();
    for name in ["demo_480p", "__rendition__.0000000000000000.demo_480p", "__rendition__.demo_480p"] {
        let mut p = publish(&clip, &rtmp_url(server.rtmp_addr, name), &[]);
        let status = tokio::time::timeout(Duration::from_secs(10), p.wait()).await.unwrap().unwrap();
        assert!(!status.success(), "publishing {name} must be refused");
        assert!(server.hub.live("demo_480p").is_none());
    }
    server.shutdown().await;
}
