//! [`Frame`]: one audio, video or script message, parsed once on ingest and
//! shared (behind an `Arc`) by every subscriber.

use std::sync::OnceLock;

use bytes::Bytes;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An FLV video tag body (codec id in the low nibble of byte 0).
    Video,
    /// An FLV audio tag body (sound format in the high nibble of byte 0).
    Audio,
    /// An AMF0 script body (`onMetaData`).
    Metadata,
}

impl FrameKind {
    /// The RTMP message type id / FLV tag type of this kind.
    pub fn type_id(self) -> u8 {
        match self {
            FrameKind::Audio => 8,
            FrameKind::Video => 9,
            FrameKind::Metadata => 18,
        }
    }
}

/// Why an ingest message could not become a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameParseError {
    /// The message body is empty; RTMP encoders send these as keep-alives.
    #[error("empty {kind:?} message")]
    Empty {
        /// Audio or video.
        kind: FrameKind,
    },
    /// An AVC video body shorter than its 5-byte header.
    #[error("truncated AVC video tag header ({len} bytes)")]
    TruncatedAvcHeader {
        /// Body length.
        len: usize,
    },
}

/// One media message, timestamps already mapped to the stream's 64-bit
/// monotonic timeline (milliseconds).
#[derive(Debug)]
pub struct Frame {
    /// Audio, video or metadata.
    pub kind: FrameKind,
    /// Decode timestamp, ms, on the stream's timeline.
    pub dts: u64,
    /// Composition offset, ms (pts = dts + cts); AVC only.
    pub cts: i32,
    /// A video frame a decoder can start from.
    pub keyframe: bool,
    /// An AVC decoder configuration or AAC AudioSpecificConfig.
    pub sequence_header: bool,
    /// Bumps each time the publisher's timeline restarts (reconnect within
    /// the grace period); packagers mark a discontinuity when it changes.
    pub epoch: u32,
    /// The FLV tag body: the bytes every output sends.
    pub payload: Bytes,
    rtmp_chunks: OnceLock<Bytes>,
    flv_tag: OnceLock<Bytes>,
}

/// Codec facts read from the first bytes of an FLV tag body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagInfo {
    /// Video keyframe (frame type 1).
    pub keyframe: bool,
    /// AVC/AAC sequence header.
    pub sequence_header: bool,
    /// AVC composition time offset.
    pub cts: i32,
}

/// FLV video codec id for AVC/H.264.
pub const VIDEO_CODEC_AVC: u8 = 7;
/// FLV sound format for AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;

/// Reads keyframe / sequence-header / composition-time facts from an FLV
/// tag body. Codecs other than AVC and AAC pass through as opaque frames.
pub fn inspect_tag(kind: FrameKind, body: &[u8]) -> Result<TagInfo, FrameParseError> {
    let mut info = TagInfo { keyframe: false, sequence_header: false, cts: 0 };
    match kind {
        FrameKind::Metadata => Ok(info),
        FrameKind::Video => {
            let first = *body.first().ok_or(FrameParseError::Empty { kind })?;
            let frame_type = first >> 4;
            let codec = first & 0x0f;
            // Frame type 5 is a video info/command frame, never decodable.
            info.keyframe = frame_type == 1;
            if codec == VIDEO_CODEC_AVC {
                if body.len() < 5 {
                    return Err(FrameParseError::TruncatedAvcHeader { len: body.len() });
                }
                info.sequence_header = body[1] == 0;
                // 24-bit signed composition offset.
                let raw = ((body[2] as i32) << 16) | ((body[3] as i32) << 8) | body[4] as i32;
                info.cts = (raw << 8) >> 8;
                if info.sequence_header {
                    info.keyframe = false;
                }
            }
            Ok(info)
        }
        FrameKind::Audio => {
            let first = *body.first().ok_or(FrameParseError::Empty { kind })?;
            if first >> 4 == SOUND_FORMAT_AAC {
                info.sequence_header = body.get(1) == Some(&0);
            }
            Ok(info)
        }
    }
}

impl Frame {
    /// Builds a frame from an ingest message body.
    pub fn parse(kind: FrameKind, dts: u64, epoch: u32, payload: Bytes) -> Result<Frame, FrameParseError> {
        let info = inspect_tag(kind, &payload)?;
        Ok(Frame::new(kind, dts, info, epoch, payload))
    }

    /// Builds a frame from already-inspected parts.
    pub fn new(kind: FrameKind, dts: u64, info: TagInfo, epoch: u32, payload: Bytes) -> Frame {
        Frame {
            kind,
            dts,
            cts: info.cts,
            keyframe: info.keyframe,
            sequence_header: info.sequence_header,
            epoch,
            payload,
            rtmp_chunks: OnceLock::new(),
            flv_tag: OnceLock::new(),
        }
    }

    /// Whether this is a video frame.
    pub fn is_video(&self) -> bool {
        self.kind == FrameKind::Video
    }

    /// The frame as RTMP chunks for the common play session (our chunk size,
    /// message stream id 1), serialized once and shared by every such viewer.
    pub fn rtmp_chunks(&self, chunk_size: usize) -> Bytes {
        self.rtmp_chunks
            .get_or_init(|| crate::rtmp::chunks::encode_frame(self, 1, chunk_size))
            .clone()
    }

    /// The frame as a complete FLV tag (header, body, previous-tag-size),
    /// built once and shared by every HTTP-FLV viewer.
    pub fn flv_tag(&self) -> Bytes {
        self.flv_tag.get_or_init(|| super::flv::encode_tag(self)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_keyframe_with_negative_composition_offset_is_read() {
        let body = [0x17, 1, 0xff, 0xff, 0xf6, 0, 0, 0, 1, 0x65];
        let info = inspect_tag(FrameKind::Video, &body).unwrap();
        assert!(info.keyframe);
        assert!(!info.sequence_header);
        assert_eq!(info.cts, -10);
    }

    #[test]
    fn avc_sequence_header_is_not_a_keyframe() {
        let body = [0x17, 0, 0, 0, 0, 1, 0x64];
        let info = inspect_tag(FrameKind::Video, &body).unwrap();
        assert!(info.sequence_header);
        assert!(!info.keyframe);
    }

    #[test]
    fn aac_sequence_header_and_raw_frame_are_told_apart() {
        assert!(inspect_tag(FrameKind::Audio, &[0xaf, 0, 0x12, 0x10]).unwrap().sequence_header);
        assert!(!inspect_tag(FrameKind::Audio, &[0xaf, 1, 0x21]).unwrap().sequence_header);
    }

    #[test]
    fn truncated_and_empty_bodies_are_errors_not_panics() {
        assert!(inspect_tag(FrameKind::Video, &[]).is_err());
        assert!(inspect_tag(FrameKind::Video, &[0x17, 1]).is_err());
        assert!(inspect_tag(FrameKind::Audio, &[]).is_err());
        // A non-AVC codec is opaque: one byte is enough.
        assert!(inspect_tag(FrameKind::Video, &[0x12]).unwrap().keyframe);
    }
}
