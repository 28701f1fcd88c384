//! The HLS fast path: a small HTTP/1.1 server in front of hyper on the
//! shared HTTP listener. It answers `GET`/`HEAD /live/{channel}/{file}` for
//! the served HLS names itself, segments with sendfile(2) from their sealed
//! memfd ([`super::memfd`]), and hands every other connection to hyper
//! (axum's router), with the bytes it has already read.
//!
//! Contract:
//! - A request is answered here only when nothing about it needs more than
//!   this module knows: HTTP/1.1, `GET` or `HEAD`, an origin-form target
//!   with no percent-escape, a channel and file name of the served shapes,
//!   a query axum would accept, no body, no `Expect`, no upgrade. Anything
//!   else, and any later request on that connection, goes to hyper, which
//!   routes it as before (to the same [`super::http::answer`] for HLS URLs).
//! - Answers are those of the axum route: [`super::http::answer`] decides
//!   (play authorization with `?token=`, metrics, audience, bytes served);
//!   status, `Content-Type`, `Cache-Control`, CORS, `Content-Length` and
//!   `Date` are written as hyper writes them; `HEAD` gets the headers only.
//! - Keep-alive as HTTP/1.1 defines it; `Connection: close` is honoured;
//!   pipelined requests are answered in order. At shutdown an idle
//!   connection is closed and a busy one after its response.

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::{answer, HlsFile, HlsHttpContext, HlsReply, HlsRequest};
use super::memfd::SealedFile;
use crate::config::valid_channel_name;
use crate::http::flv::PlayQuery;

/// A request head larger than this goes to hyper (which has its own limit).
pub const MAX_HEAD_BYTES: usize = 8192;
/// Headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Bodies up to this size are written with their head in one write.
const COALESCE_BYTES: usize = 16 * 1024;

/// Starts accepting on `listener`. Connections the fast path does not keep
/// come out of the returned listener, for `axum::serve`.
pub fn start(
    listener: TcpListener,
    ctx: Arc<HlsHttpContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> io::Result<HandoverListener> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(accept_loop(listener, ctx, tx, shutdown, tasks.clone()));
    Ok(HandoverListener { rx, local })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<HlsHttpContext>,
    handover: mpsc::Sender<(HandedOver, SocketAddr)>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "http accept failed");
                // Out of descriptors or memory: give the system a moment,
                // as axum's listener does.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                ) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // No Nagle: small writes (room events, playlists, FLV tags) leave
        // at once instead of waiting ~40 ms for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        tasks.spawn(connection(Arc::clone(&ctx), tcp, peer, handover.clone(), shutdown.clone()));
    }
}

/// A request head the fast path answers.
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    /// Bytes of the head (the request has no body).
    len: usize,
    /// `HEAD`: headers only.
    head_only: bool,
    channel: &'a str,
    file: &'a str,
    token: Option<String>,
    viewer: Option<String>,
    user_agent: &'a [u8],
    /// `Connection: close`.
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    /// Not a whole head yet.
    Partial,
    /// For hyper.
    NotOurs,
    Ours(Head<'a>),
}

fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Parsed::Partial,
        _ => return Parsed::NotOurs,
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::NotOurs,
    };
    let (Some(1), Some(target)) = (req.version, req.path) else { return Parsed::NotOurs };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Some((channel, file)) = path.strip_prefix("/live/").and_then(|rest| rest.split_once('/')) else {
        return Parsed::NotOurs;
    };
    // Escaped or odd names (and their 404s) are the router's: it decodes.
    if path.contains('%') || !valid_channel_name(channel) || HlsFile::parse(file).is_none() {
        return Parsed::NotOurs;
    }
    let (token, viewer) = match query.map(serde_urlencoded::from_str::<PlayQuery>) {
        None => (None, None),
        Some(Ok(q)) => (q.token, q.viewer),
        Some(Err(_)) => return Parsed::NotOurs,
    };
    let mut user_agent: Option<&[u8]> = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("user-agent") {
            user_agent.get_or_insert(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value.trim_ascii() != b"0" {
                return Parsed::NotOurs;
            }
        } else if ["transfer-encoding", "upgrade", "expect"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Parsed::NotOurs;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in h.value.split(|b| *b == b',').map(|o| o.trim_ascii()) {
                if option.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::NotOurs;
                }
                close |= option.eq_ignore_ascii_case(b"close");
            }
        }
    }
    Parsed::Ours(Head { len, head_only, channel, file, token, viewer, user_agent: user_agent.unwrap_or_default(), close })
}

async fn connection(
    ctx: Arc<HlsHttpContext>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    handover: mpsc::Sender<(HandedOver, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(4096);
    // One registration for the connection's life, not one per read.
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    loop {
        let (len, close) = match parse(&buf) {
            Parsed::Ours(head) => {
                let req = HlsRequest {
                    channel: head.channel,
                    file: head.file,
                    token: head.token,
                    viewer: head.viewer,
                    peer,
                    user_agent: head.user_agent,
                };
                let reply = answer(&ctx, req).await;
                if let Err(e) = write_reply(&mut tcp, &ctx, &reply, head.head_only, head.close).await {
                    tracing::debug!(%peer, error = %e, "hls response not sent");
                    return;
                }
                (head.len, head.close)
            }
            Parsed::NotOurs => {
                let io = HandedOver::new(buf.freeze(), tcp);
                tokio::select! {
                    _ = handover.send((io, peer)) => {}
                    _ = &mut stopped => {}
                }
                return;
            }
            Parsed::Partial => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                let read = tokio::select! {
                    r = tcp.read_buf(&mut buf) => r,
                    _ = &mut stopped, if buf.is_empty() => return,
                };
                match read {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "http read failed");
                        return;
                    }
                }
            }
        };
        if close {
            let _ = tcp.shutdown().await;
            return;
        }
        buf.advance(len);
    }
}

async fn write_reply(
    tcp: &mut TcpStream,
    ctx: &HlsHttpContext,
    reply: &HlsReply,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let body = &reply.body;
    let mut head = Vec::with_capacity(256 + if body.len() <= COALESCE_BYTES { body.len() } else { 0 });
    let status = reply.status;
    for part in [
        "HTTP/1.1 ",
        status.as_str(),
        " ",
        status.canonical_reason().unwrap_or(""),
        "\r\ncontent-type: ",
        reply.mime,
        "\r\ncache-control: ",
        reply.cache,
        "\r\n",
    ] {
        head.extend_from_slice(part.as_bytes());
    }
    if let Some(origin) = &ctx.cors_allow_origin {
        head.extend_from_slice(b"access-control-allow-origin: ");
        head.extend_from_slice(origin.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(head, "content-length: {}\r\n", body.len());
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"date: ");
    with_http_date(|d| head.extend_from_slice(d.as_bytes()));
    head.extend_from_slice(b"\r\n\r\n");
    if head_only || body.is_empty() {
        return tcp.write_all(&head).await;
    }
    match &reply.file {
        Some(file) if file.len() == body.len() as u64 => {
            send_more(tcp, &head).await?;
            send_file(tcp, file).await
        }
        _ if body.len() <= COALESCE_BYTES => {
            head.extend_from_slice(body);
            tcp.write_all(&head).await
        }
        _ => {
            send_more(tcp, &head).await?;
            tcp.write_all(body).await
        }
    }
}

/// Writes `buf` with `MSG_MORE`: the head waits for the body's first bytes
/// (TCP_NODELAY would otherwise send it in a packet of its own).
async fn send_more(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        tcp.writable().await?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            rustix::net::send(tcp, buf, SendFlags::MORE | SendFlags::NOSIGNAL).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The whole file into the socket with sendfile(2), as the socket takes it.
async fn send_file(tcp: &TcpStream, file: &SealedFile) -> io::Result<()> {
    let mut offset = 0;
    while offset < file.len() {
        tcp.writable().await?;
        match tcp.try_io(Interest::WRITABLE, || file.send_to(tcp, &mut offset)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `Date` header's value for now, formatted once a second per thread.
fn with_http_date(f: impl FnOnce(&str)) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != second {
            *d = (second, httpdate::fmt_http_date(now));
        }
        f(&d.1);
    });
}

/// A connection handed to hyper: first the bytes the fast path read, then
/// the socket (the control plane's type, so that its room WebSocket can take
/// the socket back after an upgrade).
pub use westream_control::serve::PrefixedTcp as HandedOver;

/// The connections the fast path hands over, as a listener for
/// `axum::serve`.
#[derive(Debug)]
pub struct HandoverListener {
    rx: mpsc::Receiver<(HandedOver, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HandoverListener {
    type Io = HandedOver;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (HandedOver, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(req: &str) -> Head<'_> {
        match parse(req.as_bytes()) {
            Parsed::Ours(h) => h,
            other => panic!("{req:?}: {other:?}"),
        }
    }

    #[test]
    fn hls_gets_and_heads_are_answered_here() {
        let h = ours("GET /live/demo/1764070852.ts HTTP/1.1\r\nHost: x\r\nUser-Agent: hls.js\r\n\r\nGET /next");
        assert_eq!((h.channel, h.file, h.head_only, h.close), ("demo", "1764070852.ts", false, false));
        assert_eq!(h.user_agent, b"hls.js");
        assert_eq!(h.len, "GET /live/demo/1764070852.ts HTTP/1.1\r\nHost: x\r\nUser-Agent: hls.js\r\n\r\n".len());
        let h = ours("HEAD /live/demo/index.m3u8?token=a%2Bb+c&x=1 HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(h.head_only && h.close);
        assert_eq!(h.token.as_deref(), Some("a+b c"), "decoded as axum's Query does");
        assert_eq!(ours("GET /live/demo/source.m3u8 HTTP/1.1\r\nContent-Length: 0\r\n\r\n").file, "source.m3u8");
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for req in [
            "GET /live/demo.flv HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "POST /live/demo/1.ts HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /live/demo/1.ts HTTP/1.0\r\n\r\n",
            "GET /live/demo/%31.ts HTTP/1.1\r\n\r\n",
            "GET /live/demo/x.TS HTTP/1.1\r\n\r\n",
            "GET /live/../1.ts HTTP/1.1\r\n\r\n",
            "GET /live/demo/a/1.ts HTTP/1.1\r\n\r\n",
            "GET http://host/live/demo/1.ts HTTP/1.1\r\n\r\n",
            "GET /live/demo/1.ts?token=a&token=b HTTP/1.1\r\n\r\n",
            "GET /live/demo/1.ts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /live/demo/1.ts HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /live/demo/1.ts HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert_eq!(parse(req.as_bytes()), Parsed::NotOurs, "{req:?}");
        }
    }

    #[test]
    fn a_head_in_pieces_waits_until_it_is_too_long() {
        assert_eq!(parse(b""), Parsed::Partial);
        assert_eq!(parse(b"GET /live/demo/1.ts HTTP/1.1\r\nHost"), Parsed::Partial);
        let long = format!("GET /live/demo/1.ts HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(long.as_bytes()), Parsed::NotOurs);
    }
}
