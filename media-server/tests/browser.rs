//! The web page end to end in a real browser: the all-in-one server with
//! the embedded control plane (dev mode) serves `web/dist`, ffmpeg
//! publishes a generated H.264/AAC clip, and `web/tests/e2e.mjs` drives
//! headless Chromium (Debian's `chromium` through `playwright-core`): the
//! watch page plays over HLS and over HTTP-FLV. The script prints one JSON
//! line; this test asserts on it and keeps a screenshot of the watch page.
//!
//! Needs `chromium`, `node` and the built page (`npm --prefix web ci &&
//! npm --prefix web run build`). Without them the test is skipped loudly,
//! or fails with the install command when `WESTREAM_REQUIRE_BROWSER=1`
//! (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use westream_media::{Config, Server};

const STREAMER_TOKEN: &str = "browser-streamer-token";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    std::env::var_os("E2E_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser, with the command that installs it.
fn missing_prerequisites() -> Vec<String> {
    let web = repo().join("web");
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!("{} (apt-get install -y chromium)", chromium().display()));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install -y nodejs npm)".into());
    }
    if !web.join("node_modules/playwright-core").exists() {
        missing.push("web/node_modules (npm --prefix web ci)".into());
    }
    if !web.join("dist/index.html").exists() {
        missing.push("web/dist (npm --prefix web run build)".into());
    }
    missing
}

/// `true` when the browser test can run; otherwise skips loudly, or fails
/// when CI requires the browser.
fn browser_available() -> bool {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "browser end-to-end test cannot run; missing: {}. Install with: apt-get install -y chromium && \
         npm --prefix web ci && npm --prefix web run build",
        missing.join(", ")
    );
    if std::env::var("WESTREAM_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {msg} (set WESTREAM_REQUIRE_BROWSER=1 to make this a failure)\n");
    false
}

fn config() -> Config {
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{data}"
[http]
web_dir = "{web}"
[hub]
publisher_grace_ms = 1000
[hls]
segment_duration_ms = 1000
[transcoder]
enabled = false
[control]
dev_mode = true
admin_token = "browser-admin-token"
faucet_enabled = true
hook_cache_ttl_ms = 200
[[control.products]]
id = "bw-1gb"
description = "1 GB"
bandwidth_bytes = 1000000000
validity_days = 1
price_micro_we = 1000000
[[control.seed]]
handle = "streamer"
api_token = "{STREAMER_TOKEN}"
fund_micro_we = 10000000
packages = ["bw-1gb"]
[[control.seed.channels]]
name = "demo"
stream_keys = ["demo-key"]
"#,
        data = scratch_dir("browser").display(),
        web = repo().join("web/dist").display(),
    );
    Config::parse(&text).expect("browser test config parses")
}

/// Runs `web/tests/e2e.mjs` and returns its JSON verdict.
async fn run_e2e(base: &str, envs: &[(&str, String)]) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("web/tests/e2e.mjs"))
        .env("WESTREAM_BASE", base)
        .env("E2E_CHROMIUM", chromium())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(280), cmd.output())
        .await
        .expect("e2e.mjs finished in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("e2e.mjs printed no verdict (exit {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code())
    });
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad verdict {last}: {e}\nstderr:\n{stderr}"))
}

fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

fn assert_check(verdict: &Value, name: &str) {
    let c = &verdict["checks"][name];
    assert_eq!(c["ok"], Value::Bool(true), "browser check {name} failed: {c}\nall: {verdict:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_page_plays_over_hls_and_flv_in_chromium() {
    if !browser_available() {
        return;
    }
    let clip = make_clip(ClipSpec { seconds: 120, fps: 25, gop: 25, ..ClipSpec::default() });
    let server = Server::start(config()).await.expect("server starts");
    let base = format!("http://{}", server.http_addr);
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;

    let (status, page) = http_get(&format!("{base}/")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/assets/app.js"), "{page}");

    let shot = artifact("watch.png");
    let verdict = run_e2e(
        &base,
        &[
            ("E2E_CHANNEL", "demo".into()),
            ("E2E_CHECKS", "play_hls,play_flv".into()),
            ("E2E_SCREENSHOT", shot.display().to_string()),
        ],
    )
    .await;
    eprintln!("browser verdict: {verdict}");
    assert_check(&verdict, "play_hls");
    assert_check(&verdict, "play_flv");
    for mode in ["play_hls", "play_flv"] {
        let advanced = verdict["checks"][mode]["advanced"].as_f64().unwrap_or(0.0);
        assert!(advanced >= 4.0, "{mode}: currentTime advanced {advanced} s");
        assert_eq!(verdict["checks"][mode]["error"], Value::Null);
    }
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("screenshot of the watch page: {}", shot.display());
    let _ = publisher.kill().await;
    server.shutdown().await;
}
