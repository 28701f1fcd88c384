//! A lean WebSocket listener for the room bench: a hand-written upgrade,
//! then server frames read straight off the socket, all sockets on one
//! epoll loop of their own ([`ListenLoop`], on [`crate::read_loop`]).
//!
//! Why not tungstenite here: at 10,000 clients on the server's own cores,
//! the bench must cost little per frame. tungstenite zeroes its 128 KiB read
//! buffer before every read (30% of the bench's CPU in a perf profile) and
//! each client task re-registered a cancellation waiter per frame. Why not a
//! tokio task per client: a wake-up, a poll and readiness bookkeeping per
//! read were a third of the bench's CPU, and the bench's CPU is time the
//! server's fan-out does not get on a shared machine. Here a read costs one
//! `epoll_wait` share, one `read` into a reused buffer and a scan of the
//! frame headers; only measuring clients parse JSON. Server frames are
//! unmasked (RFC 6455 5.1), so the splitter refuses a masked one as a
//! broken server.

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::read_loop::{ConnHandler, ReadLoop};

pub(crate) const OP_TEXT: u8 = 1;
pub(crate) const OP_CLOSE: u8 = 8;

/// The next complete server frame at the start of `buf`: its opcode, FIN,
/// header length and payload length; `Ok(None)` while it is partial.
pub(crate) fn frame_at(buf: &[u8]) -> anyhow::Result<Option<(u8, bool, usize, usize)>> {
    let [b0, b1, ..] = buf[..] else { return Ok(None) };
    if b1 & 0x80 != 0 {
        bail!("the server sent a masked frame");
    }
    let (header, len) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(n))
        }
        126 | 127 => return Ok(None),
        n => (2, u64::from(n)),
    };
    let len = usize::try_from(len).map_err(|_| anyhow!("frame length {len} does not fit"))?;
    if len > 16 << 20 {
        bail!("a {len}-byte frame is not a room event");
    }
    if buf.len() < header + len {
        return Ok(None);
    }
    Ok(Some((b0 & 0x0f, b0 & 0x80 != 0, header, len)))
}

/// What a [`ListenLoop`] does with each connection's frames.
pub(crate) trait FrameSink {
    /// A text frame's payload from connection `id`.
    fn text(&mut self, id: usize, payload: &[u8]);
    /// Connection `id` ended: a close frame, end of stream or an error.
    fn closed(&mut self, id: usize);
    /// Called after each batch of ready sockets (flush counters here).
    fn batch_done(&mut self) {}
}

/// Many upgraded WebSockets read on one thread ([`ReadLoop`]); a partial
/// frame is kept per connection.
pub(crate) struct ListenLoop {
    inner: ReadLoop<Vec<u8>>,
}

/// A [`FrameSink`] as the [`ReadLoop`]'s handler: splits each read into
/// frames.
struct Frames<'a, S>(&'a mut S);

impl<S: FrameSink> ConnHandler for Frames<'_, S> {
    type Conn = Vec<u8>;

    fn read(&mut self, id: usize, _tcp: &std::net::TcpStream, partial: &mut Vec<u8>, data: Option<&[u8]>) -> bool {
        data.is_some_and(|got| !deliver(id, partial, got, self.0))
    }

    fn closed(&mut self, id: usize, _partial: Vec<u8>) {
        self.0.closed(id);
    }

    fn batch_done(&mut self) {
        self.0.batch_done();
    }
}

impl ListenLoop {
    /// A loop that sleeps `pause` once caught up ([`ReadLoop::new`]).
    pub(crate) fn new(pause: std::time::Duration) -> anyhow::Result<Self> {
        Ok(ListenLoop { inner: ReadLoop::new(pause)? })
    }

    /// Adds a connection (non-blocking) with the bytes read past its
    /// upgrade; returns its id.
    pub(crate) fn add(&mut self, tcp: std::net::TcpStream, already: &[u8], sink: &mut impl FrameSink) -> anyhow::Result<usize> {
        let id = self.inner.add(tcp, Vec::new())?;
        self.inner.feed(id, already, &mut Frames(sink));
        Ok(id)
    }

    /// Waits up to `timeout` for ready sockets and handles them; `true`
    /// when that took every ready socket (fewer than one wait's worth).
    pub(crate) fn poll(&mut self, timeout: std::time::Duration, sink: &mut impl FrameSink) -> anyhow::Result<bool> {
        self.inner.poll(timeout, &mut Frames(sink))
    }
}

/// Splits `got`, after connection `id`'s `partial` frame, into frames for
/// `sink`; true when the connection ended (a close frame or a broken one).
fn deliver(id: usize, partial: &mut Vec<u8>, got: &[u8], sink: &mut impl FrameSink) -> bool {
    let joined;
    let data: &[u8] = if partial.is_empty() {
        got
    } else {
        partial.extend_from_slice(got);
        joined = std::mem::take(partial);
        &joined
    };
    let mut at = 0;
    let ended = loop {
        match frame_at(&data[at..]) {
            Ok(Some((op, _fin, header, len))) => {
                let payload = &data[at + header..at + header + len];
                at += header + len;
                match op {
                    OP_TEXT => sink.text(id, payload),
                    OP_CLOSE => break true,
                    _ => {}
                }
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    if !ended && at < data.len() {
        *partial = data[at..].to_vec();
    }
    ended
}

/// A WebSocket to `ws://host:port/path`, upgraded; returns the socket and
/// whatever the server sent after its 101 response.
pub(crate) async fn connect(url: &str) -> anyhow::Result<(TcpStream, BytesMut)> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| anyhow!("{url}: only ws:// URLs"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut tcp = TcpStream::connect(host).await.with_context(|| format!("connect {host}"))?;
    tcp.set_nodelay(true)?;
    // A fixed key is fine: the accept value only proves the server speaks
    // WebSocket, and this client checks the status line.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("{url}: closed during the upgrade");
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
                bail!("{url}: upgrade refused: {line}");
            }
            return Ok((tcp, buf));
        }
        if buf.len() > 8 * 1024 {
            bail!("{url}: upgrade response over 8 KiB");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame as tungstenite writes one (an encoder not ours).
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::{coding::OpCode, FrameHeader};
        let mut v = Vec::new();
        let header = FrameHeader { is_final: true, opcode: OpCode::from(opcode), ..FrameHeader::default() };
        header.format(payload.len() as u64, &mut v).expect("encode");
        v.extend_from_slice(payload);
        v
    }

    /// Splits `buf` with [`frame_at`], as the loop does.
    fn split(buf: &mut Vec<u8>) -> Vec<(u8, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((op, fin, header, len)) = frame_at(buf).expect("valid") {
            out.push((op, fin, buf[header..header + len].to_vec()));
            buf.drain(..header + len);
        }
        out
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let big = vec![b'x'; 70_000];
        let mut wire = frame(OP_TEXT, b"{\"type\":\"chat\"}");
        wire.extend(frame(OP_TEXT, &vec![b'y'; 300]));
        wire.extend(frame(OP_TEXT, &big));
        wire.extend(frame(OP_CLOSE, &[0x03, 0xf0]));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        // One byte at a time: every header and length form is cut somewhere.
        for b in wire {
            buf.push(b);
            got.extend(split(&mut buf));
        }
        assert!(buf.is_empty());
        let lens: Vec<(u8, usize)> = got.iter().map(|f| (f.0, f.2.len())).collect();
        assert_eq!(lens, [(OP_TEXT, 15), (OP_TEXT, 300), (OP_TEXT, 70_000), (OP_CLOSE, 2)]);
        assert!(got.iter().all(|f| f.1));
        assert_eq!(&got[0].2[..], b"{\"type\":\"chat\"}");
    }

    #[derive(Default)]
    struct Got {
        texts: Vec<(usize, Vec<u8>)>,
        closed: Vec<usize>,
    }

    impl FrameSink for Got {
        fn text(&mut self, id: usize, payload: &[u8]) {
            self.texts.push((id, payload.to_vec()));
        }
        fn closed(&mut self, id: usize) {
            self.closed.push(id);
        }
    }

    #[test]
    fn the_loop_reads_frames_cut_across_writes_and_sees_each_close() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut lp = ListenLoop::new(std::time::Duration::ZERO).expect("epoll");
        let mut got = Got::default();
        let mut servers = Vec::new();
        for _ in 0..2 {
            let client = std::net::TcpStream::connect(addr).expect("connect");
            servers.push(listener.accept().expect("accept").0);
            // The first frame came with the upgrade's response.
            lp.add(client, &frame(OP_TEXT, b"first"), &mut got).expect("add");
        }
        let wire = [frame(OP_TEXT, &[b'a'; 200]), frame(OP_TEXT, b"b")].concat();
        let (head, tail) = wire.split_at(101);
        servers[0].write_all(head).expect("write");
        servers[1].write_all(&frame(OP_CLOSE, &[0x03, 0xe8])).expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.closed.is_empty() && std::time::Instant::now() < deadline {
            let caught_up = lp.poll(std::time::Duration::from_millis(10), &mut got).expect("poll");
            assert!(caught_up, "two sockets are fewer than one wait takes");
        }
        servers[0].write_all(tail).expect("write");
        drop(servers.remove(0));
        while got.closed.len() < 2 && std::time::Instant::now() < deadline {
            lp.poll(std::time::Duration::from_millis(10), &mut got).expect("poll");
        }
        let texts: Vec<(usize, usize)> = got.texts.iter().map(|(id, p)| (*id, p.len())).collect();
        assert_eq!(texts, [(0, 5), (1, 5), (0, 200), (0, 1)], "in order, whole, per connection");
        assert_eq!(got.closed, [1, 0], "a close frame, then end of stream");
    }

    #[test]
    fn a_masked_frame_from_the_server_is_an_error() {
        assert!(frame_at(&[0x81u8, 0x81, 1, 2, 3, 4, b'a']).is_err());
    }
}
