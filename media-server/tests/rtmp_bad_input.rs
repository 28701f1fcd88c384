//! Malformed RTMP input closes that connection only: a stream published at
//! the same time keeps playing, and the server says why in its log.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use westream_media::media::flv::FlvReader;

/// Connects and completes a real RTMP handshake.
async fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    sock.write_all(&hs.generate_outbound_p0_and_p1().unwrap()).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => sock.write_all(&response_bytes).await.unwrap(),
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                sock.write_all(&response_bytes).await.unwrap();
                return sock;
            }
        }
    }
}

/// Waits until the server closes the socket (EOF or reset), discarding
/// whatever it sends first.
async fn closed_by_server(mut sock: TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

fn type0(csid: u8, len: u32, type_id: u8) -> Vec<u8> {
    let mut v = vec![csid, 0, 0, 0];
    v.extend_from_slice(&len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = type0(2, 4, 1);
    v.extend_from_slice(&size.to_be_bytes());
    v
}

/// Counts FLV tags arriving on an HTTP-FLV connection in the background.
fn count_flv_tags(url: String) -> (tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        let mut resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut reader = FlvReader::new(8 << 20);
        while let Ok(Some(chunk)) = resp.chunk().await {
            reader.push(&chunk);
            while let Ok(Some(_)) = reader.next_tag() {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    (task, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_input_closes_only_its_own_connection() {
    let clip = make_clip(ClipSpec { seconds: 20, ..ClipSpec::default() });
    let server = start_server().await;
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    let (reader, tags) = count_flv_tags(format!("http://{}/live/demo.flv", server.http_addr));
    let addr = server.rtmp_addr;
    let wait = Duration::from_secs(4);

    // Random bytes instead of a handshake.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let noise: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = sock.write_all(&noise).await;
    assert!(closed_by_server(sock, wait).await, "random bytes");

    // A handshake that stops half way: closed by the handshake timeout.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&[3]).await.unwrap();
    sock.write_all(&[0u8; 700]).await.unwrap();
    assert!(closed_by_server(sock, wait).await, "truncated handshake");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("chunk size 0", set_chunk_size(0)),
        ("chunk size 2^31", set_chunk_size(1 << 31)),
        ("message over the limit", {
            let mut v = type0(4, 4 << 20, 9);
            v.extend_from_slice(&[0x17; 128]);
            v
        }),
        ("deeply nested AMF", {
            let mut body = vec![2, 0, 7];
            body.extend_from_slice(b"connect");
            for _ in 0..5000 {
                body.extend_from_slice(&[3, 0, 1, b'a']);
            }
            let mut v = set_chunk_size(65536);
            v.extend(type0(3, body.len() as u32, 20));
            v.extend(body);
            v
        }),
        ("malformed AMF", {
            let body = [2u8, 0, 200, b'x', 0xff, 0xfe, 0x10, 0x99];
            let mut v = type0(3, body.len() as u32, 20);
            v.extend(body);
            v
        }),
        ("continuation without a header", vec![0xc5, 1, 2, 3, 4, 5]),
    ];
    for (name, bytes) in cases {
        let before = tags.load(std::sync::atomic::Ordering::Relaxed);
        let mut sock = handshaken(addr).await;
        let _ = sock.write_all(&bytes).await;
        assert!(closed_by_server(sock, wait).await, "{name}: connection must be closed");
        // The concurrent stream keeps flowing.
        let deadline = Instant::now() + Duration::from_secs(3);
        while tags.load(std::sync::atomic::Ordering::Relaxed) <= before + 10 {
            assert!(Instant::now() < deadline, "{name}: the published stream stopped playing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(server.hub.live("demo").is_some(), "publisher must be untouched");
    let _ = publisher.kill().await;
    reader.abort();
    server.shutdown().await;
}
