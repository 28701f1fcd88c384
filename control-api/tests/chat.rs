//! Room chat over real WebSocket clients (tokio-tungstenite) against a real
//! server on loopback: fan-out, gift and stream events, and every limit
//! answered with an `error` event that says why.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A room client: its socket, the events of frames read but not yet taken,
/// and how many text frames it read.
struct Ws {
    socket: Socket,
    queued: VecDeque<Value>,
    frames: usize,
}

async fn connect(s: &TestServer, channel: &str, token: Option<&str>) -> (Ws, Value) {
    let (socket, _) = tokio_tungstenite::connect_async(s.ws_url(channel, token))
        .await
        .expect("websocket connects");
    let mut ws = Ws { socket, queued: VecDeque::new(), frames: 0 };
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (ws, hello)
}

/// The events of the next text frame (pings skipped), within 5 s.
async fn next_frame(ws: &mut Ws) -> Vec<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.socket.next())
            .await
            .expect("an event within 5 s")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => {
                ws.frames += 1;
                return frame_events(t.as_str());
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// The next JSON event, from a batch already read or the next frame.
async fn next(ws: &mut Ws) -> Value {
    loop {
        if let Some(e) = ws.queued.pop_front() {
            return e;
        }
        let events = next_frame(ws).await;
        ws.queued.extend(events);
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.socket
        .send(Message::text(json!({"type": "chat", "text": text}).to_string()))
        .await
        .expect("send");
}

/// Events until a chat with `text` arrives (inclusive).
async fn until_chat(ws: &mut Ws, text: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = next(ws).await;
        let done = e["type"] == "chat" && e["text"] == text;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_message_from_one_client_reaches_the_others_with_gifts_and_stream_events() {
    let s = start_with(open_rooms_config()).await;
    s.streamer("star").await;
    let (alice, alice_id) = s.account("alice", 10 * WE).await;
    let (bob, bob_id) = s.account("bob", 0).await;
    let (mut anon, hello) = connect(&s, "star", None).await;
    assert_eq!(hello["you"], Value::Null);
    assert_eq!(hello["live"], false);
    let (mut b, hello) = connect(&s, "star", Some(&bob)).await;
    assert_eq!(hello["you"], bob_id);
    let (mut a, _) = connect(&s, "star", Some(&alice)).await;

    say(&mut a, "hello room").await;
    for ws in [&mut b, &mut anon, &mut a] {
        let e = next(ws).await;
        assert_eq!(e["type"], "chat");
        assert_eq!(e["text"], "hello room");
        assert_eq!(e["handle"], "alice");
        assert_eq!(e["account"], alice_id);
    }
    let g = s.gift(&alice, "star", json!({"gift": "flower", "count": 2})).await;
    assert_eq!(g.status, StatusCode::OK);
    let e = next(&mut b).await;
    assert_eq!(e["type"], "gift", "{e}");
    assert_eq!((e["gift"].as_str(), e["name"].as_str(), e["count"].as_i64()), (Some("flower"), Some("Flower"), Some(2)));
    assert_eq!(e["paid_micro"], 2 * WE);
    assert_eq!(next(&mut anon).await["type"], "gift");

    let rooms = s.plane.rooms();
    rooms.stream_started("star");
    let e = next(&mut anon).await;
    assert_eq!((e["type"].as_str(), e["live"].as_bool()), (Some("stream"), Some(true)));
    rooms.set_viewers("star", westream_control::ViewerCounts { rtmp: 1, flv: 2, hls: 4 });
    let e = next(&mut anon).await;
    assert_eq!(e, json!({"type": "viewers", "rtmp": 1, "flv": 2, "hls": 4, "total": 7}));

    // A late joiner gets the recent chat and gifts in `hello`.
    let (_late, hello) = connect(&s, "star", None).await;
    assert_eq!(hello["live"], true);
    assert_eq!(hello["viewers"]["total"], 7);
    let recent = hello["recent"].as_array().expect("recent");
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["text"], "hello room");
    assert_eq!(recent[1]["type"], "gift");
    let room = s.get("/v1/rooms/star", None).await;
    assert_eq!(room.body["live"], true);
    assert_eq!(room.body["clients"], 4);
}

#[tokio::test]
async fn events_within_one_batch_window_reach_every_client_as_one_frame_in_order() {
    let mut cfg = open_rooms_config();
    // A long window, so everything below surely falls in one.
    cfg.rooms.batch_window_ms = 1_000;
    let s = start_with(cfg).await;
    s.streamer("star").await;
    let (alice, _) = s.account("alice", 10 * WE).await;
    let (mut r1, _) = connect(&s, "star", None).await;
    let (mut r2, _) = connect(&s, "star", None).await;
    let (mut a, _) = connect(&s, "star", Some(&alice)).await;

    // The first event finds the room quiet: a frame of its own, sent
    // before anything else happens.
    say(&mut a, "c0").await;
    let first = next_frame(&mut r1).await;
    assert_eq!((first.len(), first[0]["text"].as_str()), (1, Some("c0")), "{first:?}");
    // What follows inside the window goes out together when it ends.
    assert_eq!(s.gift(&alice, "star", json!({"gift": "kiss"})).await.status, StatusCode::OK);
    for i in 1..=4 {
        say(&mut a, &format!("c{i}")).await;
    }
    let expected = ["gift", "c1", "c2", "c3", "c4"];
    for ws in [&mut r1, &mut r2, &mut a] {
        if ws.frames == 1 {
            assert_eq!(next_frame(ws).await[0]["text"], "c0");
        }
        let batch = next_frame(ws).await;
        let seen: Vec<&str> = batch.iter().filter_map(|e| e["text"].as_str().or(e["type"].as_str())).collect();
        assert_eq!(seen, expected, "{batch:?}");
        assert_eq!(ws.frames, 3, "hello, the lone event, one batch");
    }
    // A late joiner's `hello` has them all, once.
    let (_late, hello) = connect(&s, "star", None).await;
    let recent: Vec<&str> = hello["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .filter_map(|e| e["text"].as_str().or(e["type"].as_str()))
        .collect();
    assert_eq!(recent, ["c0", "gift", "c1", "c2", "c3", "c4"]);
}

#[tokio::test]
async fn every_client_gets_every_event_once_and_in_order_while_a_sender_gets_its_refusals() {
    // Short windows, so events spread over many frames of varied size.
    let mut cfg = open_rooms_config();
    cfg.rooms.batch_window_ms = 2;
    let s = start_with(cfg).await;
    s.streamer("star").await;
    let (alice, _) = s.account("alice", 0).await;
    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(connect(&s, "star", None).await.0);
    }
    let (mut a, _) = connect(&s, "star", Some(&alice)).await;
    let sent: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
    for (i, text) in sent.iter().enumerate() {
        say(&mut a, text).await;
        // Refused input in between: the reply comes back on the same
        // socket as the room's events, and nobody else sees it.
        if i % 50 == 0 {
            a.socket.send(Message::text("not json")).await.expect("send");
        }
    }
    say(&mut a, "end").await;
    let expected: Vec<&str> = sent.iter().map(String::as_str).chain(["end"]).collect();
    let refusals = std::iter::repeat_n(0, readers.len()).chain([4]);
    for (ws, refused) in readers.iter_mut().chain([&mut a]).zip(refusals) {
        let seen = until_chat(ws, "end").await;
        let texts: Vec<&str> = seen.iter().filter_map(|e| e["text"].as_str()).collect();
        assert_eq!(texts, expected, "each event once, in order");
        assert_eq!(seen.iter().filter(|e| e["code"] == "bad_message").count(), refused);
    }
}

#[tokio::test]
async fn unauthenticated_oversize_malformed_and_flooding_senders_get_error_events() {
    // Default limits: 500 characters, 5 messages per 10 s; the clock stands still.
    let (s, _clock) = start_clocked(test_config()).await;
    let (star, _) = s.streamer("star").await;
    let (alice, _) = s.account("alice", 0).await;
    let (mut anon, _) = connect(&s, "star", None).await;
    say(&mut anon, "hi").await;
    let e = next(&mut anon).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("unauthenticated")));

    let (mut a, _) = connect(&s, "star", Some(&alice)).await;
    say(&mut a, &"x".repeat(501)).await;
    let e = next(&mut a).await;
    assert_eq!(e["code"], "too_long", "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains("at most 500"));
    a.socket.send(Message::text("not json")).await.expect("send");
    assert_eq!(next(&mut a).await["code"], "bad_message");
    for i in 0..5 {
        say(&mut a, &format!("m{i}")).await;
        assert_eq!(next(&mut a).await["text"], format!("m{i}"));
    }
    say(&mut a, "one too many").await;
    let e = next(&mut a).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // Readers saw the five messages and none of the refusals.
    let (mut s_ws, _) = connect(&s, "star", Some(&star)).await;
    say(&mut s_ws, "end").await;
    let seen = until_chat(&mut anon, "end").await;
    let texts: Vec<&str> = seen.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "end"]);

    // A frame over the inbound cap closes the connection.
    a.socket.send(Message::text("y".repeat(5_000))).await.expect("send");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversize frame closes the socket");

    // A bad token is refused at the handshake.
    let bad = tokio_tungstenite::connect_async(s.ws_url("star", Some("wst_nope"))).await;
    assert!(bad.is_err());
    assert!(tokio_tungstenite::connect_async(s.ws_url("nosuch", None)).await.is_err());
}

#[tokio::test]
async fn banned_and_muted_accounts_cannot_send_and_slow_mode_is_enforced() {
    let (s, clock) = start_clocked(open_rooms_config()).await;
    let (star, _) = s.streamer("star").await;
    let (alice, alice_id) = s.account("alice", 0).await;
    let (bob, bob_id) = s.account("bob", 0).await;
    let (carol, _) = s.account("carol", 0).await;
    let (mut a, _) = connect(&s, "star", Some(&alice)).await;
    let (mut b, _) = connect(&s, "star", Some(&bob)).await;
    let (mut c, _) = connect(&s, "star", Some(&carol)).await;

    let r = s.post("/v1/rooms/star/ban", Some(&bob), json!({"account": alice_id})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "only the owner moderates");
    let r = s.post("/v1/rooms/star/ban", Some(&star), json!({"account": alice_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    say(&mut a, "let me in").await;
    assert_eq!(next(&mut a).await["code"], "banned");

    let r = s.post("/v1/rooms/star/mute", Some(&star), json!({"account": bob_id, "duration_ms": 60_000})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    say(&mut b, "hey").await;
    let e = next(&mut b).await;
    assert_eq!(e["code"], "muted", "{e}");
    clock.advance(60_000);
    say(&mut b, "back").await;
    assert_eq!(next(&mut b).await["text"], "back");

    s.room_settings(&star, "star", json!({"slow_mode_ms": 5_000})).await;
    say(&mut c, "first").await;
    assert_eq!(until_chat(&mut c, "first").await.len(), 2, "bob's 'back', then carol's");
    say(&mut c, "second").await;
    let e = next(&mut c).await;
    assert_eq!(e["code"], "slow_mode", "{e}");
    clock.advance(5_000);
    say(&mut c, "second").await;
    assert_eq!(next(&mut c).await["text"], "second");

    // Unbanned, alice may speak again; bans survive in the store.
    let r = s.post("/v1/rooms/star/ban", Some(&star), json!({"account": alice_id, "banned": false})).await;
    assert_eq!(r.body["banned"], false);
    say(&mut a, "thanks").await;
    let seen = until_chat(&mut a, "thanks").await;
    assert!(seen.iter().all(|e| e["type"] != "error"), "{seen:?}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_event_and_the_vote_formula() {
    let s = start().await;
    let doc = s.get("/v1/openapi.json", None).await.body;
    let events: Vec<&str> = doc["x-websocket"]["server_to_client"]
        .as_object()
        .expect("x-websocket events")
        .keys()
        .map(String::as_str)
        .collect();
    for t in ["hello", "chat", "gift", "viewers", "stream", "error", "batch"] {
        assert!(events.contains(&t), "{t} undocumented");
    }
    let codes = doc["x-websocket"]["server_to_client"]["error"]["description"].as_str().unwrap_or("");
    for c in ["unauthenticated", "too_long", "rate_limited", "slow_mode", "muted", "banned", "bad_message"] {
        assert!(codes.contains(c), "error code {c} undocumented");
    }
    let formula = doc["x-vote-formula"].as_str().unwrap_or("");
    assert!(formula.contains("min(sqrt(T), vote_cap)") && formula.contains("2^(-(t - t_i)"), "{formula}");
}
