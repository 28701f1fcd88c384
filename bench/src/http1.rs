//! A minimal HTTP/1.1 keep-alive GET client for the HLS viewers.
//!
//! Why not hyper's client: an HLS viewer reads a segment and throws it away;
//! here a response body is read straight into one reused buffer per viewer
//! and only its first bytes and its length are kept, so thousands of viewers
//! cost the bench little more than the kernel's receive path. The head
//! parser and body decoder are sans-IO ([`parse_head`], [`BodyDecoder`]);
//! [`Http1Conn`] is the thin async shell over one `TcpStream`.
//!
//! Contract: one request in flight per connection; `Content-Length` and
//! `chunked` bodies; a response with `Connection: close` (or an HTTP/1.0
//! one) makes the connection unusable for the next request, and the caller
//! reconnects.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed status line and the headers the client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    /// The server will close after this response.
    pub(crate) close: bool,
    /// Length of the head including the blank line.
    pub(crate) head_len: usize,
}

/// Parses a response head from the start of `buf`: `Ok(None)` until the
/// blank line has arrived.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = ResponseHead {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
        head_len: end + 4,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length =
                Some(value.parse().map_err(|_| format!("bad content-length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            head.close = v.contains("close") || (head.close && !v.contains("keep-alive"));
        }
    }
    Ok(Some(head))
}

/// Where a body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes of data left (of a whole body or of one chunk).
    Data(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, until an empty line.
    Trailer,
    Done,
}

/// Decodes a `Content-Length` or `chunked` body from successive reads,
/// handing data bytes to a sink. Sans-IO.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    state: BodyState,
    chunked: bool,
    line: Vec<u8>,
}

impl BodyDecoder {
    pub(crate) fn new(head: &ResponseHead) -> Result<Self, String> {
        let state = if head.chunked {
            BodyState::ChunkSize
        } else {
            match head.content_length {
                Some(0) => BodyState::Done,
                Some(n) => BodyState::Data(n),
                None => return Err("response has neither content-length nor chunked body".into()),
            }
        };
        Ok(Self {
            state,
            chunked: head.chunked,
            line: Vec::new(),
        })
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Consumes from `input`, calling `sink` with body data; returns the
    /// bytes consumed (less than `input.len()` only once the body is done:
    /// the rest belongs to the next response).
    pub(crate) fn handle_input(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, String> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                BodyState::Done => break,
                BodyState::Data(left) => {
                    let n = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(&input[at..at + n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = match (left, self.chunked) {
                        (0, true) => BodyState::ChunkEnd,
                        (0, false) => BodyState::Done,
                        (l, _) => BodyState::Data(l),
                    };
                }
                BodyState::ChunkSize | BodyState::ChunkEnd | BodyState::Trailer => {
                    let Some(nl) = input[at..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[at..]);
                        if self.line.len() > 1024 {
                            return Err("chunk framing line too long".into());
                        }
                        return Ok(input.len());
                    };
                    self.line.extend_from_slice(&input[at..at + nl]);
                    at += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = std::str::from_utf8(&line)
                        .map_err(|_| "chunk framing is not UTF-8")?
                        .trim();
                    self.state = match self.state {
                        BodyState::ChunkEnd if line.is_empty() => BodyState::ChunkSize,
                        BodyState::ChunkEnd => return Err("missing CRLF after a chunk".into()),
                        BodyState::Trailer if line.is_empty() => BodyState::Done,
                        BodyState::Trailer => BodyState::Trailer,
                        _ => {
                            let size = line.split(';').next().unwrap_or_default().trim();
                            match u64::from_str_radix(size, 16)
                                .map_err(|_| format!("bad chunk size {size:?}"))?
                            {
                                0 => BodyState::Trailer,
                                n => BodyState::Data(n),
                            }
                        }
                    };
                }
            }
        }
        Ok(at)
    }
}

/// One response as the viewer keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Body bytes received.
    pub(crate) body_len: u64,
    /// The first `keep` bytes of the body (see [`Http1Conn::get`]).
    pub(crate) kept: Vec<u8>,
}

/// A keep-alive connection that sends GETs one at a time.
pub(crate) struct Http1Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes in `buf[..filled]` not consumed yet.
    filled: usize,
    reusable: bool,
    /// Bytes read from the socket, heads included.
    pub(crate) bytes_read: u64,
}

impl Http1Conn {
    pub(crate) async fn connect(addr: SocketAddr, read_buf: usize) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; read_buf.max(MAX_HEAD)],
            filled: 0,
            reusable: true,
            bytes_read: 0,
        })
    }

    /// False once the server said it will close, or a response failed.
    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.filled == self.buf.len() {
            bail!("read buffer full");
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            self.reusable = false;
            bail!("server closed the connection");
        }
        self.filled += n;
        self.bytes_read += n as u64;
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Sends `GET path` and reads the whole response, keeping the first
    /// `keep` bytes of its body (all of a playlist, a segment's first packet).
    pub(crate) async fn get(
        &mut self,
        authority: &str,
        path: &str,
        keep: usize,
    ) -> anyhow::Result<Response> {
        if !self.reusable {
            bail!("connection not reusable");
        }
        // Marked unusable until the response has been read whole, so an
        // error or a cancellation midway never reuses a desynchronised stream.
        self.reusable = false;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: westream-bench\r\nAccept: */*\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf[..self.filled]).map_err(anyhow::Error::msg)? {
                break head;
            }
            self.fill().await?;
        };
        self.consume(head.head_len);
        let mut decoder = BodyDecoder::new(&head).map_err(anyhow::Error::msg)?;
        let mut response = Response {
            status: head.status,
            body_len: 0,
            kept: Vec::new(),
        };
        loop {
            let used = decoder
                .handle_input(&self.buf[..self.filled], |data| {
                    response.body_len += data.len() as u64;
                    let room = keep.saturating_sub(response.kept.len());
                    response
                        .kept
                        .extend_from_slice(&data[..data.len().min(room)]);
                })
                .map_err(anyhow::Error::msg)?;
            self.consume(used);
            if decoder.is_done() {
                break;
            }
            self.fill().await?;
        }
        self.reusable = !head.close;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(head: &ResponseHead, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize), String> {
        let mut d = BodyDecoder::new(head)?;
        let mut out = Vec::new();
        let mut used = 0;
        for p in pieces {
            used += d.handle_input(p, |data| out.extend_from_slice(data))?;
        }
        assert!(d.is_done(), "body not finished");
        Ok((out, used))
    }

    #[test]
    fn heads_are_parsed_once_complete() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\ncontent-length: 376\r\n\r\nXYZ";
        assert_eq!(parse_head(&raw[..20]), Ok(None));
        let head = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, Some(376));
        assert!(!head.chunked && !head.close);
        assert_eq!(head.head_len, raw.len() - 3);
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.status, 404);
        assert!(head.chunked && head.close);
        let head = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(head.close, "HTTP/1.0 closes by default");
        assert!(parse_head(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let (body, used) = decode_all(&head, &[b"he", b"lloHTTP/1.1"]).expect("valid");
        assert_eq!(body, b"hello");
        assert_eq!(used, 5, "the next response's bytes are left alone");
        let empty = ResponseHead { content_length: Some(0), ..head };
        assert!(BodyDecoder::new(&empty).expect("valid").is_done());
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let wire: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (a, b) = wire.split_at(split);
            let (body, used) = decode_all(&head, &[a, b]).expect("valid");
            assert_eq!(body, b"Wikipedia", "split at {split}");
            assert_eq!(used, wire.len() - 4, "split at {split}");
        }
        let mut d = BodyDecoder::new(&head).expect("valid");
        assert!(d.handle_input(b"zz\r\n", |_| {}).is_err());
    }

    #[test]
    fn a_response_without_framing_is_refused() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").expect("valid").expect("complete");
        assert!(BodyDecoder::new(&head).is_err());
    }
}
