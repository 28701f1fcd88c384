//! A lean WebSocket listener for the room bench: a hand-written upgrade,
//! then server frames read straight off the socket into one reused buffer.
//!
//! Why not tungstenite here: at 10,000 clients on the server's own cores,
//! the bench must cost little per frame. tungstenite zeroes its 128 KiB read
//! buffer before every read (30% of the bench's CPU in a perf profile) and
//! each client task re-registered a cancellation waiter per frame. Here a
//! read costs one syscall and a scan of the frame headers; only measuring
//! clients parse JSON. Server frames are unmasked (RFC 6455 5.1), so the
//! splitter refuses a masked one as a broken server.

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A complete server frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServerFrame {
    pub(crate) opcode: u8,
    pub(crate) fin: bool,
    pub(crate) payload: BytesMut,
}

pub(crate) const OP_TEXT: u8 = 1;
pub(crate) const OP_CLOSE: u8 = 8;

/// Splits buffered bytes into server frames, sans-IO: returns the next
/// complete frame and removes it from `buf`, `Ok(None)` while one is partial.
pub(crate) fn next_frame(buf: &mut BytesMut) -> anyhow::Result<Option<ServerFrame>> {
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
        buf.reserve(header + len - buf.len());
        return Ok(None);
    }
    buf.advance(header);
    Ok(Some(ServerFrame { opcode: b0 & 0x0f, fin: b0 & 0x80 != 0, payload: buf.split_to(len) }))
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

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 0xffff => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let big = vec![b'x'; 70_000];
        let mut wire = frame(OP_TEXT, b"{\"type\":\"chat\"}");
        wire.extend(frame(OP_TEXT, &vec![b'y'; 300]));
        wire.extend(frame(OP_TEXT, &big));
        wire.extend(frame(OP_CLOSE, &[0x03, 0xf0]));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // One byte at a time: every header and length form is cut somewhere.
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = next_frame(&mut buf).expect("valid") {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        let lens: Vec<(u8, usize)> = got.iter().map(|f| (f.opcode, f.payload.len())).collect();
        assert_eq!(lens, [(OP_TEXT, 15), (OP_TEXT, 300), (OP_TEXT, 70_000), (OP_CLOSE, 2)]);
        assert!(got.iter().all(|f| f.fin));
        assert_eq!(&got[0].payload[..], b"{\"type\":\"chat\"}");
    }

    #[test]
    fn a_masked_frame_from_the_server_is_an_error() {
        let mut buf = BytesMut::from(&[0x81u8, 0x81, 1, 2, 3, 4, b'a'][..]);
        assert!(next_frame(&mut buf).is_err());
    }
}
