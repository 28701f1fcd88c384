//! The synthetic stream the publisher sends: H.264/AAC-shaped FLV tag bodies
//! with real sequence headers and stamped, sized payloads.
//!
//! Contract: tag bodies are what RTMP carries in video (type 9) and audio
//! (type 8) messages. Video frames are `0x17`/`0x27`, AVCPacketType 1, CTS 0,
//! then one AVCC length-prefixed NALU (IDR type 5 for keyframes, type 1
//! otherwise) whose payload starts with the [`Stamp`]. Audio frames are AAC
//! raw (`0xAF 0x01`) with the stamp first. Sizes follow the target bitrate,
//! keyframes [`KEYFRAME_WEIGHT`] times a delta frame. Sans-IO: times are
//! arguments.

use bytes::{BufMut, Bytes, BytesMut};

use crate::stamp::{Stamp, STAMP_LEN};

/// A keyframe is this many times the size of a delta frame, roughly what an
/// encoder at a 2 s GOP produces for talking-head content.
pub(crate) const KEYFRAME_WEIGHT: u64 = 8;

/// AAC-LC frames carry 1024 samples.
const AAC_SAMPLES_PER_FRAME: u64 = 1024;
/// Audio sample rate announced in the AudioSpecificConfig.
pub(crate) const AUDIO_SAMPLE_RATE: u64 = 44_100;
/// Audio bitrate taken out of the total, unless the total is tiny.
const AUDIO_KBPS: u64 = 128;

/// Smallest video body: tag header, NALU length, NALU header, stamp.
const MIN_VIDEO_BODY: usize = 5 + 4 + 1 + STAMP_LEN;
/// Smallest audio body: tag header and stamp.
const MIN_AUDIO_BODY: usize = 2 + STAMP_LEN;

/// AVCDecoderConfigurationRecord of a 1280x720 High@3.1 stream, as x264
/// writes it (SPS and PPS taken from a real encode).
const AVC_DECODER_CONFIG: [u8; 45] = [
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00,
    0x1a, // version, profile, compat, level, 4-byte NALU lengths, 1 SPS of 26 bytes
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, // SPS
    0x01, 0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, // 1 PPS of 4 bytes
    0xfd, 0xf8, 0xf8,
    0x00, // High profile extension: 4:2:0, 8-bit luma and chroma, no SPS ext
];

/// AudioSpecificConfig: AAC-LC, 44.1 kHz, stereo.
const AAC_AUDIO_SPECIFIC_CONFIG: [u8; 2] = [0x12, 0x10];

/// The shape of the stream: frame rates, GOP and frame sizes.
#[derive(Debug, Clone)]
pub(crate) struct StreamShape {
    fps: u32,
    gop_frames: u32,
    delta_frame_body: usize,
    keyframe_body: usize,
    audio_frame_body: usize,
    /// Audio bitrate in kb/s actually used.
    pub(crate) audio_kbps: u64,
}

impl StreamShape {
    /// Sizes frames so that video plus audio add up to `bitrate_kbps`.
    pub(crate) fn new(bitrate_kbps: u64, fps: u32, gop_frames: u32) -> Result<Self, String> {
        if fps == 0 || fps > 240 {
            return Err(format!("--fps must be 1..=240, got {fps}"));
        }
        if gop_frames == 0 {
            return Err("--gop-frames must be at least 1".to_string());
        }
        if bitrate_kbps < 16 {
            return Err(format!(
                "--bitrate-kbps must be at least 16, got {bitrate_kbps}"
            ));
        }
        let audio_kbps = AUDIO_KBPS.min(bitrate_kbps / 4);
        let video_kbps = bitrate_kbps - audio_kbps;
        let audio_frames_per_sec = AUDIO_SAMPLE_RATE as f64 / AAC_SAMPLES_PER_FRAME as f64;
        let audio_frame_body =
            ((audio_kbps as f64 * 125.0 / audio_frames_per_sec) as usize).max(MIN_AUDIO_BODY);
        // Bytes of one GOP, split in units: a keyframe is KEYFRAME_WEIGHT
        // units, every delta frame one.
        let gop_bytes = video_kbps * 125 * u64::from(gop_frames) / u64::from(fps);
        let (keyframe_body, delta_frame_body) = if gop_frames == 1 {
            (gop_bytes as usize, gop_bytes as usize)
        } else {
            let units = KEYFRAME_WEIGHT + u64::from(gop_frames) - 1;
            let unit = gop_bytes / units;
            ((unit * KEYFRAME_WEIGHT) as usize, unit as usize)
        };
        Ok(Self {
            fps,
            gop_frames,
            delta_frame_body: delta_frame_body.max(MIN_VIDEO_BODY),
            keyframe_body: keyframe_body.max(MIN_VIDEO_BODY),
            audio_frame_body,
            audio_kbps,
        })
    }

    /// Whether video frame `seq` starts a GOP.
    pub(crate) fn is_keyframe(&self, seq: u32) -> bool {
        seq.is_multiple_of(self.gop_frames)
    }

    /// Tag body length of video frame `seq`.
    pub(crate) fn video_body_len(&self, seq: u32) -> usize {
        if self.is_keyframe(seq) {
            self.keyframe_body
        } else {
            self.delta_frame_body
        }
    }

    /// Tag body length of every audio frame.
    pub(crate) fn audio_body_len(&self) -> usize {
        self.audio_frame_body
    }

    /// When video frame `seq` is due, in microseconds from the stream start.
    pub(crate) fn video_due_us(&self, seq: u32) -> u64 {
        u64::from(seq) * 1_000_000 / u64::from(self.fps)
    }

    /// When audio frame `seq` is due, in microseconds from the stream start.
    pub(crate) fn audio_due_us(&self, seq: u32) -> u64 {
        u64::from(seq) * AAC_SAMPLES_PER_FRAME * 1_000_000 / AUDIO_SAMPLE_RATE
    }

    /// Video frames per second.
    pub(crate) fn fps(&self) -> u32 {
        self.fps
    }

    /// Size of the largest body, for the filler buffer.
    fn max_body(&self) -> usize {
        self.keyframe_body
            .max(self.delta_frame_body)
            .max(self.audio_frame_body)
    }
}

/// The FLV video tag body announcing the AVC decoder configuration.
pub(crate) fn avc_sequence_header() -> Bytes {
    let mut body = BytesMut::with_capacity(5 + AVC_DECODER_CONFIG.len());
    body.put_slice(&[0x17, 0x00, 0x00, 0x00, 0x00]);
    body.put_slice(&AVC_DECODER_CONFIG);
    body.freeze()
}

/// The FLV audio tag body announcing the AAC AudioSpecificConfig.
pub(crate) fn aac_sequence_header() -> Bytes {
    let mut body = BytesMut::with_capacity(4);
    body.put_slice(&[0xAF, 0x00]);
    body.put_slice(&AAC_AUDIO_SPECIFIC_CONFIG);
    body.freeze()
}

/// Builds stamped frame bodies; holds the filler pattern so no frame pays
/// for generating it.
pub(crate) struct FrameFactory {
    shape: StreamShape,
    filler: Vec<u8>,
}

impl FrameFactory {
    pub(crate) fn new(shape: StreamShape) -> Self {
        // Non-zero pseudo-random bytes: no start-code lookalikes (00 00 01)
        // for a server that scans payloads, and nothing that compresses.
        let mut state: u32 = 0x9E37_79B9;
        let filler = (0..shape.max_body())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as u8) | 0x01
            })
            .collect();
        Self { shape, filler }
    }

    pub(crate) fn shape(&self) -> &StreamShape {
        &self.shape
    }

    /// The body of video frame `seq`, stamped with `send_us`.
    pub(crate) fn video_frame(&self, seq: u32, send_us: u64) -> Bytes {
        let keyframe = self.shape.is_keyframe(seq);
        let len = self.shape.video_body_len(seq);
        let nalu_len = (len - 9) as u32;
        let mut body = BytesMut::with_capacity(len);
        body.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0x00, 0x00, 0x00]);
        body.put_u32(nalu_len);
        // nal_ref_idc 3 with type 5 (IDR) or 1 (non-IDR slice).
        body.put_u8(if keyframe { 0x65 } else { 0x41 });
        let mut stamp = [0u8; STAMP_LEN];
        Stamp { seq, send_us }.encode_into(&mut stamp);
        body.put_slice(&stamp);
        body.put_slice(&self.filler[..len - body.len()]);
        body.freeze()
    }

    /// The body of audio frame `seq`, stamped with `send_us`.
    pub(crate) fn audio_frame(&self, seq: u32, send_us: u64) -> Bytes {
        let len = self.shape.audio_body_len();
        let mut body = BytesMut::with_capacity(len);
        body.put_slice(&[0xAF, 0x01]);
        let mut stamp = [0u8; STAMP_LEN];
        Stamp { seq, send_us }.encode_into(&mut stamp);
        body.put_slice(&stamp);
        body.put_slice(&self.filler[..len - body.len()]);
        body.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{AUDIO_STAMP_OFFSET, VIDEO_STAMP_OFFSET};

    #[test]
    fn frame_sizes_add_up_to_the_bitrate() {
        let shape = StreamShape::new(2500, 30, 60).expect("valid shape");
        let gop_bytes: usize = (0..60).map(|seq| shape.video_body_len(seq)).sum();
        let video_bps = gop_bytes as f64 * 8.0 / 2.0;
        let audio_bps = shape.audio_body_len() as f64 * 8.0 * 44_100.0 / 1024.0;
        let total_kbps = (video_bps + audio_bps) / 1000.0;
        assert!(
            (total_kbps - 2500.0).abs() < 25.0,
            "total {total_kbps} kb/s"
        );
        assert_eq!(shape.video_body_len(0), shape.video_body_len(1) * 8);
        assert!(shape.is_keyframe(60) && !shape.is_keyframe(59));
    }

    #[test]
    fn frames_carry_a_readable_stamp_and_a_consistent_nalu_length() {
        let factory = FrameFactory::new(StreamShape::new(2500, 30, 60).expect("valid shape"));
        let key = factory.video_frame(0, 1234);
        assert_eq!(key[0], 0x17);
        assert_eq!(key[9], 0x65);
        let nalu_len = u32::from_be_bytes([key[5], key[6], key[7], key[8]]) as usize;
        assert_eq!(nalu_len + 9, key.len());
        assert_eq!(
            Stamp::decode_at(&key, VIDEO_STAMP_OFFSET),
            Some(Stamp {
                seq: 0,
                send_us: 1234
            })
        );
        let delta = factory.video_frame(1, 5678);
        assert_eq!(delta[0], 0x27);
        assert_eq!(
            Stamp::decode_at(&delta, VIDEO_STAMP_OFFSET).map(|s| s.seq),
            Some(1)
        );
        let audio = factory.audio_frame(3, 99);
        assert_eq!(&audio[..2], &[0xAF, 0x01]);
        assert_eq!(
            Stamp::decode_at(&audio, AUDIO_STAMP_OFFSET),
            Some(Stamp {
                seq: 3,
                send_us: 99
            })
        );
    }

    #[test]
    fn sequence_headers_are_not_stamped() {
        assert_eq!(
            Stamp::decode_at(&avc_sequence_header(), VIDEO_STAMP_OFFSET),
            None
        );
        assert_eq!(avc_sequence_header()[1], 0x00);
        assert_eq!(&aac_sequence_header()[..], &[0xAF, 0x00, 0x12, 0x10]);
    }

    #[test]
    fn nonsense_shapes_are_refused() {
        assert!(StreamShape::new(2500, 0, 60).is_err());
        assert!(StreamShape::new(2500, 30, 0).is_err());
        assert!(StreamShape::new(1, 30, 60).is_err());
        // A tiny bitrate still yields frames big enough for a stamp.
        let tiny = StreamShape::new(16, 30, 60).expect("valid shape");
        assert!(tiny.video_body_len(1) >= MIN_VIDEO_BODY);
        assert!(tiny.audio_body_len() >= MIN_AUDIO_BODY);
    }

    #[test]
    fn schedules_follow_the_frame_rates() {
        let shape = StreamShape::new(2500, 30, 60).expect("valid shape");
        assert_eq!(shape.video_due_us(30), 1_000_000);
        assert_eq!(shape.audio_due_us(0), 0);
        assert_eq!(shape.audio_due_us(1), 23_219);
        assert_eq!(shape.audio_due_us(44_100), 1_024_000_000);
    }
}
