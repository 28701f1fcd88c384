//! The HLS fast path on the shared HTTP listener, from a raw HTTP/1.1
//! client: segments are exactly the packager's bytes (sent with sendfile),
//! HEAD gets the headers only, one keep-alive connection mixes HLS and
//! other requests (which go on to the router), pipelined requests come back
//! in order, `Connection: close` is honoured.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use westream_media::Server;

async fn start() -> Server {
    Server::start(common::test_config("[hls]\nsegment_duration_ms = 1000")).await.expect("server starts")
}

/// Publishes a 30 s clip (1 s GOPs) to channel demo.
fn publish(server: &Server) -> Child {
    let clip = common::make_clip(common::ClipSpec { seconds: 30, ..Default::default() });
    common::publish(&clip, &common::rtmp_url(server.rtmp_addr, "demo-key"), &[])
}

/// The first segment number and its bytes, once two segments exist.
async fn first_segment(server: &Server) -> (u64, bytes::Bytes) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(entry) = server.hls.as_ref().and_then(|h| h.channel("demo")) {
            let p = entry.playlist.read();
            if p.segments().count() >= 2 {
                let s = p.segments().next().expect("a segment");
                return (s.sequence, s.data.clone());
            }
        }
        assert!(Instant::now() < deadline, "no segments in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one response (a `Content-Length` body, none for `HEAD`),
/// keeping what follows in `buf`.
async fn read_reply(tcp: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Reply {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await.expect("reply").expect("read");
        assert!(n > 0, "connection closed before a reply: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    buf.drain(..end);
    let len: usize = if head_only { 0 } else { headers["content-length"].parse().expect("content-length") };
    while buf.len() < len {
        let mut chunk = vec![0u8; 1 << 20];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await.expect("body").expect("read");
        assert!(n > 0, "closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    Reply { status, headers, body }
}

async fn request(tcp: &mut TcpStream, buf: &mut Vec<u8>, method: &str, path: &str) -> Reply {
    tcp.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: fast-path-test\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_reply(tcp, buf, method == "HEAD").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_connection_gets_exact_segments_heads_and_non_hls_answers() {
    let server = start().await;
    let mut publisher = publish(&server);
    let (n, data) = first_segment(&server).await;
    let seg = format!("/live/demo/{n}.ts");
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    let mut buf = Vec::new();

    let pl = request(&mut tcp, &mut buf, "GET", "/live/demo/source.m3u8").await;
    assert_eq!(pl.status, 200);
    assert_eq!(pl.headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(pl.headers["cache-control"], "public, max-age=1");
    assert!(String::from_utf8_lossy(&pl.body).contains(&format!("{n}.ts")), "{:?}", pl.body);

    let s = request(&mut tcp, &mut buf, "GET", &seg).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.body.len(), data.len());
    assert!(s.body == data, "the segment's bytes exactly");
    assert_eq!(s.headers["content-type"], "video/mp2t");
    assert_eq!(s.headers["cache-control"], "public, max-age=86400, immutable");
    assert_eq!(s.headers["access-control-allow-origin"], "*");
    assert!(s.headers.contains_key("date"));

    let h = request(&mut tcp, &mut buf, "HEAD", &seg).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["content-length"], data.len().to_string());

    let missing = request(&mut tcp, &mut buf, "GET", &format!("/live/demo/{}.ts", n + 100_000)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["cache-control"], "no-cache");
    assert!(String::from_utf8_lossy(&missing.body).contains("not available"), "a reason: {:?}", missing.body);

    // Not an HLS URL: the router answers, on the same connection...
    let health = request(&mut tcp, &mut buf, "GET", "/healthz").await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    // ...and everything after it, HLS included.
    let again = request(&mut tcp, &mut buf, "GET", &seg).await;
    assert_eq!(again.status, 200);
    assert!(again.body == data, "the same bytes through the router");
    assert_eq!(again.headers["content-type"], "video/mp2t");

    let metrics = reqwest::get(format!("http://{}/metrics", server.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("westream_hls_requests_total{kind=\"segment\",result=\"ok\"} 3"), "{metrics}");
    assert!(metrics.contains("westream_hls_requests_total{kind=\"segment\",result=\"not_found\"} 1"));
    let _ = publisher.start_kill();
    let _ = publisher.wait().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_come_back_in_order_and_close_is_honoured() {
    let server = start().await;
    let mut publisher = publish(&server);
    let (n, data) = first_segment(&server).await;
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    let pipelined = format!(
        "GET /live/demo/{n}.ts HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /live/demo/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /live/demo/{n}.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(pipelined.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let first = read_reply(&mut tcp, &mut buf, false).await;
    assert!(first.status == 200 && first.body == data);
    let master = read_reply(&mut tcp, &mut buf, false).await;
    assert!(String::from_utf8_lossy(&master.body).contains("source.m3u8"), "{:?}", master.body);
    let last = read_reply(&mut tcp, &mut buf, false).await;
    assert!(last.status == 200 && last.body == data);
    assert_eq!(last.headers["connection"], "close");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed after the response, nothing more: {read:?} {rest:?}");

    // A request split across writes, and a POST handed to the router.
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    tcp.write_all(format!("GET /live/demo/{n}.t").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"s HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    assert!(read_reply(&mut tcp, &mut buf, false).await.body == data);
    tcp.write_all(format!("POST /live/demo/{n}.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut tcp, &mut buf, false).await.status, 405, "the router's answer to a POST");
    let _ = publisher.start_kill();
    let _ = publisher.wait().await;
    server.shutdown().await;
}
