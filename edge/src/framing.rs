//! The relay framing: what an origin and an edge say on one bidirectional
//! QUIC stream. Sans-IO: bytes in ([`RelayDecoder::handle_input`]), messages
//! out ([`RelayDecoder::poll_message`]); [`encode`] the other way.
//!
//! Wire format, every message: `type: u8`, `len: u32` big-endian, then `len`
//! bytes of body. Strings in bodies are `u16` big-endian length + UTF-8.
//!
//! | type | message | body |
//! |---|---|---|
//! | 1 | [`RelayRequest`] (edge -> origin, first and only) | magic `WSR1`, channel, rendition, edge id, token |
//! | 2 | [`StreamHeader`] (origin -> edge, first) | flags (bit 0 video, bit 1 audio), channel, origin id |
//! | 3 | [`RelayFrame`] (origin -> edge) | kind (8 audio, 9 video, 18 script), dts `u64`, payload |
//! | 4 | [`Refusal`] (origin -> edge, then the stream ends) | code `u8`, reason |
//!
//! After the header the origin sends metadata, sequence headers and the
//! GOP cache as ordinary frames, then live frames, in the order the hub
//! hands them to any viewer. The stream ends (FIN) when the channel ends.
//!
//! Contract: a length over the limit for its type is an error as soon as
//! the 5-byte prefix is read, before any body is buffered; malformed input
//! is an error, never a panic. After an error the decoder stays failed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The version magic at the start of a request.
pub const REQUEST_MAGIC: &[u8; 4] = b"WSR1";
/// Largest body of a request, header or refusal.
pub const MAX_CONTROL_BODY: usize = 4096;
/// Default largest frame payload (matches RTMP's largest accepted message).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Bytes before a message body.
pub const PREFIX_LEN: usize = 5;
/// Bytes of a frame body before its payload (kind + dts).
pub const FRAME_FIXED_LEN: usize = 9;
/// Longest channel, rendition or node id.
pub const MAX_NAME_LEN: usize = 64;
/// Longest node token.
pub const MAX_TOKEN_LEN: usize = 512;

const TYPE_REQUEST: u8 = 1;
const TYPE_HEADER: u8 = 2;
const TYPE_FRAME: u8 = 3;
const TYPE_REFUSAL: u8 = 4;

/// An edge asks an origin for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRequest {
    /// The public channel name.
    pub channel: String,
    /// The rendition (`source` for the published stream).
    pub rendition: String,
    /// The asking edge's id, for the origin's logs.
    pub edge_id: String,
    /// The node token the control plane issued.
    pub token: String,
}

/// The origin's first answer: the channel is there and frames follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// Video was seen on the channel.
    pub has_video: bool,
    /// Audio was seen on the channel.
    pub has_audio: bool,
    /// The channel, echoed.
    pub channel: String,
    /// The answering origin's node id.
    pub origin_id: String,
}

/// What a relayed frame carries (the FLV tag type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayFrameKind {
    /// FLV audio tag body.
    Audio,
    /// FLV video tag body.
    Video,
    /// AMF0 script body.
    Metadata,
}

impl RelayFrameKind {
    /// The FLV tag type id.
    pub fn type_id(self) -> u8 {
        match self {
            RelayFrameKind::Audio => 8,
            RelayFrameKind::Video => 9,
            RelayFrameKind::Metadata => 18,
        }
    }

    /// The kind for an FLV tag type id.
    pub fn from_type_id(id: u8) -> Option<RelayFrameKind> {
        match id {
            8 => Some(RelayFrameKind::Audio),
            9 => Some(RelayFrameKind::Video),
            18 => Some(RelayFrameKind::Metadata),
            _ => None,
        }
    }
}

/// One media frame on the origin's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFrame {
    /// Audio, video or script.
    pub kind: RelayFrameKind,
    /// Decode timestamp in ms on the origin's 64-bit timeline.
    pub dts: u64,
    /// The FLV tag body.
    pub payload: Bytes,
}

/// Why the origin will not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Wrong or missing node token.
    Unauthorized,
    /// The channel is not live on this origin; another may have it.
    NotLive,
    /// The request was malformed.
    BadRequest,
    /// The origin is shutting down or overloaded; retry elsewhere.
    Unavailable,
}

impl RefusalCode {
    fn to_byte(self) -> u8 {
        match self {
            RefusalCode::Unauthorized => 1,
            RefusalCode::NotLive => 2,
            RefusalCode::BadRequest => 3,
            RefusalCode::Unavailable => 4,
        }
    }

    fn from_byte(b: u8) -> Option<RefusalCode> {
        match b {
            1 => Some(RefusalCode::Unauthorized),
            2 => Some(RefusalCode::NotLive),
            3 => Some(RefusalCode::BadRequest),
            4 => Some(RefusalCode::Unavailable),
            _ => None,
        }
    }

    /// A stable lowercase label (logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Unauthorized => "unauthorized",
            RefusalCode::NotLive => "not_live",
            RefusalCode::BadRequest => "bad_request",
            RefusalCode::Unavailable => "unavailable",
        }
    }
}

/// A refusal with a reason safe to log on the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub code: RefusalCode,
    /// Human text.
    pub reason: String,
}

/// Any message of the relay protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMessage {
    /// Edge -> origin.
    Request(RelayRequest),
    /// Origin -> edge, before the frames.
    Header(StreamHeader),
    /// Origin -> edge.
    Frame(RelayFrame),
    /// Origin -> edge, instead of a header.
    Refusal(Refusal),
}

/// Malformed relay input. The stream (or connection) that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A message type this version does not know.
    #[error("unknown relay message type {type_id}")]
    UnknownType {
        /// The type byte.
        type_id: u8,
    },
    /// A body longer than allowed for its type.
    #[error("relay message type {type_id} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The type byte.
        type_id: u8,
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A body whose fields do not parse.
    #[error("malformed relay {what}")]
    Malformed {
        /// Which message or field.
        what: &'static str,
    },
    /// A request without the version magic.
    #[error("relay request without the WSR1 magic (another protocol or version)")]
    BadMagic,
    /// A string field longer than allowed.
    #[error("relay field {field} is {len} bytes, more than {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The decoder failed before; it accepts nothing more.
    #[error("relay decoder already failed")]
    Failed,
}

/// The incremental decoder of one direction of one relay stream.
#[derive(Debug)]
pub struct RelayDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
    failed: bool,
}

impl RelayDecoder {
    /// A decoder that accepts frame payloads up to `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> RelayDecoder {
        RelayDecoder { buf: BytesMut::new(), max_frame_bytes, failed: false }
    }

    /// Feeds received bytes.
    pub fn handle_input(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more input is needed.
    pub fn poll_message(&mut self) -> Result<Option<RelayMessage>, FramingError> {
        if self.failed {
            return Err(FramingError::Failed);
        }
        match self.decode_one() {
            Err(e) => {
                self.failed = true;
                self.buf.clear();
                Err(e)
            }
            ok => ok,
        }
    }

    fn decode_one(&mut self) -> Result<Option<RelayMessage>, FramingError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let type_id = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let max = match type_id {
            TYPE_REQUEST | TYPE_HEADER | TYPE_REFUSAL => MAX_CONTROL_BODY,
            TYPE_FRAME => self.max_frame_bytes.saturating_add(FRAME_FIXED_LEN),
            _ => return Err(FramingError::UnknownType { type_id }),
        };
        if len > max {
            return Err(FramingError::TooLarge { type_id, len, max });
        }
        if self.buf.len() < PREFIX_LEN + len {
            // Reserve once for the whole body so a large frame is not
            // regrown many times.
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        let body = self.buf.split_to(len).freeze();
        decode_body(type_id, body).map(Some)
    }
}

fn decode_body(type_id: u8, mut body: Bytes) -> Result<RelayMessage, FramingError> {
    match type_id {
        TYPE_REQUEST => {
            if body.len() < REQUEST_MAGIC.len() || &body[..4] != REQUEST_MAGIC {
                return Err(FramingError::BadMagic);
            }
            body.advance(4);
            let channel = get_str(&mut body, "channel", MAX_NAME_LEN)?;
            let rendition = get_str(&mut body, "rendition", MAX_NAME_LEN)?;
            let edge_id = get_str(&mut body, "edge_id", MAX_NAME_LEN)?;
            let token = get_str(&mut body, "token", MAX_TOKEN_LEN)?;
            end(&body, "request")?;
            Ok(RelayMessage::Request(RelayRequest { channel, rendition, edge_id, token }))
        }
        TYPE_HEADER => {
            if body.is_empty() {
                return Err(FramingError::Malformed { what: "header" });
            }
            let flags = body.get_u8();
            if flags & !0b11 != 0 {
                return Err(FramingError::Malformed { what: "header flags" });
            }
            let channel = get_str(&mut body, "channel", MAX_NAME_LEN)?;
            let origin_id = get_str(&mut body, "origin_id", MAX_NAME_LEN)?;
            end(&body, "header")?;
            Ok(RelayMessage::Header(StreamHeader {
                has_video: flags & 1 != 0,
                has_audio: flags & 2 != 0,
                channel,
                origin_id,
            }))
        }
        TYPE_FRAME => {
            if body.len() < FRAME_FIXED_LEN {
                return Err(FramingError::Malformed { what: "frame" });
            }
            let kind = RelayFrameKind::from_type_id(body.get_u8()).ok_or(FramingError::Malformed { what: "frame kind" })?;
            let dts = body.get_u64();
            Ok(RelayMessage::Frame(RelayFrame { kind, dts, payload: body }))
        }
        TYPE_REFUSAL => {
            if body.is_empty() {
                return Err(FramingError::Malformed { what: "refusal" });
            }
            let code = RefusalCode::from_byte(body.get_u8()).ok_or(FramingError::Malformed { what: "refusal code" })?;
            let reason = get_str(&mut body, "reason", MAX_CONTROL_BODY)?;
            end(&body, "refusal")?;
            Ok(RelayMessage::Refusal(Refusal { code, reason }))
        }
        type_id => Err(FramingError::UnknownType { type_id }),
    }
}

fn end(body: &Bytes, what: &'static str) -> Result<(), FramingError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(FramingError::Malformed { what })
    }
}

fn get_str(body: &mut Bytes, field: &'static str, max: usize) -> Result<String, FramingError> {
    if body.len() < 2 {
        return Err(FramingError::Malformed { what: field });
    }
    let len = body.get_u16() as usize;
    if len > max {
        return Err(FramingError::FieldTooLong { field, len, max });
    }
    if body.len() < len {
        return Err(FramingError::Malformed { what: field });
    }
    let raw = body.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| FramingError::Malformed { what: field })
}

fn put_str(out: &mut BytesMut, field: &'static str, s: &str, max: usize) -> Result<(), FramingError> {
    if s.len() > max {
        return Err(FramingError::FieldTooLong { field, len: s.len(), max });
    }
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
    Ok(())
}

/// Appends one message to `out`. Fails (writing nothing) when a field is
/// over its limit, so a sender never emits what a receiver must refuse.
pub fn encode(msg: &RelayMessage, out: &mut BytesMut) -> Result<(), FramingError> {
    let mut body = BytesMut::new();
    let type_id = match msg {
        RelayMessage::Request(r) => {
            body.put_slice(REQUEST_MAGIC);
            put_str(&mut body, "channel", &r.channel, MAX_NAME_LEN)?;
            put_str(&mut body, "rendition", &r.rendition, MAX_NAME_LEN)?;
            put_str(&mut body, "edge_id", &r.edge_id, MAX_NAME_LEN)?;
            put_str(&mut body, "token", &r.token, MAX_TOKEN_LEN)?;
            TYPE_REQUEST
        }
        RelayMessage::Header(h) => {
            body.put_u8(u8::from(h.has_video) | (u8::from(h.has_audio) << 1));
            put_str(&mut body, "channel", &h.channel, MAX_NAME_LEN)?;
            put_str(&mut body, "origin_id", &h.origin_id, MAX_NAME_LEN)?;
            TYPE_HEADER
        }
        RelayMessage::Frame(f) => {
            out.put_slice(&frame_prefix(f));
            out.put_slice(&f.payload);
            return Ok(());
        }
        RelayMessage::Refusal(r) => {
            body.put_u8(r.code.to_byte());
            let reason = truncate_utf8(&r.reason, MAX_CONTROL_BODY - 3);
            put_str(&mut body, "reason", reason, MAX_CONTROL_BODY)?;
            TYPE_REFUSAL
        }
    };
    if body.len() > MAX_CONTROL_BODY {
        return Err(FramingError::TooLarge { type_id, len: body.len(), max: MAX_CONTROL_BODY });
    }
    out.put_u8(type_id);
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    Ok(())
}

/// The 14 bytes before a frame's payload, so a sender can write the
/// payload `Bytes` as its own chunk without copying it.
pub fn frame_prefix(f: &RelayFrame) -> [u8; PREFIX_LEN + FRAME_FIXED_LEN] {
    let mut p = [0u8; PREFIX_LEN + FRAME_FIXED_LEN];
    p[0] = TYPE_FRAME;
    let len = (FRAME_FIXED_LEN + f.payload.len()) as u32;
    p[1..5].copy_from_slice(&len.to_be_bytes());
    p[5] = f.kind.type_id();
    p[6..14].copy_from_slice(&f.dts.to_be_bytes());
    p
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
