//! HLS end to end with real clients: ffmpeg publishes over RTMP, ffprobe and
//! ffmpeg read `/live/{channel}/index.m3u8`, playlists parse back with
//! `hls_m3u8`, and bad paths get a 4xx.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hls_m3u8::{MasterPlaylist, MediaPlaylist};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use westream_media::{Config, Server};

static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn scratch(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("westream-hls-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn start(grace_ms: u64) -> Server {
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
[hub]
publisher_grace_ms = {grace_ms}
[hls]
segment_duration_ms = 2000
playlist_length = 6
extra_segments_kept = 2
ended_playlist_keep_ms = 5000
[[channels]]
name = "demo"
stream_key = "demo-key"
[[channels]]
name = "radio"
stream_key = "radio-key"
[[channels]]
name = "silent"
stream_key = "silent-key"
"#,
        scratch("data").display()
    );
    Server::start(Config::parse(&text).expect("config")).await.expect("server starts")
}

/// `ffmpeg -re` publishing generated media for `seconds`.
fn publish(server: &Server, key: &str, video: bool, audio: bool, seconds: u32) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-re"]);
    if video {
        cmd.args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"]);
    }
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    if video {
        cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]);
        cmd.args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"]);
    }
    if audio {
        cmd.args(["-c:a", "aac", "-b:a", "64k"]);
    }
    cmd.args(["-t", &seconds.to_string(), "-f", "flv"]);
    cmd.arg(format!("rtmp://{}/live/{key}", server.rtmp_addr));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    cmd.spawn().expect("spawn ffmpeg (is it installed?)")
}

fn url(server: &Server, channel: &str, file: &str) -> String {
    format!("http://{}/live/{channel}/{file}", server.http_addr)
}

async fn get(url: &str) -> (u16, HashMap<String, String>, bytes::Bytes) {
    let resp = reqwest::get(url).await.expect("http get");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    (status, headers, resp.bytes().await.expect("body"))
}

/// Polls the media playlist until it lists at least `min_segments`.
async fn wait_for_segments(server: &Server, channel: &str, min_segments: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = get(&url(server, channel, "source.m3u8")).await;
        if status == 200 {
            let text = String::from_utf8(body.to_vec()).expect("utf-8 playlist");
            let n = MediaPlaylist::try_from(text.as_str()).expect("playlist parses").segments.num_elements();
            if n >= min_segments {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "{channel}: fewer than {min_segments} segments after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a tool with a deadline; returns (success, stdout, stderr).
async fn run(cmd: &mut Command, within: Duration) -> (bool, String, String) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(within, cmd.output()).await.expect("tool timed out").expect("spawn tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ffprobe a file: per stream (codec_type -> (codec_name, packets counted)).
async fn probe_streams(input: &str) -> HashMap<String, (String, u64)> {
    probe(input, true).await
}

/// ffprobe a live URL (which never ends, so nothing is counted).
async fn probe_live(input: &str) -> HashMap<String, (String, u64)> {
    probe(input, false).await
}

async fn probe(input: &str, count: bool) -> HashMap<String, (String, u64)> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]);
    if count {
        cmd.arg("-count_packets");
    }
    cmd.args(["-show_entries", "stream=codec_type,codec_name,nb_read_packets", "-of", "compact=p=0", input]);
    let (ok, stdout, stderr) = run(&mut cmd, Duration::from_secs(20)).await;
    assert!(ok, "ffprobe {input} failed: {stderr}");
    stdout
        .lines()
        .filter_map(|l| {
            let kv: HashMap<&str, &str> = l.split('|').filter_map(|f| f.split_once('=')).collect();
            let n = kv.get("nb_read_packets").and_then(|n| n.parse().ok()).unwrap_or(0);
            Some((kv.get("codec_type")?.to_string(), (kv.get("codec_name")?.to_string(), n)))
        })
        .collect()
}

/// Video packet timestamps (pts, seconds) of a file.
async fn video_pts(path: &Path) -> Vec<f64> {
    let (ok, stdout, stderr) = run(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
            .arg(path),
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "ffprobe failed: {stderr}");
    stdout.lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect()
}

/// The non-empty lines of an ffmpeg run at `-v error`: each one is an error.
fn real_errors(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_reads_twenty_seconds_of_h264_aac_and_playlists_match_the_media() {
    let server = start(3000).await;
    let mut publisher = publish(&server, "demo-key", true, true, 32);
    let started = Instant::now();

    let first = wait_for_segments(&server, "demo", 1, Duration::from_secs(8)).await;
    eprintln!("first playlist after {:?}:\n{first}", started.elapsed());

    // Master playlist: CODECS, RESOLUTION and BANDWIDTH from the real stream.
    let (status, headers, body) = get(&url(&server, "demo", "index.m3u8")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert!(headers["cache-control"].contains("max-age=1"), "{headers:?}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let master_text = String::from_utf8(body.to_vec()).unwrap();
    let master = MasterPlaylist::try_from(master_text.as_str()).expect("master parses");
    assert_eq!(master.variant_streams.len(), 1, "{master_text}");
    assert!(master_text.contains("RESOLUTION=640x360"), "{master_text}");
    assert!(master_text.contains("avc1.") && master_text.contains("mp4a.40.2"), "{master_text}");
    assert!(master_text.contains("source.m3u8"), "{master_text}");

    // ffprobe finds h264 + aac through the master playlist.
    let probed = probe_live(&url(&server, "demo", "index.m3u8")).await;
    assert_eq!(probed.get("video").map(|v| v.0.as_str()), Some("h264"), "{probed:?}");
    assert_eq!(probed.get("audio").map(|v| v.0.as_str()), Some("aac"), "{probed:?}");

    // ffmpeg reads 20 s with -c copy.
    let dir = scratch("read");
    let out = dir.join("read.ts");
    let (ok, _, stderr) = run(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i", &url(&server, "demo", "index.m3u8")])
            .args(["-t", "20", "-c", "copy", "-f", "mpegts", "-y"])
            .arg(&out),
        Duration::from_secs(35),
    )
    .await;
    assert!(ok, "ffmpeg read failed: {stderr}");
    assert!(real_errors(&stderr).is_empty(), "ffmpeg complained: {stderr}");
    let streams = probe_streams(out.to_str().unwrap()).await;
    let (codec, frames) = streams.get("video").cloned().expect("video in the copy");
    assert_eq!(codec, "h264");
    // 20 s at 30 fps, within one GOP (30 frames).
    assert!((570..=631).contains(&frames), "read {frames} video frames for 20 s at 30 fps");
    assert!(streams.get("audio").is_some_and(|a| a.1 > 800), "{streams:?}");
    let pts = video_pts(&out).await;
    assert!(pts.windows(2).filter(|w| w[1] <= w[0]).count() == 0 || pts.len() > 500);
    let span = pts.iter().cloned().fold(f64::MIN, f64::max) - pts.iter().cloned().fold(f64::MAX, f64::min);
    assert!((19.0..=21.0).contains(&span), "video spans {span} s");

    // The playlist parses back, its durations are the real ones (ffprobe,
    // within 10%), and the target duration never understates a segment.
    let text = wait_for_segments(&server, "demo", 6, Duration::from_secs(5)).await;
    let playlist = MediaPlaylist::try_from(text.as_str()).expect("media playlist parses");
    assert!(!playlist.has_end_list);
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "no discontinuity in a clean stream:\n{text}");
    let mut checked = 0;
    for seg in playlist.segments.values() {
        let listed = seg.duration.duration().as_secs_f64();
        assert!(listed <= playlist.target_duration.as_secs_f64(), "{text}");
        let name = seg.uri().to_string();
        let (status, headers, data) = get(&url(&server, "demo", &name)).await;
        if status == 404 {
            continue; // scrolled out while we checked the others
        }
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "video/mp2t");
        assert!(headers["cache-control"].contains("max-age=86400"));
        assert_eq!(data.len() % 188, 0);
        assert!(data.chunks(188).all(|p| p[0] == 0x47));
        let path = dir.join(&name);
        std::fs::write(&path, &data).unwrap();
        let frames = probe_streams(path.to_str().unwrap()).await["video"].1;
        let real = frames as f64 / 30.0;
        assert!((listed - real).abs() <= 0.1 * real, "{name}: playlist says {listed} s, ffprobe counts {frames} frames");
        let pts = video_pts(&path).await;
        assert!(!pts.is_empty());
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} segments could be checked:\n{text}");

    // Metrics saw it all.
    let metrics = reqwest::get(format!("http://{}/metrics", server.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("westream_hls_segments_total"), "{metrics}");
    assert!(metrics.contains("westream_hls_segment_duration_seconds_bucket"));
    assert!(metrics.contains("westream_hls_requests_total{kind=\"segment\",result=\"ok\"}"));
    let egress = metrics
        .lines()
        .find(|l| l.starts_with("westream_egress_bytes_total{protocol=\"hls\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(egress > 100_000, "hls egress {egress}");

    let _ = publisher.start_kill();
    let _ = publisher.wait().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_and_video_only_streams_are_playable_and_end_with_endlist() {
    let server = start(300).await;
    let mut radio = publish(&server, "radio-key", false, true, 9);
    let mut silent = publish(&server, "silent-key", true, false, 9);
    wait_for_segments(&server, "radio", 2, Duration::from_secs(10)).await;
    wait_for_segments(&server, "silent", 2, Duration::from_secs(10)).await;

    for (channel, kind, codec, absent) in [("radio", "audio", "aac", "video"), ("silent", "video", "h264", "audio")] {
        let (_, _, master) = get(&url(&server, channel, "index.m3u8")).await;
        let master = String::from_utf8(master.to_vec()).unwrap();
        let probed = probe_live(&url(&server, channel, "index.m3u8")).await;
        assert_eq!(probed.get(kind).map(|v| v.0.as_str()), Some(codec), "{channel}: {probed:?}");
        assert!(!probed.contains_key(absent), "{channel}: {probed:?}");
        let dir = scratch(channel);
        let out = dir.join("read.ts");
        let (ok, _, stderr) = run(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-live_start_index", "0", "-i", &url(&server, channel, "index.m3u8")])
                .args(["-t", "3", "-c", "copy", "-f", "mpegts", "-y"])
                .arg(&out),
            Duration::from_secs(20),
        )
        .await;
        assert!(ok && real_errors(&stderr).is_empty(), "{channel}: {stderr}");
        let read = probe_streams(out.to_str().unwrap()).await;
        let n = read.get(kind).map_or(0, |v| v.1);
        // 3 s: ~129 AAC frames at 44.1 kHz, 90 video frames at 30 fps.
        assert!(n >= 80, "{channel}: {n} {kind} packets in 3 s ({read:?})");
        if kind == "audio" {
            assert!(master.contains("mp4a.40.2") && !master.contains("avc1"), "{master}");
            // Audio-only cuts on time.
            let text = wait_for_segments(&server, channel, 2, Duration::from_secs(1)).await;
            let pl = MediaPlaylist::try_from(text.as_str()).unwrap();
            for s in pl.segments.values().take(pl.segments.num_elements() - 1) {
                let d = s.duration.duration().as_secs_f64();
                assert!((1.9..=2.2).contains(&d), "audio segment of {d} s:\n{text}");
            }
        } else {
            assert!(master.contains("avc1") && !master.contains("mp4a"), "{master}");
        }
    }

    // When the publishers stop, the playlists end with ENDLIST and stay.
    let _ = radio.wait().await;
    let _ = silent.wait().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = get(&url(&server, "radio", "source.m3u8")).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        if MediaPlaylist::try_from(text.as_str()).unwrap().has_end_list {
            break;
        }
        assert!(Instant::now() < deadline, "no ENDLIST after the stream ended:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_returning_within_the_grace_adds_one_discontinuity_and_ffmpeg_reads_across() {
    let server = start(4000).await;
    let mut first = publish(&server, "demo-key", true, true, 60);
    let before = wait_for_segments(&server, "demo", 2, Duration::from_secs(10)).await;
    let before = MediaPlaylist::try_from(before.as_str()).unwrap();
    let seq_before = before.media_sequence + before.segments.num_elements();

    // A reader that starts before the reconnect and keeps going across it.
    let dir = scratch("reconnect");
    let out = dir.join("read.ts");
    let mut reader = Command::new("ffmpeg");
    reader
        .args(["-nostdin", "-v", "error", "-i", &url(&server, "demo", "index.m3u8")])
        .args(["-t", "12", "-c", "copy", "-f", "mpegts", "-y"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let reader = reader.spawn().expect("spawn reader");

    tokio::time::sleep(Duration::from_secs(2)).await;
    first.start_kill().expect("kill the first publisher");
    let _ = first.wait().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut second = publish(&server, "demo-key", true, true, 60);

    // Wait for two segments after the discontinuity.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (_, _, body) = get(&url(&server, "demo", "source.m3u8")).await;
        let text = String::from_utf8(body.to_vec()).unwrap();
        if let Some(after) = text.split("#EXT-X-DISCONTINUITY\n").nth(1) {
            if after.matches(".ts").count() >= 2 {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no discontinuity followed by segments:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let playlist = MediaPlaylist::try_from(text.as_str()).expect("playlist parses");
    let marked = playlist.segments.values().filter(|s| s.has_discontinuity).count();
    assert_eq!(marked, 1, "exactly one EXT-X-DISCONTINUITY:\n{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let seq_after = playlist.media_sequence + playlist.segments.num_elements();
    assert!(seq_after > seq_before, "media sequence went from {seq_before} to {seq_after}");
    // Sequence numbers in URIs are consecutive across the break.
    let numbers: Vec<u64> =
        playlist.segments.values().map(|s| s.uri().trim_end_matches(".ts").parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert_eq!(numbers[0], playlist.media_sequence as u64);

    let output = tokio::time::timeout(Duration::from_secs(30), reader.wait_with_output())
        .await
        .expect("reader finished")
        .expect("reader ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "reader failed across the reconnect: {stderr}");
    let pts = video_pts(&out).await;
    let span = pts.iter().cloned().fold(f64::MIN, f64::max) - pts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(span >= 10.0, "reader got only {span} s across the reconnect ({} frames)", pts.len());

    let _ = second.start_kill();
    let _ = second.wait().await;
    server.shutdown().await;
}

/// A raw request, so `..` reaches the server unnormalized.
async fn raw_status(server: &Server, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(server.http_addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("root:"), "{path} leaked a file: {text}");
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_unknown_channels_and_expired_segments_get_a_4xx() {
    let server = start(300).await;
    for path in [
        "/live/demo/../../../../etc/passwd",
        "/live/..%2f..%2fetc/passwd",
        "/live/demo/..%2f..%2f..%2fetc%2fpasswd",
        "/live/demo/%2e%2e%2fsecret.ts",
        "/live/demo/index.m3u8%00.ts",
        "/live/..%2fdemo/index.m3u8",
        "/live/demo/Source.m3u8",
        "/live/demo/1234567890123.ts",
        "/live/nosuch/index.m3u8",
        "/live/demo/index.m3u8",
        "/live/demo/7.ts",
    ] {
        let status = raw_status(&server, path).await;
        assert!((400..500).contains(&status), "{path} -> {status}");
    }
    let (status, headers, body) = get(&url(&server, "nosuch", "index.m3u8")).await;
    assert_eq!(status, 404);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(String::from_utf8_lossy(&body).contains("nosuch"), "the reason names the channel");

    // With a live channel: an expired segment, a future one, an unknown rendition.
    let mut publisher = publish(&server, "radio-key", false, true, 30);
    let text = wait_for_segments(&server, "radio", 1, Duration::from_secs(10)).await;
    let pl = MediaPlaylist::try_from(text.as_str()).unwrap();
    let first = pl.media_sequence as u64;
    let (status, _, body) = get(&url(&server, "radio", &format!("{}.ts", first - 1))).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("left the live window"), "{body:?}");
    let (status, _, _) = get(&url(&server, "radio", &format!("{}.ts", first + 1000))).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&url(&server, "radio", "720p.m3u8")).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&url(&server, "radio", &format!("{first}.ts"))).await;
    assert_eq!(status, 200);
    let _ = publisher.start_kill();
    let _ = publisher.wait().await;
    server.shutdown().await;
}
