//! Play tokens on every protocol, against a stand-in authority that tickets
//! one channel: the token from the URL reaches `authorize_play` on HTTP-FLV,
//! on every HLS playlist and segment request (and rides on every URI the
//! playlists name), and in the RTMP play name; a refusal is a 403 with the
//! reason on HTTP and `NetStream.Play.Failed` on RTMP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use westream_control::hooks::{Denied, MediaHooks, PlayProtocol, PlayRequest, PublishGrant, PublishRequest};
use westream_media::Server;

const TOKEN: &str = "good.tok+en/";
const TOKEN_IN_URL: &str = "good.tok%2Ben%2F";

/// Channel `paid` needs `TOKEN`; `free` needs nothing. Counts HLS checks.
#[derive(Default)]
struct Tickets {
    hls_checks: AtomicUsize,
}

#[async_trait::async_trait]
impl MediaHooks for Tickets {
    async fn authorize_publish(&self, req: &PublishRequest) -> Result<PublishGrant, Denied> {
        match req.stream_key.as_str() {
            "paid-key" => Ok(PublishGrant { channel: "paid".into() }),
            "free-key" => Ok(PublishGrant { channel: "free".into() }),
            _ => Err(Denied::UnknownKey),
        }
    }

    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied> {
        if req.protocol == PlayProtocol::Hls {
            self.hls_checks.fetch_add(1, Ordering::Relaxed);
        }
        match (req.channel.as_str(), req.token.as_deref()) {
            ("free", _) | ("paid", Some(TOKEN)) => Ok(()),
            ("paid", Some(_)) => Err(Denied::Forbidden("this broadcast is ticketed: the play token is not valid".into())),
            ("paid", None) => Err(Denied::Forbidden("this broadcast is ticketed: buy a ticket to watch".into())),
            (c, _) => Err(Denied::UnknownChannel { channel: c.into() }),
        }
    }
}

async fn start() -> (Server, Arc<Tickets>) {
    let tickets = Arc::new(Tickets::default());
    let config = test_config("[hls]\nsegment_duration_ms = 1000\n");
    let server = Server::start_with(config, Arc::clone(&tickets) as Arc<dyn MediaHooks>, axum::Router::new())
        .await
        .expect("server starts");
    (server, tickets)
}

/// A server with a publisher of `seconds` of media on `channel` (key `{channel}-key`).
async fn start_publishing(channel: &str, seconds: u32) -> (Server, Arc<Tickets>, String, tokio::process::Child) {
    let clip = make_clip(ClipSpec { seconds, ..ClipSpec::default() });
    let (server, tickets) = start().await;
    let base = format!("http://{}", server.http_addr);
    let publisher = publish(&clip, &rtmp_url(server.rtmp_addr, &format!("{channel}-key")), &[]);
    wait_media(&server, channel).await;
    (server, tickets, base, publisher)
}

async fn wait_segments(base: &str, n: usize) {
    let url = format!("{base}/live/paid/source.m3u8?token={TOKEN_IN_URL}");
    let segments = || async { http_get(&url).await.1.lines().filter(|l| l.contains(".ts")).count() };
    assert!(poll_until(segments, |c| *c >= n).await >= n, "channel paid never had {n} segments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticketed_channel_plays_only_with_its_token_on_every_protocol() {
    let (server, tickets, base, mut publisher) = start_publishing("paid", 14).await;
    wait_segments(&base, 2).await;

    // HTTP-FLV: refused with the reason, without or with a wrong token.
    for url in [format!("{base}/live/paid.flv"), format!("{base}/live/paid.flv?token=forged")] {
        let (status, body) = http_get(&url).await;
        assert_eq!(status, 403, "{url}: {body}");
        assert!(body.contains("ticketed"), "{url}: {body}");
    }
    let flv = probe(format!("{base}/live/paid.flv?token={TOKEN_IN_URL}"), Duration::from_secs(60));

    // HLS: the master, the media playlist and each segment are checked.
    let (status, body) = http_get(&format!("{base}/live/paid/index.m3u8")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ticketed"), "{body}");
    let (status, master) = http_get(&format!("{base}/live/paid/index.m3u8?token={TOKEN_IN_URL}")).await;
    assert_eq!(status, 200, "{master}");
    let variant = master.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a variant");
    assert_eq!(variant, format!("source.m3u8?token={TOKEN_IN_URL}"));
    let (status, media) = http_get(&format!("{base}/live/paid/{variant}")).await;
    assert_eq!(status, 200, "{media}");
    let segments: Vec<&str> = media.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(segments.len() >= 2, "{media}");
    for s in &segments {
        assert!(s.ends_with(&format!(".ts?token={TOKEN_IN_URL}")), "{s}");
    }
    let bare = segments[0].split('?').next().unwrap();
    let checks_before = tickets.hls_checks.load(Ordering::Relaxed);
    let (status, body) = http_get(&format!("{base}/live/paid/{bare}")).await;
    assert_eq!(status, 403, "a segment without the token: {body}");
    let (status, _) = http_get(&format!("{base}/live/paid/{bare}?token=forged")).await;
    assert_eq!(status, 403, "a segment with a wrong token");
    let resp = reqwest::get(format!("{base}/live/paid/{}", segments[0])).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    assert!(resp.bytes().await.unwrap().len() > 188);
    assert_eq!(tickets.hls_checks.load(Ordering::Relaxed), checks_before + 3, "one check per segment request");

    // A real HLS client follows the token through master, media and segments.
    let hls = probe(format!("{base}/live/paid/index.m3u8?token={TOKEN_IN_URL}"), Duration::from_secs(60));

    // RTMP: the token rides in the play name, percent-encoded like in an
    // HTTP query (a raw `/` would split ffmpeg's app and play path); the
    // reason comes back as an error status.
    let rtmp = format!("rtmp://{}/live/paid", server.rtmp_addr);
    let refused = probe(&rtmp, Duration::from_secs(20)).await;
    assert!(!refused.success && refused.packets.is_empty(), "{}", refused.stderr);
    let forged = probe(format!("{rtmp}?token=forged"), Duration::from_secs(20)).await;
    assert!(!forged.success && forged.packets.is_empty(), "{}", forged.stderr);
    let rtmp_ok = tokio::spawn(probe_for(format!("{rtmp}?token={TOKEN_IN_URL}"), 3));

    let (flv, hls) = tokio::join!(flv, hls);
    let rtmp_ok = rtmp_ok.await.unwrap();
    let _ = publisher.kill().await;
    for (name, p) in [("flv", &flv), ("hls", &hls)] {
        assert!(p.of("video").len() >= 30, "{name} with the token plays: {} video packets; {}", p.of("video").len(), p.stderr);
    }
    assert!(rtmp_ok >= 30, "rtmp with the token plays: {rtmp_ok} video packets");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_refusal_says_why_in_a_play_failed_status() {
    let (server, _, _, mut publisher) = start_publishing("paid", 10).await;
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-v", "verbose", "-i", &format!("rtmp://{}/live/paid?token=forged", server.rtmp_addr), "-t", "1", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("ffmpeg in time").expect("ffmpeg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("NetStream.Play.Failed") || stderr.contains("ticketed"), "{stderr}");
    assert!(stderr.contains("ticketed"), "the reason reaches the player: {stderr}");
    let _ = publisher.kill().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_counted_by_protocol_while_they_watch() {
    let (server, _, base, mut publisher) = start_publishing("free", 20).await;
    let now = || westream_media::hls::unix_ms();
    assert!(!server.audience.snapshot(now()).contains_key("free"));

    let flv = reqwest::get(format!("{base}/live/free.flv")).await.unwrap();
    assert_eq!(flv.status(), 200);
    let rtmp = tokio::spawn(probe_for(format!("rtmp://{}/live/free", server.rtmp_addr), 4));
    let master = || async { http_get(&format!("{base}/live/free/index.m3u8")).await.0 };
    assert_eq!(poll_until(master, |s| *s == 200).await, 200, "no HLS playlist");
    let counts = || async { server.audience.snapshot(now()).get("free").copied().unwrap_or_default() };
    let seen = poll_until(counts, |c| c.rtmp == 1).await;
    assert_eq!(seen, westream_media::audience::Counts { rtmp: 1, flv: 1, hls: 1 });
    drop(flv);
    rtmp.await.unwrap();
    let left = poll_until(counts, |c| c.flv == 0 && c.rtmp == 0).await;
    assert_eq!((left.rtmp, left.flv), (0, 0), "viewers that left are not counted");
    let _ = publisher.kill().await;
    server.shutdown().await;
}
