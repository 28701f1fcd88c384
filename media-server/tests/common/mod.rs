//! Shared helpers for the integration tests: an in-process server on
//! loopback ports, real ffmpeg publishers and ffprobe readers.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use westream_media::{Config, Server};

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("westream-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Control-plane tables of multi-node tests: account `demo`, funded, with a
/// 10 GB package and channel `demo` published with key `demo-key`.
#[allow(dead_code)]
pub const DEMO_SEED: &str = r#"
[[control.products]]
id = "bw"
bandwidth_bytes = 10_000_000_000
validity_days = 30
price_micro_we = 1_000_000
[[control.seed]]
handle = "demo"
fund_micro_we = 100_000_000
packages = ["bw"]
[[control.seed.channels]]
name = "demo"
stream_keys = ["demo-key"]
"#;

/// The test config: loopback port 0, channel demo/demo-key, short timers.
pub fn test_config(extra: &str) -> Config {
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
shutdown_timeout_ms = 2000
[rtmp]
handshake_timeout_ms = 1500
max_message_bytes = 1048576
[hub]
publisher_grace_ms = 400
[[channels]]
name = "demo"
stream_key = "demo-key"
[[channels]]
name = "other"
stream_key = "other-key"
{extra}
"#,
        scratch_dir("data").display()
    );
    Config::parse(&text).expect("test config parses")
}

/// Starts a server with the test config.
pub async fn start_server() -> Server {
    Server::start(test_config("")).await.expect("server starts")
}

/// What a generated clip contains.
#[derive(Debug, Clone, Copy)]
pub struct ClipSpec {
    pub video: bool,
    pub audio: bool,
    pub seconds: u32,
    pub fps: u32,
    pub gop: u32,
}

impl Default for ClipSpec {
    fn default() -> Self {
        ClipSpec { video: true, audio: true, seconds: 6, fps: 30, gop: 30 }
    }
}

/// Encodes a clip to FLV once (ultrafast x264 + AAC), so tests know exactly
/// what they publish.
pub fn make_clip(spec: ClipSpec) -> PathBuf {
    let path = scratch_dir("clip").join("clip.flv");
    let mut args: Vec<String> = vec!["-v".into(), "error".into(), "-y".into()];
    if spec.video {
        args.extend(["-f", "lavfi", "-i"].map(String::from));
        args.push(format!("testsrc=size=320x240:rate={}", spec.fps));
    }
    if spec.audio {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from));
    }
    args.extend(["-t".to_string(), spec.seconds.to_string()]);
    if spec.video {
        args.extend(
            ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-bf", "0", "-sc_threshold", "0"]
                .map(String::from),
        );
        args.extend(["-g".to_string(), spec.gop.to_string()]);
    }
    if spec.audio {
        args.extend(["-c:a", "aac", "-b:a", "64k"].map(String::from));
    }
    args.push(path.display().to_string());
    let status = std::process::Command::new("ffmpeg").args(&args).status().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make the clip");
    path
}

/// Publishes a file in real time (`-re -c copy`), with extra output options.
pub fn publish(file: &std::path::Path, url: &str, extra: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy"])
        .args(extra)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg publisher starts")
}

/// RTMP publish URL.
pub fn rtmp_url(addr: SocketAddr, name: &str) -> String {
    format!("rtmp://{addr}/live/{name}")
}

/// Waits until `channel` is live in the server's hub.
pub async fn wait_live(server: &Server, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hub.live(channel).is_none() {
        assert!(Instant::now() < deadline, "channel {channel} never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `channel` has seen video or audio frames.
pub async fn wait_media(server: &Server, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = server.hub.live(channel) {
            if s.has_video() || s.has_audio() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "channel {channel} never carried media");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One packet as ffprobe reports it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub codec_type: String,
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub keyframe: bool,
}

/// What ffprobe read from a URL until it ended.
#[derive(Debug, Default)]
pub struct Probe {
    pub codecs: Vec<(String, String)>,
    pub packets: Vec<Packet>,
    pub stderr: String,
    pub success: bool,
}

impl Probe {
    pub fn codec_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.codecs.iter().map(|(_, n)| n.as_str()).collect();
        v.sort();
        v
    }

    pub fn of(&self, kind: &str) -> Vec<&Packet> {
        self.packets.iter().filter(|p| p.codec_type == kind).collect()
    }

    /// Panics unless dts never decreases within each stream.
    pub fn assert_monotonic(&self) {
        for kind in ["video", "audio"] {
            let dts: Vec<i64> = self.of(kind).iter().filter_map(|p| p.dts).collect();
            for w in dts.windows(2) {
                assert!(w[1] >= w[0], "{kind} dts went backwards: {} -> {}", w[0], w[1]);
            }
        }
    }
}

/// Reads every packet of a stream URL with ffprobe (time base ms for FLV
/// and RTMP), bounded by `limit`.
pub async fn probe(url: impl AsRef<str>, limit: Duration) -> Probe {
    let url = url.as_ref();
    let child = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=index,codec_name,codec_type:packet=stream_index,pts,dts,flags"])
        .args(["-of", "compact", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffprobe starts");
    let out = tokio::time::timeout(limit, child.wait_with_output()).await.expect("ffprobe finished in time").expect("ffprobe output");
    parse_probe(&String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr).into(), out.status.success())
}

fn parse_probe(stdout: &str, stderr: String, success: bool) -> Probe {
    let mut probe = Probe { stderr, success, ..Probe::default() };
    let mut raw_packets = Vec::new();
    for line in stdout.lines() {
        let mut fields = line.split('|');
        let kind = fields.next().unwrap_or("");
        let map: std::collections::HashMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
        match kind {
            "stream" => probe.codecs.push((
                map.get("codec_type").unwrap_or(&"").to_string(),
                map.get("codec_name").unwrap_or(&"").to_string(),
            )),
            "packet" => raw_packets.push((
                map.get("stream_index").and_then(|v| v.parse::<usize>().ok()).unwrap_or(usize::MAX),
                map.get("pts").and_then(|v| v.parse().ok()),
                map.get("dts").and_then(|v| v.parse().ok()),
                map.get("flags").is_some_and(|f| f.starts_with('K')),
            )),
            _ => {}
        }
    }
    // ffprobe prints streams after packets; resolve indices at the end.
    let mut index_kind = std::collections::HashMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("stream|")) {
        let map: std::collections::HashMap<&str, &str> = line.split('|').skip(1).filter_map(|f| f.split_once('=')).collect();
        if let (Some(i), Some(t)) = (map.get("index").and_then(|v| v.parse::<usize>().ok()), map.get("codec_type")) {
            index_kind.insert(i, t.to_string());
        }
    }
    probe.packets = raw_packets
        .into_iter()
        .map(|(i, pts, dts, keyframe)| Packet {
            codec_type: index_kind.get(&i).cloned().unwrap_or_default(),
            pts,
            dts,
            keyframe,
        })
        .collect();
    probe
}

/// Counts the packets of one kind in a media file.
pub async fn count_packets(file: &std::path::Path, kind: &str) -> usize {
    let p = probe(&file.display().to_string(), Duration::from_secs(30)).await;
    p.of(kind).len()
}

/// GET a URL, returning status and body text.
pub async fn http_get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("http request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A 640x360 clip at a given video bitrate, for tests that need volume.
pub fn make_clip_with_bitrate(seconds: u32, bitrate: &str) -> PathBuf {
    let path = scratch_dir("clipbr").join("clip.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(["-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", bitrate])
        .args(["-x264-params", "nal-hrd=cbr", "-c:a", "aac"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make the clip");
    path
}

/// A clip of a given picture size (ultrafast x264, 1 s GOP, AAC).
pub fn make_sized_clip(width: u32, height: u32, seconds: u32) -> PathBuf {
    let path = scratch_dir("clipsz").join("clip.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={width}x{height}:rate=25")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-b:v", "800k"])
        .args(["-c:a", "aac"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make the clip");
    path
}

/// Streams of a URL as ffprobe sees them: (codec_type, codec_name, width, height).
pub async fn probe_streams(url: &str) -> Vec<(String, String, u32, u32)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height", "-of", "compact", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("ffprobe in time").expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("stream|"))
        .map(|l| {
            let m: std::collections::HashMap<&str, &str> = l.split('|').skip(1).filter_map(|f| f.split_once('=')).collect();
            let num = |k: &str| m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            (m.get("codec_type").unwrap_or(&"").to_string(), m.get("codec_name").unwrap_or(&"").to_string(), num("width"), num("height"))
        })
        .collect()
}

/// Video packets an ffmpeg reader gets from `url` in `seconds`.
pub async fn probe_for(url: String, seconds: u32) -> usize {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-read_intervals", &format!("%+{seconds}"), "-select_streams", "v"])
        .args(["-show_entries", "packet=pts", "-of", "csv", &url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("ffprobe in time").expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("packet")).count()
}

/// Calls `f` every 100 ms until `done` holds (at most 10 s); the last value.
pub async fn poll_until<T, F, Fut>(f: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut v = f().await;
    for _ in 0..100 {
        if done(&v) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v = f().await;
    }
    v
}

/// The control API over HTTP, as a client sees it.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { base: format!("http://{addr}"), client: reqwest::Client::new() }
    }

    /// A write; the idempotency key follows path, token and body, so the
    /// same call is the same request.
    pub async fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", format!("k-{path}-{}-{body}", token.unwrap_or("")))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A PUT with a JSON body.
    pub async fn put(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut req = self.client.put(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// A streamer seeded into the control plane: handle, fixed API token,
/// channel and stream key; 10 WE and a 1 GB package.
pub struct Streamer<'a> {
    pub handle: &'a str,
    pub api_token: &'a str,
    pub channel: &'a str,
    pub stream_key: &'a str,
}

/// A loopback server with the embedded control plane in dev mode (faucet
/// on), 1 s HLS segments and no transcoding, the given streamers seeded.
/// `control_keys` go into `[control]`; `tables` are appended (more TOML
/// tables: `[http]`, `[control.rooms]`, ...).
pub fn control_config(tag: &str, streamers: &[Streamer<'_>], control_keys: &str, tables: &str) -> Config {
    let text = control_config_text(tag, streamers, control_keys, tables);
    Config::parse(&text).unwrap_or_else(|e| panic!("{tag} config: {e}\n{text}"))
}

/// [`control_config`] as TOML text (for the `westream` binary's `--config`).
pub fn control_config_text(tag: &str, streamers: &[Streamer<'_>], control_keys: &str, tables: &str) -> String {
    let mut text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
[hls]
segment_duration_ms = 1000
[transcoder]
enabled = false
[control]
dev_mode = true
admin_token = "{tag}-admin-token"
faucet_enabled = true
{control_keys}
[[control.products]]
id = "bw"
description = "1 GB"
bandwidth_bytes = 1000000000
validity_days = 1
price_micro_we = 1000000
"#,
        scratch_dir(tag).display()
    );
    for s in streamers {
        text.push_str(&format!(
            "[[control.seed]]\nhandle = \"{}\"\napi_token = \"{}\"\nfund_micro_we = 10000000\npackages = [\"bw\"]\n\
             [[control.seed.channels]]\nname = \"{}\"\nstream_keys = [\"{}\"]\n",
            s.handle, s.api_token, s.channel, s.stream_key
        ));
    }
    text.push_str(tables);
    text
}
