//! A client that never reads is dropped (with the drop counted) while the
//! room keeps flowing to a client that does; the server buffers nothing
//! without bound for it.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Reads a client's first frame, which must be `hello`.
async fn expect_hello<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("hello in time").expect("open").expect("frame");
    assert_eq!(frame_events(m.to_text().expect("text"))[0]["type"], "hello");
}

/// The sum of a counter (over its labels).
fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()).collect::<Vec<_>>())
        .sum()
}

fn drops(registry: &prometheus::Registry) -> f64 {
    counter(registry, "westream_control_ws_drops_total")
}

fn socket_waits(registry: &prometheus::Registry) -> f64 {
    counter(registry, "westream_control_ws_socket_waits_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_dropped_and_the_room_flows_on() {
    let mut cfg = open_rooms_config();
    cfg.rooms.client_queue_events = 32;
    cfg.rooms.send_timeout_ms = 300;
    // Still batched (7 of each 8 messages below share a frame), but each
    // round trip waits one window: a short one keeps the test quick.
    cfg.rooms.batch_window_ms = 2;
    let s = start_with(cfg).await;
    let registry = prometheus::Registry::new();
    s.plane.register_metrics(&registry).expect("metrics");
    s.streamer("star").await;
    let (alice, _) = s.account("alice", 0).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stuck = idle_client(&addr, "star").await;
    let (mut talker, _) = tokio_tungstenite::connect_async(s.ws_url("star", Some(&alice)))
        .await
        .expect("connect");
    expect_hello(&mut talker).await;
    let room = s.plane.rooms().room("star");

    // Batches of 8 big messages, each batch read back by the talker: a
    // reader that keeps up. Bounded in count and time.
    let text = "z".repeat(500);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut sent = 0;
    while drops(&registry) < 1.0 {
        assert!(sent < 40_000 && Instant::now() < deadline, "never dropped after {sent} messages");
        for _ in 0..8 {
            talker
                .send(Message::text(json!({"type": "chat", "text": text}).to_string()))
                .await
                .expect("send");
        }
        sent += 8;
        let mut echoed = 0;
        while echoed < 8 {
            let m = tokio::time::timeout(Duration::from_secs(5), talker.next())
                .await
                .expect("the reading client keeps getting events")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = m {
                echoed += frame_events(t.as_str()).iter().filter(|e| e["type"] == "chat").count();
            }
        }
    }
    eprintln!("stuck reader dropped after {sent} messages of ~600 bytes, {:?}", started.elapsed());
    // The close frame to a stuck socket is given a moment, then it is gone.
    let gone = Instant::now() + Duration::from_secs(5);
    while room.clients() != 1 {
        assert!(Instant::now() < gone, "only the reading client is left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The stuck client finds its socket closed once it drains what the
    // kernel already held: the server kept nothing more for it.
    let mut buf = vec![0u8; 64 * 1024];
    let mut drained = 0usize;
    let eof = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stuck.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the dropped client's socket is closed");
    assert!(drained < sent * 700, "{drained} bytes drained");
    eprintln!("drained {drained} bytes before EOF");

    // The room still works for the reader.
    talker
        .send(Message::text(json!({"type": "chat", "text": "still here"}).to_string()))
        .await
        .expect("send");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), talker.next()).await.expect("event").expect("open").expect("frame");
        if m.to_text().unwrap_or("").contains("still here") {
            break;
        }
    }

    // The fan-out's own figures: each batch of 8 reached the talker in at
    // least one socket write of a round, and every round was timed.
    let writes = counter(&registry, "westream_control_ws_fanout_writes_total");
    assert!(writes >= (sent / 8) as f64, "{writes} fan-out writes for {} batches", sent / 8);
    let rounds: u64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "westream_control_ws_fanout_round_seconds")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_histogram().get_sample_count()).collect::<Vec<_>>())
        .sum();
    assert!(rounds >= (sent / 8) as u64, "{rounds} rounds timed for {} batches", sent / 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_until_its_socket_fills_gets_every_event_once_in_order_after() {
    let mut cfg = open_rooms_config();
    // Room for everything below in the fan-out's ring, and time enough: the
    // paused client must be waited for, not dropped.
    cfg.rooms.client_queue_events = 65_536;
    cfg.rooms.send_timeout_ms = 30_000;
    cfg.rooms.batch_window_ms = 20;
    cfg.rooms.chat_rate_messages = 100_000;
    let s = start_with(cfg).await;
    let registry = prometheus::Registry::new();
    s.plane.register_metrics(&registry).expect("metrics");
    s.streamer("star").await;
    let (alice, _) = s.account("alice", 0).await;
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().expect("addr");

    // The paused client: a small receive buffer, so its socket fills soon.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = sock.connect(addr).await.expect("connect");
    let (mut paused, _) = tokio_tungstenite::client_async(s.ws_url("star", None), tcp).await.expect("handshake");
    let (mut talker, _) = tokio_tungstenite::connect_async(s.ws_url("star", Some(&alice))).await.expect("connect");
    // Both have joined: every message below comes to both as an event.
    expect_hello(&mut paused).await;
    expect_hello(&mut talker).await;

    // Send until the paused client's socket must be full: more than the
    // kernel lets a socket buffer (its send buffer grows to at most
    // tcp_wmem's maximum) and it has waited for it (bounded in count and
    // time), each message read back by the talker.
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").expect("tcp_wmem");
    let wmem_max: usize = wmem.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("tcp_wmem max");
    let must_send = wmem_max + 512 * 1024;
    let text = "p".repeat(450);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent = 0usize;
    while sent * text.len() < must_send || socket_waits(&registry) < 1.0 {
        assert!(sent < 40_000 && Instant::now() < deadline, "the paused client never waited after {sent} messages");
        talker
            .send(Message::text(json!({"type": "chat", "text": format!("{sent}:{text}")}).to_string()))
            .await
            .expect("send");
        sent += 1;
        if sent.is_multiple_of(100) {
            // Let the room keep up with the talker (it reads its own echoes).
            let mut seen = 0;
            while seen < 100 {
                let m = tokio::time::timeout(Duration::from_secs(5), talker.next()).await.expect("echo").expect("open").expect("frame");
                if let Message::Text(t) = m {
                    seen += frame_events(t.as_str()).iter().filter(|e| e["type"] == "chat").count();
                }
            }
        }
    }
    // A few more while it waits, then a last one.
    for i in 0..20 {
        talker.send(Message::text(json!({"type": "chat", "text": format!("{}:{text}", sent + i)}).to_string())).await.expect("send");
    }
    sent += 20;
    talker.send(Message::text(json!({"type": "chat", "text": "end"}).to_string())).await.expect("send");
    eprintln!("paused client's socket full after about {sent} messages of ~500 bytes");

    // Now it reads: every message once, in order, and it was never dropped.
    let mut got = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), paused.next())
            .await
            .expect("the paused client gets the rest once it reads")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = m else { panic!("unexpected frame {m:?}") };
        let texts: Vec<String> = frame_events(t.as_str()).iter().filter_map(|e| e["text"].as_str().map(str::to_string)).collect();
        let done = texts.iter().any(|t| t == "end");
        got.extend(texts);
        if done {
            break;
        }
    }
    assert_eq!(got.len(), sent + 1, "every message once");
    for (i, t) in got.iter().take(sent).enumerate() {
        assert!(t.starts_with(&format!("{i}:")), "message {i} in its place, got {}", &t[..t.len().min(12)]);
    }
    assert_eq!(drops(&registry), 0.0, "nobody was dropped");
    assert!(socket_waits(&registry) >= 1.0);
}
