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

fn drops(registry: &prometheus::Registry) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "westream_control_ws_drops_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()).collect::<Vec<_>>())
        .sum()
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
}
