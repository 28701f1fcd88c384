//! A validating pass over the inbound RTMP chunk stream, run before bytes
//! reach `rml_rtmp`'s session.
//!
//! `rml_rtmp` trusts its peer: it reassembles every chunk stream into one
//! shared buffer, does unchecked arithmetic on header fields and parses AMF0
//! recursively. A stranger can send any bytes, so this guard parses chunk
//! headers itself (payloads are only counted, except small control and AMF
//! messages, which it reads) and rejects, with a reason, anything that is
//! outside what real encoders send or over our limits:
//!
//! - chunk sizes outside `1..=0xFFFFFF` (a chunk size of 0 or 2^31);
//! - messages longer than `max_message_bytes`, AMF messages longer than
//!   `max_amf_bytes`, AMF nested deeper than `max_amf_depth`;
//! - a header that changes a message mid-way, a continuation with no
//!   previous header, interleaved messages on two chunk streams;
//! - extended timestamps that would underflow a delta;
//! - more than `max_chunk_streams` chunk stream ids;
//! - AMF3 and shared-object messages, which we do not speak.
//!
//! Sans-IO: bytes in, `Ok(())` or a [`GuardError`] out.

use std::collections::HashMap;

/// Limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Largest message body accepted.
    pub max_message_bytes: u32,
    /// Largest AMF command or data message accepted.
    pub max_amf_bytes: u32,
    /// Deepest AMF0 nesting accepted.
    pub max_amf_depth: usize,
    /// Most distinct chunk stream ids per connection.
    pub max_chunk_streams: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_message_bytes: 8 * 1024 * 1024,
            max_amf_bytes: 64 * 1024,
            max_amf_depth: 16,
            max_chunk_streams: 64,
        }
    }
}

/// Why the inbound stream was refused. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// SetChunkSize outside `1..=0xFFFFFF`.
    #[error("invalid chunk size {size}")]
    InvalidChunkSize {
        /// The size the peer asked for.
        size: u32,
    },
    /// A message longer than the configured limit.
    #[error("message of {len} bytes (type {type_id}) exceeds the {limit}-byte limit")]
    MessageTooLarge {
        /// Declared length.
        len: u32,
        /// RTMP message type.
        type_id: u8,
        /// The limit it broke.
        limit: u32,
    },
    /// A compressed header on a chunk stream that has had no full header.
    #[error("chunk on csid {csid} refers to a previous header that does not exist")]
    NoPreviousHeader {
        /// Chunk stream id.
        csid: u32,
    },
    /// A new message header arrived while a message on the same chunk
    /// stream was incomplete.
    #[error("new message header on csid {csid} while {remaining} bytes of the previous message are missing")]
    HeaderMidMessage {
        /// Chunk stream id.
        csid: u32,
        /// Bytes still expected.
        remaining: u32,
    },
    /// A chunk for one stream while another stream's message is incomplete.
    #[error("chunk on csid {csid} interleaved into an incomplete message on csid {open}")]
    Interleaved {
        /// The chunk's stream.
        csid: u32,
        /// The stream with the open message.
        open: u32,
    },
    /// An extended timestamp smaller than the 0xFFFFFF marker on a delta.
    #[error("extended timestamp delta {value:#x} on csid {csid} is below 0xFFFFFF")]
    BadExtendedTimestamp {
        /// Chunk stream id.
        csid: u32,
        /// The value sent.
        value: u32,
    },
    /// Too many chunk stream ids in use.
    #[error("more than {limit} chunk streams")]
    TooManyChunkStreams {
        /// The limit.
        limit: usize,
    },
    /// AMF nested deeper than allowed.
    #[error("AMF0 nesting deeper than {limit}")]
    AmfTooDeep {
        /// The limit.
        limit: usize,
    },
    /// A message type we refuse (AMF3, shared objects).
    #[error("unsupported message type {type_id}")]
    UnsupportedMessageType {
        /// RTMP message type.
        type_id: u8,
    },
    /// A protocol control message with a malformed body.
    #[error("malformed control message type {type_id}")]
    MalformedControl {
        /// RTMP message type.
        type_id: u8,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct ChunkStream {
    length: u32,
    type_id: u8,
    /// The raw 24-bit timestamp field of the last header (0xFFFFFF means an
    /// extended timestamp follows, in continuations too).
    ts_field: u32,
    /// Bytes of the current message still to come; 0 when none is open.
    remaining: u32,
}

#[derive(Debug)]
enum Stage {
    Header,
    Payload { csid: u32, left_in_chunk: u32 },
}

/// The inbound-stream validator. Feed it every byte after the handshake.
#[derive(Debug)]
pub struct ChunkGuard {
    config: GuardConfig,
    chunk_size: u32,
    streams: HashMap<u32, ChunkStream>,
    stage: Stage,
    /// Unparsed header bytes (never more than 18).
    pending: Vec<u8>,
    /// The stream with an incomplete message, if any.
    open: Option<u32>,
    /// Body of the message being collected (control and AMF only).
    collecting: Option<Vec<u8>>,
}

const MAX_TIMESTAMP_FIELD: u32 = 0x00ff_ffff;

impl ChunkGuard {
    /// A guard for a new connection; the peer starts at chunk size 128.
    pub fn new(config: GuardConfig) -> ChunkGuard {
        ChunkGuard {
            config,
            chunk_size: 128,
            streams: HashMap::new(),
            stage: Stage::Header,
            pending: Vec::with_capacity(18),
            open: None,
            collecting: None,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Checks the next bytes of the stream.
    pub fn inspect(&mut self, mut data: &[u8]) -> Result<(), GuardError> {
        while !data.is_empty() {
            match self.stage {
                Stage::Header => {
                    // Take header bytes one at a time into `pending` until a full
                    // header parses; headers are at most 18 bytes.
                    let take = data.len().min(18 - self.pending.len());
                    self.pending.extend_from_slice(&data[..take]);
                    match self.parse_header()? {
                        None => {
                            data = &data[take..];
                        }
                        Some(used) => {
                            // Hand back what the header did not use.
                            let unused = self.pending.len() - used;
                            data = &data[take - unused..];
                            self.pending.clear();
                        }
                    }
                }
                Stage::Payload { csid, left_in_chunk } => {
                    let n = (data.len() as u64).min(u64::from(left_in_chunk)) as u32;
                    if let Some(buf) = self.collecting.as_mut() {
                        buf.extend_from_slice(&data[..n as usize]);
                    }
                    data = &data[n as usize..];
                    self.consume_payload(csid, n)?;
                }
            }
        }
        Ok(())
    }

    /// Parses a header from `pending`. `Ok(None)`: need more bytes.
    fn parse_header(&mut self) -> Result<Option<usize>, GuardError> {
        let p = &self.pending;
        let Some(&first) = p.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match p.get(1) {
                Some(&b) => (u32::from(b) + 64, 2),
                None => return Ok(None),
            },
            1 => match (p.get(1), p.get(2)) {
                (Some(&lo), Some(&hi)) => (u32::from(hi) * 256 + u32::from(lo) + 64, 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        if p.len() < at + header_len {
            return Ok(None);
        }
        let known = self.streams.get(&csid).copied();
        if fmt != 0 && known.is_none() {
            return Err(GuardError::NoPreviousHeader { csid });
        }
        if !self.streams.contains_key(&csid) && self.streams.len() >= self.config.max_chunk_streams {
            return Err(GuardError::TooManyChunkStreams { limit: self.config.max_chunk_streams });
        }
        if let Some(open) = self.open {
            if open != csid {
                return Err(GuardError::Interleaved { csid, open });
            }
        }
        let mut cs = known.unwrap_or_default();
        let mid_message = cs.remaining > 0;
        if fmt != 3 && mid_message {
            return Err(GuardError::HeaderMidMessage { csid, remaining: cs.remaining });
        }
        let u24 = |b: &[u8]| (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        if fmt <= 2 {
            cs.ts_field = u24(&p[at..at + 3]);
        }
        if fmt <= 1 {
            cs.length = u24(&p[at + 3..at + 6]);
            cs.type_id = p[at + 6];
        }
        at += header_len;
        if cs.ts_field == MAX_TIMESTAMP_FIELD {
            if p.len() < at + 4 {
                return Ok(None);
            }
            let ext = u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
            at += 4;
            // rml_rtmp subtracts 0xFFFFFF from extended deltas.
            if fmt != 0 && !mid_message && ext < MAX_TIMESTAMP_FIELD {
                return Err(GuardError::BadExtendedTimestamp { csid, value: ext });
            }
        }
        if !mid_message {
            self.start_message(csid, &cs)?;
            cs.remaining = cs.length;
        }
        let left_in_chunk = cs.remaining.min(self.chunk_size);
        self.streams.insert(csid, cs);
        if cs.remaining == 0 {
            // A zero-length message completes at its header.
            self.finish_message(cs.type_id)?;
        } else {
            self.open = Some(csid);
            self.stage = Stage::Payload { csid, left_in_chunk };
        }
        Ok(Some(at))
    }

    fn start_message(&mut self, _csid: u32, cs: &ChunkStream) -> Result<(), GuardError> {
        let type_id = cs.type_id;
        match type_id {
            // AMF3 data/shared object/command and AMF0 shared objects.
            15 | 16 | 17 | 19 => return Err(GuardError::UnsupportedMessageType { type_id }),
            _ => {}
        }
        let is_amf = matches!(type_id, 18 | 20);
        let is_control = matches!(type_id, 1..=6);
        let limit = if is_amf {
            self.config.max_amf_bytes
        } else if is_control {
            64
        } else {
            self.config.max_message_bytes
        };
        if cs.length > limit {
            return Err(GuardError::MessageTooLarge { len: cs.length, type_id, limit });
        }
        self.collecting = if is_amf || is_control { Some(Vec::with_capacity(cs.length as usize)) } else { None };
        Ok(())
    }

    fn consume_payload(&mut self, csid: u32, n: u32) -> Result<(), GuardError> {
        let Some(cs) = self.streams.get_mut(&csid) else {
            return Err(GuardError::NoPreviousHeader { csid });
        };
        cs.remaining -= n;
        let remaining = cs.remaining;
        let type_id = cs.type_id;
        let left = match self.stage {
            Stage::Payload { left_in_chunk, .. } => left_in_chunk - n,
            Stage::Header => 0,
        };
        if remaining == 0 {
            self.open = None;
            self.stage = Stage::Header;
            self.finish_message(type_id)?;
        } else if left == 0 {
            self.stage = Stage::Header;
        } else {
            self.stage = Stage::Payload { csid, left_in_chunk: left };
        }
        Ok(())
    }

    fn finish_message(&mut self, type_id: u8) -> Result<(), GuardError> {
        let body = self.collecting.take().unwrap_or_default();
        match type_id {
            1 => {
                if body.len() < 4 {
                    return Err(GuardError::MalformedControl { type_id });
                }
                let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                if size == 0 || size > MAX_TIMESTAMP_FIELD {
                    return Err(GuardError::InvalidChunkSize { size });
                }
                self.chunk_size = size;
            }
            2..=6 if body.len() < 4 => return Err(GuardError::MalformedControl { type_id }),
            18 | 20 => scan_amf0(&body, self.config.max_amf_depth)?,
            _ => {}
        }
        Ok(())
    }
}

enum Container {
    Object,
    Array(u32),
}

/// Walks AMF0 values without recursion, failing only on nesting deeper than
/// `max_depth`. Malformed input past that is left for rml_amf0 to reject.
pub fn scan_amf0(data: &[u8], max_depth: usize) -> Result<(), GuardError> {
    let mut pos = 0usize;
    let mut stack: Vec<Container> = Vec::new();
    let read_u16 = |pos: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([*data.get(pos)?, *data.get(pos + 1)?])))
    };
    loop {
        match stack.last_mut() {
            Some(Container::Object) => {
                let Some(label_len) = read_u16(pos) else { return Ok(()) };
                pos += 2;
                if label_len == 0 {
                    // 00 00 09 ends the object.
                    pos += 1;
                    stack.pop();
                    continue;
                }
                pos += label_len;
            }
            Some(Container::Array(n)) => {
                if *n == 0 {
                    stack.pop();
                    continue;
                }
                *n -= 1;
            }
            None => {}
        }
        let Some(&marker) = data.get(pos) else { return Ok(()) };
        pos += 1;
        match marker {
            0 => pos += 8,
            1 => pos += 1,
            2 => {
                let Some(len) = read_u16(pos) else { return Ok(()) };
                pos += 2 + len;
            }
            3 => stack.push(Container::Object),
            8 => {
                pos += 4;
                stack.push(Container::Object);
            }
            10 => {
                let Some(b) = data.get(pos..pos + 4) else { return Ok(()) };
                pos += 4;
                stack.push(Container::Array(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
            }
            // null, undefined; anything else rml_amf0 rejects on its own.
            5 | 6 => {}
            _ => return Ok(()),
        }
        if stack.len() > max_depth {
            return Err(GuardError::AmfTooDeep { limit: max_depth });
        }
    }
}

/// How many top-level AMF0 values `rml_amf0` reads from `data` (0 on a
/// parse error). For the fuzz target: what the guard passes must be safe to
/// hand to the recursive parser.
pub fn amf0_value_count(data: &mut &[u8]) -> usize {
    rml_amf0::deserialize(data).map(|v| v.len()).unwrap_or(0)
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
