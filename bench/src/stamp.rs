//! The stamp every synthetic frame carries, so that a receiver in the same
//! process can tell which frame it got and when it was sent.
//!
//! Contract: the stamp is 16 bytes, `b"WSB1"`, the frame's sequence number
//! (u32, big endian, counted per track) and the send time in microseconds
//! since the run's monotonic origin (u64, big endian). It sits at a fixed
//! offset inside the FLV tag body (see [`VIDEO_STAMP_OFFSET`] and
//! [`AUDIO_STAMP_OFFSET`]), inside the NALU / raw AAC payload, so a server
//! that forwards payloads opaquely keeps it intact. Sans-IO: no clock here.

/// Marks a stamped payload; anything else at the offset is not ours.
pub(crate) const STAMP_MAGIC: [u8; 4] = *b"WSB1";

/// Bytes a stamp takes.
pub(crate) const STAMP_LEN: usize = 16;

/// Offset of the stamp in a video tag body: 5 bytes of FLV VideoTagHeader
/// (frame type/codec, AVCPacketType, composition time), 4 bytes of AVCC
/// NALU length, 1 byte of NALU header.
pub(crate) const VIDEO_STAMP_OFFSET: usize = 10;

/// Offset of the stamp in an audio tag body: 2 bytes of FLV AudioTagHeader
/// (format/rate/size/type, AACPacketType).
pub(crate) const AUDIO_STAMP_OFFSET: usize = 2;

/// Which frame this is and when it left the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Per-track sequence number, from 0.
    pub(crate) seq: u32,
    /// Send time in microseconds since the run's origin.
    pub(crate) send_us: u64,
}

impl Stamp {
    /// Writes the stamp into `out[..STAMP_LEN]`.
    ///
    /// Panics if `out` is shorter than [`STAMP_LEN`]; callers size their
    /// buffers from constants, never from peer input.
    pub(crate) fn encode_into(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&STAMP_MAGIC);
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.send_us.to_be_bytes());
    }

    /// Reads a stamp at `offset` of a tag body; `None` when the body is too
    /// short or carries no stamp (sequence headers, foreign streams).
    pub(crate) fn decode_at(body: &[u8], offset: usize) -> Option<Stamp> {
        let raw = body.get(offset..offset + STAMP_LEN)?;
        if raw[..4] != STAMP_MAGIC {
            return None;
        }
        let seq = u32::from_be_bytes(raw[4..8].try_into().ok()?);
        let send_us = u64::from_be_bytes(raw[8..16].try_into().ok()?);
        Some(Stamp { seq, send_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_at_any_offset() {
        let stamp = Stamp {
            seq: 0xDEAD_BEEF,
            send_us: 0x0102_0304_0506_0708,
        };
        let mut body = vec![0xAAu8; 40];
        stamp.encode_into(&mut body[VIDEO_STAMP_OFFSET..]);
        assert_eq!(Stamp::decode_at(&body, VIDEO_STAMP_OFFSET), Some(stamp));
        assert_eq!(Stamp::decode_at(&body, AUDIO_STAMP_OFFSET), None);
    }

    #[test]
    fn a_short_or_foreign_body_has_no_stamp() {
        assert_eq!(
            Stamp::decode_at(&[0x17, 0x01, 0, 0, 0], VIDEO_STAMP_OFFSET),
            None
        );
        let mut body = vec![0u8; 30];
        Stamp { seq: 1, send_us: 2 }.encode_into(&mut body[2..]);
        body[2] = b'X';
        assert_eq!(Stamp::decode_at(&body, 2), None);
        // Exactly long enough is enough.
        let mut exact = vec![0u8; AUDIO_STAMP_OFFSET + STAMP_LEN];
        Stamp { seq: 7, send_us: 9 }.encode_into(&mut exact[AUDIO_STAMP_OFFSET..]);
        assert_eq!(
            Stamp::decode_at(&exact, AUDIO_STAMP_OFFSET),
            Some(Stamp { seq: 7, send_us: 9 })
        );
    }
}
