//! Activity indicators for the daily rewards, through the real paths: a
//! chat message over a real WebSocket, a gift and a share over HTTP, a
//! broadcast and its viewers reported as the media server does; one flush
//! writes exact per-day rows to SQLite, and retries count nothing.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use westream_control::rewards::activity::day_of;
use westream_control::rewards::Indicators;
use westream_control::{Clock, ViewerCounts};

async fn flush(s: &TestServer) {
    let plane = s.plane.clone();
    tokio::task::spawn_blocking(move || plane.flush_activity()).await.unwrap().unwrap();
}

fn row(rows: &[(i64, Indicators)], account: i64) -> Indicators {
    rows.iter().find(|(a, _)| *a == account).map(|(_, i)| *i).unwrap_or_default()
}

#[tokio::test]
async fn chat_gifts_shares_and_broadcasts_become_exact_daily_indicators() {
    let (s, clock) = start_clocked(open_rooms_config()).await;
    let (_star, star_id) = s.streamer("star").await;
    let (fan, fan_id) = s.account("fan", 100 * WE).await;
    let rooms = s.plane.rooms();

    // A broadcast of 2.5 minutes with at most 10 viewers.
    rooms.stream_started("star");
    rooms.set_viewers("star", ViewerCounts { rtmp: 3, flv: 2, hls: 5 });
    rooms.set_viewers("star", ViewerCounts { rtmp: 1, flv: 1, hls: 1 });
    clock.advance(150_000);
    rooms.stream_ended("star");

    // One accepted chat message (one over the length limit is refused and counts nothing).
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url("star", Some(&fan))).await.unwrap();
    ws.send(Message::text(json!({"type": "chat", "text": "x".repeat(600)}).to_string())).await.unwrap();
    ws.send(Message::text(json!({"type": "chat", "text": "hello"}).to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("chat echoed").unwrap().unwrap();
        if let Message::Text(t) = msg {
            if frame_events(t.as_str()).iter().any(|v| v["type"] == "chat" && v["text"] == "hello") {
                break;
            }
        }
    }

    // A gift, retried with the same key (posts and counts once), and a share.
    let k = key();
    for _ in 0..2 {
        let r = s
            .client
            .post(format!("{}/v1/rooms/star/gifts", s.base))
            .bearer_auth(&fan)
            .header("Idempotency-Key", &k)
            .json(&json!({"gift": "flower"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = s.post("/v1/rooms/star/shares", Some(&fan), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // A like counts; a second one within the interval is refused with the
    // reason and counts nothing; another after the interval counts.
    let r = s.post("/v1/rooms/star/likes", Some(&fan), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = s.post("/v1/rooms/star/likes", Some(&fan), json!({})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_eq!(r.body["error"], "like_rate_limited");
    clock.advance(westream_control::rooms::LIKE_INTERVAL_MS as i64);
    let r = s.post("/v1/rooms/star/likes", Some(&fan), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.post("/v1/rooms/nosuch/likes", Some(&fan), json!({})).await.status, StatusCode::NOT_FOUND);

    flush(&s).await;
    flush(&s).await; // nothing left to add
    let day = day_of(clock.now_ms());
    let store = s.plane.store();
    let rows = tokio::task::spawn_blocking(move || store.activity_of_day(day)).await.unwrap().unwrap();

    let f = row(&rows, fan_id);
    assert_eq!((f.chat_messages, f.shares, f.likes, f.gifts_sent_micro), (1, 1, 2, WE as u64), "{f:?}");
    let st = row(&rows, star_id);
    assert_eq!(
        (st.publishes, st.broadcast_minutes, st.peak_viewers, st.gifts_received_micro),
        (1, 2, 10, 900_000),
        "the owner gets the channel's indicators: {st:?}"
    );
    // The rewards formula reads these rows.
    let rules = westream_control::rewards::IndicatorRules::default();
    assert!(westream_control::rewards::effort(&st, &rules) > westream_control::rewards::effort(&f, &rules));
}
