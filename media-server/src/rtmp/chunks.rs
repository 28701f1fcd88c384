//! Outbound RTMP chunking for play sessions, shared across viewers.
//!
//! Every media message is written with a full (type 0) header, so its bytes
//! do not depend on what this connection sent before: the same `Bytes` can
//! go to every viewer with the same chunk size and message stream id. That
//! costs 7 header bytes a message over delta headers and saves a
//! serialization (and a payload copy) per viewer per frame.
//!
//! Chunk stream ids 7-9 are ours alone; `rml_rtmp` uses 2-6 for the control
//! and command messages it writes on the same connection.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{Frame, FrameKind};

/// Chunk stream id for video messages.
pub const CSID_VIDEO: u8 = 7;
/// Chunk stream id for audio messages.
pub const CSID_AUDIO: u8 = 8;
/// Chunk stream id for script data (`onMetaData`).
pub const CSID_DATA: u8 = 9;

fn csid_for(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Video => CSID_VIDEO,
        FrameKind::Audio => CSID_AUDIO,
        FrameKind::Metadata => CSID_DATA,
    }
}

/// Serializes a frame for a play session with message stream id `msid`.
pub fn encode_frame(frame: &Frame, msid: u32, chunk_size: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(encoded_len(frame.payload.len(), frame.dts as u32, chunk_size));
    put_message(&mut out, csid_for(frame.kind), frame.kind.type_id(), frame.dts as u32, msid, &frame.payload, chunk_size);
    out.freeze()
}

fn encoded_len(payload_len: usize, ts: u32, chunk_size: usize) -> usize {
    let chunk_size = chunk_size.max(1);
    let ext = if ts >= 0x00ff_ffff { 4 } else { 0 };
    let continuations = payload_len.saturating_sub(1) / chunk_size;
    12 + ext + payload_len + continuations * (1 + ext)
}

/// Writes one message as chunks: a type 0 header, then type 3 headers
/// every `chunk_size` bytes. With a timestamp at or past 0xFFFFFF the
/// extended timestamp follows every header, continuations included, as
/// FFmpeg and librtmp expect.
pub fn put_message(out: &mut BytesMut, csid: u8, type_id: u8, ts: u32, msid: u32, payload: &[u8], chunk_size: usize) {
    debug_assert!((2..64).contains(&csid));
    let chunk_size = chunk_size.max(1);
    let extended = ts >= 0x00ff_ffff;
    out.put_u8(csid);
    out.put_uint(u64::from(ts.min(0x00ff_ffff)), 3);
    out.put_uint(payload.len() as u64 & 0x00ff_ffff, 3);
    out.put_u8(type_id);
    out.put_u32_le(msid);
    if extended {
        out.put_u32(ts);
    }
    let mut chunks = payload.chunks(chunk_size);
    if let Some(first) = chunks.next() {
        out.put_slice(first);
    }
    for rest in chunks {
        out.put_u8(0xc0 | csid);
        if extended {
            out.put_u32(ts);
        }
        out.put_slice(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::TagInfo;
    use proptest::prelude::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn frame(kind: FrameKind, dts: u64, len: usize) -> Frame {
        let info = TagInfo { keyframe: false, sequence_header: false, cts: 0 };
        Frame::new(kind, dts, info, 0, Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()))
    }

    #[test]
    fn small_message_is_one_type0_chunk() {
        let f = frame(FrameKind::Audio, 1000, 5);
        let b = encode_frame(&f, 1, 4096);
        assert_eq!(&b[..], &[8, 0, 0x03, 0xe8, 0, 0, 5, 8, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
    }

    proptest! {
        #[test]
        fn rml_reads_back_what_we_write(
            len in 0usize..20000,
            chunk_size in prop_oneof![Just(128usize), Just(4096usize), 1usize..500],
            dts in prop_oneof![0u64..100_000, 0xfff000u64..0x1_0000_0000],
            kind in prop_oneof![Just(FrameKind::Audio), Just(FrameKind::Video), Just(FrameKind::Metadata)],
        ) {
            let f = frame(kind, dts, len);
            let b = encode_frame(&f, 1, chunk_size);
            prop_assert_eq!(b.len(), encoded_len(len, dts as u32, chunk_size));
            let mut de = ChunkDeserializer::new();
            de.set_max_chunk_size(chunk_size).unwrap();
            let msg = de.get_next_message(&b).unwrap().expect("one whole message");
            prop_assert_eq!(msg.type_id, kind.type_id());
            prop_assert_eq!(msg.timestamp.value, dts as u32);
            prop_assert_eq!(msg.message_stream_id, 1);
            prop_assert_eq!(&msg.data[..], &f.payload[..]);
        }
    }
}
