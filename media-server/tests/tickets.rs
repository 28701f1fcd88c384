//! Paid streams end to end with the embedded control plane: the streamer
//! prices the broadcast, and then RTMP, HTTP-FLV and HLS (master, media
//! playlist and every segment) refuse a viewer with no ticket, an expired
//! token, a token for another channel or a forged one, each with its
//! reason; a bought ticket plays on all three, with real ffmpeg clients.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use westream_control::tickets::mint_play_token;
use westream_media::{Config, Server};

const SECRET: &str = "tickets-test-play-token-secret";
const STREAMER: &str = "tickets-streamer-token";
const OTHER: &str = "tickets-other-token";

fn config() -> Config {
    let streamers = [
        Streamer { handle: "paidstreamer", api_token: STREAMER, channel: "paid", stream_key: "paid-key" },
        Streamer { handle: "other", api_token: OTHER, channel: "other", stream_key: "other-key" },
    ];
    control_config("tickets", &streamers, &format!("play_token_secret = \"{SECRET}\""), "")
}

fn now_ms() -> i64 {
    westream_media::hls::unix_ms() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticketed_broadcast_plays_only_with_a_valid_ticket_on_every_protocol() {
    let clip = make_clip(ClipSpec { seconds: 40, ..ClipSpec::default() });
    let server = Server::start(config()).await.expect("server starts");
    let api = Api::new(server.http_addr);
    let base = api.base.clone();
    let rtmp = format!("rtmp://{}/live/paid", server.rtmp_addr);

    let (code, room) = api.post("/v1/rooms/paid/settings", Some(STREAMER), json!({"ticket_price_micro": 2_000_000})).await;
    assert_eq!(code, 200, "{room}");
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "paid-key"), &[]);
    wait_media(&server, "paid").await;

    // A viewer buys a ticket: 2 WE leave the wallet, a token comes back.
    let (code, viewer) = api.post("/v1/accounts", None, json!({"handle": "ticketfan"})).await;
    assert_eq!(code, 201, "{viewer}");
    let viewer_token = viewer["token"].as_str().unwrap().to_string();
    let viewer_id = viewer["account"]["id"].as_i64().unwrap();
    let (code, _) = api.post("/v1/wallet/faucet", Some(&viewer_token), json!({"amount_micro_we": 5_000_000})).await;
    assert_eq!(code, 200);
    let (code, ticket) = api.post("/v1/rooms/paid/tickets", Some(&viewer_token), json!({})).await;
    assert_eq!(code, 200, "{ticket}");
    assert_eq!(ticket["paid_micro"], json!(2_000_000));
    let (_, wallet) = api.get("/v1/wallet", Some(&viewer_token)).await;
    assert_eq!(wallet["balance_micro_we"], json!(3_000_000), "{wallet}");
    let good = ticket["token"].as_str().unwrap().to_string();

    // The HLS names a ticket holder sees, to try them without one.
    let media = || async { http_get(&format!("{base}/live/paid/source.m3u8?token={good}")).await };
    let (status, playlist) = poll_until(media, |(s, body)| *s == 200 && body.contains(".ts")).await;
    assert_eq!(status, 200, "{playlist}");
    let segment = playlist.lines().find(|l| l.contains(".ts")).unwrap().split('?').next().unwrap().to_string();

    let bad = [
        ("no ticket", None, "a ticket is required"),
        ("expired", Some(mint_play_token(SECRET.as_bytes(), "paid", viewer_id, now_ms() - 1000)), "expired"),
        ("another channel", Some(mint_play_token(SECRET.as_bytes(), "other", viewer_id, now_ms() + 60_000)), "another channel"),
        ("forged", Some(mint_play_token(b"not-the-secret-at-all", "paid", viewer_id, now_ms() + 60_000)), "invalid"),
    ];
    for (what, token, reason) in &bad {
        let q = token.as_ref().map_or(String::new(), |t| format!("?token={t}"));
        for path in ["paid.flv".to_string(), "paid/index.m3u8".into(), "paid/source.m3u8".into(), format!("paid/{segment}")] {
            let (status, body) = http_get(&format!("{base}/live/{path}{q}")).await;
            assert_eq!(status, 403, "{what}: /live/{path}: {body}");
            assert!(body.contains("ticketed") && body.contains(reason), "{what}: /live/{path}: {body}");
        }
        let out = tokio::process::Command::new("ffmpeg")
            .args(["-v", "verbose", "-i", &format!("{rtmp}{q}"), "-t", "1", "-f", "null", "-"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("ffmpeg in time").expect("ffmpeg runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: rtmp played");
        assert!(stderr.contains("ticketed") && stderr.contains(reason), "{what}: rtmp: {stderr}");
    }

    // The bought ticket plays everywhere.
    let flv = probe(format!("{base}/live/paid.flv?token={good}"), Duration::from_secs(60));
    let hls = probe(format!("{base}/live/paid/index.m3u8?token={good}"), Duration::from_secs(60));
    let rtmp_ok = tokio::spawn(probe_for(format!("{rtmp}?token={good}"), 3));
    let stop = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let _ = publisher.kill().await;
    };
    let (flv, hls, _) = tokio::join!(flv, hls, stop);
    for (name, p) in [("flv", &flv), ("hls", &hls)] {
        assert!(p.of("video").len() >= 30, "{name} with a ticket: {} video packets; {}", p.of("video").len(), p.stderr);
    }
    let rtmp_packets = rtmp_ok.await.unwrap();
    assert!(rtmp_packets >= 30, "rtmp with a ticket: {rtmp_packets} video packets");
    server.shutdown().await;
}
