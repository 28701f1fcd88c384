//! What one viewer saw: the measuring half of a player, independent of the
//! protocol that delivered the frames.
//!
//! Contract: a player calls [`ViewerProbe::handle_video`] /
//! [`ViewerProbe::handle_audio`] with each tag body (or its first bytes) and
//! the receive time, in microseconds on the same clock the publisher stamps
//! with. Startup is connect start to the first stamped video frame.
//! Frames count once the first keyframe arrived; latency counts only live
//! frames, those sent after the viewer's first frame arrived, so a server's
//! GOP-cache burst speeds up startup without inflating latency. Sans-IO.

use crate::stamp::{Stamp, AUDIO_STAMP_OFFSET, VIDEO_STAMP_OFFSET};

/// Per-viewer measurements, merged by the scenario at the end.
#[derive(Debug, Clone, Default)]
pub(crate) struct ViewerProbe {
    /// When the viewer started connecting.
    pub(crate) connect_start_us: u64,
    /// The server accepted the play request (or answered with a stream).
    pub(crate) playing: bool,
    /// When the first stamped video frame arrived.
    pub(crate) first_video_us: Option<u64>,
    /// Sequence number of the first keyframe received.
    pub(crate) first_key_seq: Option<u32>,
    /// Highest video sequence number received.
    pub(crate) last_video_seq: Option<u32>,
    /// Video frames received from the first keyframe on, in order.
    pub(crate) video_frames: u64,
    /// Video frames that went backwards or repeated (not counted above).
    pub(crate) video_disordered: u64,
    /// Stamped audio frames received.
    pub(crate) audio_frames: u64,
    /// Live frames' publish-to-receive latency, microseconds.
    pub(crate) latencies_us: Vec<u32>,
    /// Bytes read from the socket.
    pub(crate) bytes: u64,
    /// `(sequence, arrival µs)` of every in-order video frame, when asked
    /// for (matching frames across viewers).
    pub(crate) video_arrivals: Option<Vec<(u32, u64)>>,
    /// Why the viewer stopped early, if it did.
    pub(crate) error: Option<String>,
}

impl ViewerProbe {
    pub(crate) fn new(connect_start_us: u64) -> Self {
        Self {
            connect_start_us,
            ..Self::default()
        }
    }

    /// A video tag body arrived at `now_us`.
    pub(crate) fn handle_video(&mut self, body: &[u8], now_us: u64) {
        // Only coded frames (AVCPacketType 1) carry a stamp.
        if body.len() < 2 || body[1] != 1 {
            return;
        }
        let Some(stamp) = Stamp::decode_at(body, VIDEO_STAMP_OFFSET) else {
            return;
        };
        let keyframe = body[0] >> 4 == 1;
        if self.first_video_us.is_none() {
            self.first_video_us = Some(now_us);
        }
        if self.first_key_seq.is_none() {
            if !keyframe {
                return;
            }
            self.first_key_seq = Some(stamp.seq);
        }
        match self.last_video_seq {
            Some(last) if stamp.seq <= last => {
                self.video_disordered += 1;
                return;
            }
            _ => self.last_video_seq = Some(stamp.seq),
        }
        self.video_frames += 1;
        if let Some(arrivals) = &mut self.video_arrivals {
            arrivals.push((stamp.seq, now_us));
        }
        self.record_latency(stamp, now_us);
    }

    /// An audio tag body arrived at `now_us`.
    pub(crate) fn handle_audio(&mut self, body: &[u8], now_us: u64) {
        if body.len() < 2 || body[1] != 1 {
            return;
        }
        let Some(stamp) = Stamp::decode_at(body, AUDIO_STAMP_OFFSET) else {
            return;
        };
        self.audio_frames += 1;
        if self.first_video_us.is_some() {
            self.record_latency(stamp, now_us);
        }
    }

    fn record_latency(&mut self, stamp: Stamp, now_us: u64) {
        let live_from = self.first_video_us.unwrap_or(u64::MAX);
        if stamp.send_us >= live_from {
            let latency = now_us.saturating_sub(stamp.send_us);
            self.latencies_us
                .push(latency.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Startup time in microseconds, once a video frame arrived.
    pub(crate) fn startup_us(&self) -> Option<u64> {
        self.first_video_us
            .map(|t| t.saturating_sub(self.connect_start_us))
    }

    /// Video frames this viewer should have had, given that the publisher
    /// sent `video_sent` frames (sequence numbers `0..video_sent`).
    pub(crate) fn video_expected(&self, video_sent: u32) -> u64 {
        self.first_key_seq
            .map_or(0, |first| u64::from(video_sent.saturating_sub(first)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{FrameFactory, StreamShape};

    fn factory() -> FrameFactory {
        FrameFactory::new(StreamShape::new(1000, 30, 4).expect("valid shape"))
    }

    #[test]
    fn counting_starts_at_the_first_keyframe() {
        let f = factory();
        let mut probe = ViewerProbe::new(1_000);
        // Joined mid-GOP: frames 2 and 3 are deltas, 4 is the next keyframe.
        probe.handle_video(&f.video_frame(2, 5_000), 5_500);
        probe.handle_video(&f.video_frame(3, 6_000), 6_400);
        for seq in 4..10 {
            probe.handle_video(&f.video_frame(seq, 10_000 + u64::from(seq)), 12_000);
        }
        assert_eq!(probe.startup_us(), Some(4_500));
        assert_eq!(probe.first_key_seq, Some(4));
        assert_eq!(probe.video_frames, 6);
        assert_eq!(probe.video_expected(10), 6);
        assert_eq!(probe.video_expected(12), 8, "two frames missing at the end");
    }

    #[test]
    fn repeated_frames_are_counted_apart() {
        let f = factory();
        let mut probe = ViewerProbe::new(0);
        probe.handle_video(&f.video_frame(0, 10), 20);
        probe.handle_video(&f.video_frame(1, 11), 21);
        probe.handle_video(&f.video_frame(1, 11), 22);
        assert_eq!(probe.video_frames, 2);
        assert_eq!(probe.video_disordered, 1);
    }

    #[test]
    fn latency_counts_only_frames_sent_after_the_viewer_started() {
        let f = factory();
        let mut probe = ViewerProbe::new(0);
        // A GOP-cache burst: old frames arrive at once.
        probe.handle_video(&f.video_frame(0, 1_000), 50_000);
        probe.handle_video(&f.video_frame(1, 34_000), 50_100);
        probe.handle_audio(&f.audio_frame(0, 20_000), 50_150);
        // Then live frames.
        probe.handle_video(&f.video_frame(2, 60_000), 63_000);
        probe.handle_audio(&f.audio_frame(1, 61_000), 62_000);
        assert_eq!(probe.latencies_us, vec![3_000, 1_000]);
        assert_eq!(probe.audio_frames, 2);
    }

    #[test]
    fn sequence_headers_and_foreign_frames_are_ignored() {
        let mut probe = ViewerProbe::new(0);
        probe.handle_video(&crate::media::avc_sequence_header(), 10);
        probe.handle_audio(&crate::media::aac_sequence_header(), 10);
        probe.handle_video(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x65, 1, 2, 3], 10);
        probe.handle_video(&[], 10);
        assert_eq!(probe.first_video_us, None);
        assert_eq!(probe.audio_frames, 0);
        assert_eq!(probe.video_expected(100), 0);
    }
}
