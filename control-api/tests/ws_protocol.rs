//! The room WebSocket's own protocol handling: the server answers the
//! upgrade itself and writes its frames straight to the socket, so what a
//! WebSocket library would have done is checked here with a real client
//! (tokio-tungstenite, which validates every frame it reads): the accept
//! key, pings answered with their payload, fragmented messages, the close
//! handshake, frame lengths of every size class, and refusals of requests
//! that are not upgrades.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message, within 5 s.
async fn next_msg(ws: &mut Socket) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("socket open")
        .expect("a valid frame")
}

/// Events until a chat with `text` (inclusive), across batch frames.
async fn until_chat(ws: &mut Socket, text: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        if let Message::Text(t) = next_msg(ws).await {
            for e in frame_events(t.as_str()) {
                let done = e["type"] == "chat" && e["text"] == text;
                seen.push(e);
                if done {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test]
async fn pings_fragments_and_the_close_handshake_work_on_the_raw_socket() {
    let (s, _clock) = start_clocked(test_config()).await;
    let (star, _) = s.streamer("star").await;
    // tungstenite checks the Sec-WebSocket-Accept value: a wrong one fails here.
    let (mut ws, resp) = tokio_tungstenite::connect_async(s.ws_url("star", Some(&star))).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    let Message::Text(hello) = next_msg(&mut ws).await else { panic!("hello first") };
    assert_eq!(frame_events(hello.as_str())[0]["type"], "hello");

    // A ping is answered with a pong carrying the same payload.
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    loop {
        match next_msg(&mut ws).await {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Text(_) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }

    // A chat message in three fragments is one message.
    let body = json!({"type": "chat", "text": "in three parts"}).to_string();
    let (a, rest) = body.as_bytes().split_at(5);
    let (b, c) = rest.split_at(10);
    ws.send(Message::Frame(Frame::message(a.to_vec(), OpCode::Data(Data::Text), false))).await.expect("first");
    ws.send(Message::Frame(Frame::message(b.to_vec(), OpCode::Data(Data::Continue), false))).await.expect("middle");
    ws.send(Message::Frame(Frame::message(c.to_vec(), OpCode::Data(Data::Continue), true))).await.expect("last");
    let seen = until_chat(&mut ws, "in three parts").await;
    assert!(seen.iter().all(|e| e["type"] != "error"), "{seen:?}");

    // Events of every frame-length class arrive intact: a short chat
    // (7-bit length) and a long one (16-bit).
    let long = "l".repeat(400);
    ws.send(Message::text(json!({"type": "chat", "text": "s"}).to_string())).await.expect("send");
    ws.send(Message::text(json!({"type": "chat", "text": long}).to_string())).await.expect("send");
    let seen = until_chat(&mut ws, &long).await;
    assert!(seen.iter().any(|e| e["text"] == "s"));

    // The close handshake: our close is answered with a close, then EOF.
    ws.send(Message::Close(None)).await.expect("close");
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut saw_close = false;
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) => saw_close = true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        saw_close
    })
    .await
    .expect("the server ends the connection");
    assert!(got, "the server answered the close frame");
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_a_reason_and_a_bad_client_frame_closes_only_its_socket() {
    let (s, _clock) = start_clocked(test_config()).await;
    let (star, _) = s.streamer("star").await;
    let r = s.get("/v1/rooms/star/ws", None).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert_eq!(r.body["error"], "websocket_required", "{}", r.body);

    // A wrong WebSocket version is refused before any upgrade.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let req = format!(
        "GET /v1/rooms/star/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("answer").expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("Sec-WebSocket-Version"), "the reason names the header: {head}");

    // An unmasked client frame is a protocol error: that socket is closed,
    // a neighbour in the room keeps getting events.
    let (mut good, _) = tokio_tungstenite::connect_async(s.ws_url("star", Some(&star))).await.expect("upgrade");
    let mut raw = idle_client(&addr, "star").await;
    let mut frame = Vec::new();
    FrameHeader { is_final: true, opcode: OpCode::Data(Data::Text), ..FrameHeader::default() }.format(2, &mut frame).expect("header");
    frame.extend_from_slice(b"hi");
    raw.write_all(&frame).await.expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // hello, then a close frame
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes a socket that sends unmasked frames");
    good.send(Message::text(json!({"type": "chat", "text": "still here"}).to_string())).await.expect("send");
    until_chat(&mut good, "still here").await;
}
