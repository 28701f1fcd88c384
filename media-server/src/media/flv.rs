//! FLV: the file header, tag encoding, and a streaming tag reader.
//!
//! The writer serves HTTP-FLV; the reader is used by tests and tools to
//! check what we serve. Both are sans-IO.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::{Frame, FrameKind};

/// Size of an FLV tag header.
pub const TAG_HEADER_LEN: usize = 11;

/// The 9-byte FLV file header plus the first PreviousTagSize (0).
pub fn file_header(has_audio: bool, has_video: bool) -> Bytes {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    Bytes::from(vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// Encodes a frame as one FLV tag with its trailing PreviousTagSize.
pub fn encode_tag(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(TAG_HEADER_LEN + frame.payload.len() + 4);
    put_tag(&mut out, frame.kind.type_id(), frame.dts, &frame.payload);
    out.freeze()
}

/// Writes one tag (header, body, PreviousTagSize) into `out`. The timestamp
/// is the low 32 bits of `dts_ms`, as FLV stores it (24 bits + 8 extension).
pub fn put_tag(out: &mut BytesMut, tag_type: u8, dts_ms: u64, body: &[u8]) {
    let ts = dts_ms as u32;
    let len = body.len() as u32;
    out.put_u8(tag_type);
    out.put_uint(u64::from(len & 0x00ff_ffff), 3);
    out.put_uint(u64::from(ts & 0x00ff_ffff), 3);
    out.put_u8((ts >> 24) as u8);
    out.put_uint(0, 3); // stream id, always 0
    out.put_slice(body);
    out.put_u32(len + TAG_HEADER_LEN as u32);
}

/// A tag read back from an FLV byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script.
    pub tag_type: u8,
    /// The 32-bit timestamp, ms.
    pub timestamp: u32,
    /// The tag body.
    pub body: Bytes,
}

impl FlvTag {
    /// The frame kind of this tag, if it is one we carry.
    pub fn kind(&self) -> Option<FrameKind> {
        match self.tag_type {
            8 => Some(FrameKind::Audio),
            9 => Some(FrameKind::Video),
            18 => Some(FrameKind::Metadata),
            _ => None,
        }
    }
}

/// Malformed FLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The stream does not start with `FLV`.
    #[error("not an FLV stream (bad signature)")]
    BadSignature,
    /// A header offset that points inside the header.
    #[error("FLV header length {0} is too small")]
    BadHeaderLength(u32),
    /// A tag larger than the reader's limit.
    #[error("FLV tag of {len} bytes exceeds the {limit}-byte limit")]
    TagTooLarge {
        /// Declared length.
        len: usize,
        /// The reader's limit.
        limit: usize,
    },
    /// PreviousTagSize disagrees with the tag just read.
    #[error("PreviousTagSize {found} does not match the tag size {expected}")]
    BadPreviousTagSize {
        /// What the stream said.
        found: u32,
        /// What the tag implied.
        expected: u32,
    },
}

/// An incremental FLV reader: push bytes in, pull tags out.
#[derive(Debug)]
pub struct FlvReader {
    buf: BytesMut,
    header_done: bool,
    max_tag_bytes: usize,
    /// Flags byte of the file header (bit 2 audio, bit 0 video), once read.
    pub flags: Option<u8>,
}

impl FlvReader {
    /// A reader that refuses tags larger than `max_tag_bytes`.
    pub fn new(max_tag_bytes: usize) -> FlvReader {
        FlvReader { buf: BytesMut::new(), header_done: false, max_tag_bytes, flags: None }
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete tag, `Ok(None)` when more bytes are needed.
    pub fn next_tag(&mut self) -> Result<Option<FlvTag>, FlvError> {
        if !self.header_done {
            if self.buf.len() < 9 {
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                return Err(FlvError::BadSignature);
            }
            let offset = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            if offset < 9 {
                return Err(FlvError::BadHeaderLength(offset));
            }
            let skip = offset as usize + 4;
            if self.buf.len() < skip {
                return Ok(None);
            }
            self.flags = Some(self.buf[4]);
            self.buf.advance(skip);
            self.header_done = true;
        }
        if self.buf.len() < TAG_HEADER_LEN {
            return Ok(None);
        }
        let len = ((self.buf[1] as usize) << 16) | ((self.buf[2] as usize) << 8) | self.buf[3] as usize;
        if len > self.max_tag_bytes {
            return Err(FlvError::TagTooLarge { len, limit: self.max_tag_bytes });
        }
        let total = TAG_HEADER_LEN + len + 4;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut tag = self.buf.split_to(total);
        let tag_type = tag[0] & 0x1f;
        let timestamp = ((tag[7] as u32) << 24)
            | ((tag[4] as u32) << 16)
            | ((tag[5] as u32) << 8)
            | tag[6] as u32;
        tag.advance(TAG_HEADER_LEN);
        let body = tag.split_to(len).freeze();
        let prev = tag.get_u32();
        let expected = (len + TAG_HEADER_LEN) as u32;
        if prev != expected {
            return Err(FlvError::BadPreviousTagSize { found: prev, expected });
        }
        Ok(Some(FlvTag { tag_type, timestamp, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_flags_say_which_tracks_exist() {
        assert_eq!(file_header(true, true)[4], 5);
        assert_eq!(file_header(true, false)[4], 4);
        assert_eq!(file_header(false, true)[4], 1);
    }

    #[test]
    fn timestamp_extension_byte_carries_the_top_eight_bits() {
        let mut out = BytesMut::new();
        put_tag(&mut out, 9, 0x1234_5678, &[1, 2, 3]);
        assert_eq!(&out[4..8], &[0x34, 0x56, 0x78, 0x12]);
    }

    #[test]
    fn reader_rejects_garbage_and_oversize_tags() {
        let mut r = FlvReader::new(16);
        r.push(b"NOTFLV123456");
        assert_eq!(r.next_tag(), Err(FlvError::BadSignature));
        let mut r = FlvReader::new(2);
        r.push(&file_header(true, true));
        let mut out = BytesMut::new();
        put_tag(&mut out, 8, 0, &[1, 2, 3]);
        r.push(&out);
        assert!(matches!(r.next_tag(), Err(FlvError::TagTooLarge { .. })));
    }

    proptest! {
        #[test]
        fn tags_round_trip_through_any_split(
            tags in proptest::collection::vec((prop_oneof![Just(8u8), Just(9u8), Just(18u8)], any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
            split in 1usize..64,
        ) {
            let mut stream = BytesMut::new();
            stream.extend_from_slice(&file_header(true, true));
            for (t, ts, body) in &tags {
                put_tag(&mut stream, *t, u64::from(*ts), body);
            }
            let mut r = FlvReader::new(1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                r.push(piece);
                while let Some(tag) = r.next_tag().unwrap() {
                    got.push(tag);
                }
            }
            prop_assert_eq!(got.len(), tags.len());
            for (g, (t, ts, body)) in got.iter().zip(&tags) {
                prop_assert_eq!(g.tag_type, *t);
                prop_assert_eq!(g.timestamp, *ts);
                prop_assert_eq!(&g.body[..], &body[..]);
            }
        }

        #[test]
        fn reader_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut r = FlvReader::new(4096);
            r.push(&data);
            for _ in 0..100 {
                match r.next_tag() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
