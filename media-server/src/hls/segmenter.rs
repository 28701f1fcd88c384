//! [`Segmenter`]: turns a channel's hub frames into finished MPEG-TS
//! segments. Sans-IO: frames and the wall clock go in, [`Segment`]s come out.
//!
//! Contract:
//! - With video, a segment always starts on a keyframe and is cut at the
//!   first keyframe once `target_ms` of media is in it, never inside a GOP.
//!   Audio-only streams are cut on time.
//! - A segment's duration is the distance between its first timestamp and
//!   the next segment's first timestamp (exact for keyframe cuts); the last
//!   segment before a break adds one frame interval.
//! - The segment that follows a break in the publisher's timeline (a new
//!   epoch: reconnect within the grace period), a gap (this subscriber was
//!   skipped forward) or new codec parameters carries `discontinuity`, and
//!   only such a segment.
//! - Malformed frames are skipped and counted, never a panic.
//! - A segmenter can record where its segments start in a [`CutLog`], and
//!   another can follow that log ([`Segmenter::follow`]): a transcoded
//!   rendition whose keyframes and timestamps are the source's is then cut
//!   at the same presentation times and numbered with the same media
//!   sequence numbers, so players switch renditions at any boundary. A
//!   follower that finds no matching cut (the renditions' keyframes are not
//!   the source's) falls back to cutting on its own after twice the target.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::aac::AacConfig;
use super::avc::{AvcDecoderConfig, SpsInfo};
use super::ts::{TsConfig, TsMuxer, TsSample, TsTrack};
use crate::media::frame::{SOUND_FORMAT_AAC, VIDEO_CODEC_AVC};
use crate::media::{Frame, FrameKind};

/// One finished segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number (and file name `{sequence}.ts`).
    pub sequence: u64,
    /// Media duration, ms.
    pub duration_ms: u64,
    /// Video frames per second over the segment, when it has video.
    pub frame_rate: Option<f64>,
    /// A discontinuity precedes this segment.
    pub discontinuity: bool,
    /// Wall-clock time of its first frame, ms since the Unix epoch.
    pub program_date_time_ms: u64,
    /// The codecs and picture of this segment's program.
    pub params: StreamParams,
    /// The transport stream.
    pub data: Bytes,
}

/// Codec facts for the master playlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamParams {
    /// RFC 6381 codec strings (`avc1.64001f`, `mp4a.40.2`).
    pub codecs: Vec<String>,
    /// Width x height, when there is video.
    pub resolution: Option<(u32, u32)>,
}

/// Where one segment of a leader started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Presentation time of its first (key)frame, ms on the stream timeline.
    pub pts: u64,
    /// Its media sequence number.
    pub sequence: u64,
}

/// The recent segment starts of one channel, shared with its followers
/// (its transcoded renditions). Bounded; written once per segment.
#[derive(Debug, Default)]
pub struct CutLog {
    cuts: Mutex<VecDeque<Cut>>,
}

/// Cuts a [`CutLog`] keeps: far more than a follower can lag behind.
const CUT_LOG_LEN: usize = 64;

/// How far (ms) a follower's keyframe may be from a leader's cut and still
/// match it: under half a frame at 60 fps. Timestamps copied by ffmpeg are
/// equal to the millisecond.
pub const CUT_MATCH_TOLERANCE_MS: u64 = 8;

impl CutLog {
    /// Records a segment start.
    pub fn record(&self, cut: Cut) {
        let mut cuts = self.cuts.lock();
        if cuts.len() == CUT_LOG_LEN {
            cuts.pop_front();
        }
        cuts.push_back(cut);
    }

    /// The sequence number of the cut at `pts` (within the tolerance).
    pub fn find(&self, pts: u64) -> Option<u64> {
        let cuts = self.cuts.lock();
        cuts.iter().rev().find(|c| c.pts.abs_diff(pts) <= CUT_MATCH_TOLERANCE_MS).map(|c| c.sequence)
    }
}

#[derive(Debug)]
struct OpenSegment {
    sequence: u64,
    buf: BytesMut,
    start_dts: u64,
    last_dts: u64,
    frame_interval_ms: u64,
    video_frames: u32,
    discontinuity: bool,
    program_date_time_ms: u64,
}

/// Frames skipped because they could not be muxed, by cause.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SkipCounts {
    /// Unsupported codec or malformed payload.
    pub malformed: u64,
    /// Before the first keyframe or codec config.
    pub waiting: u64,
}

/// The per-channel segmenter state machine.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    next_sequence: u64,
    avc: Option<(Bytes, AvcDecoderConfig, Option<SpsInfo>)>,
    aac: Option<(Bytes, AacConfig)>,
    muxer: Option<TsMuxer>,
    open: Option<OpenSegment>,
    epoch: Option<u32>,
    /// The next segment starts after a break.
    pending_discontinuity: bool,
    /// Codec parameters changed since the open segment started.
    params_changed: bool,
    /// Wall clock of dts 0 on this stretch of timeline (re-anchored at breaks).
    clock_anchor: Option<(u64, u64)>,
    au: BytesMut,
    /// Where this segmenter records its segment starts.
    log: Option<Arc<CutLog>>,
    /// The leader whose cuts this segmenter follows.
    leader: Option<Arc<CutLog>>,
    /// A follower has handed out a sequence number (its own or the leader's).
    numbered: bool,
    /// A follower waiting for a matching cut: the first keyframe it saw.
    waiting_since: Option<u64>,
    /// A follower that found no matching cut for a while cuts on its own.
    on_own: bool,
    /// Frames that were not muxed.
    pub skipped: SkipCounts,
}

impl Segmenter {
    /// A segmenter cutting at `target_ms`, numbering from `first_sequence`.
    pub fn new(target_ms: u64, first_sequence: u64) -> Segmenter {
        Segmenter {
            target_ms: target_ms.max(1),
            next_sequence: first_sequence,
            avc: None,
            aac: None,
            muxer: None,
            open: None,
            epoch: None,
            pending_discontinuity: false,
            params_changed: false,
            clock_anchor: None,
            au: BytesMut::new(),
            log: None,
            leader: None,
            numbered: false,
            waiting_since: None,
            on_own: false,
            skipped: SkipCounts::default(),
        }
    }

    /// Records every segment start in `log` (for followers).
    pub fn with_log(mut self, log: Arc<CutLog>) -> Segmenter {
        self.log = Some(log);
        self
    }

    /// Cuts where `leader` cut, with its sequence numbers (see the module
    /// docs); `first_sequence` only numbers segments cut on our own.
    pub fn follow(mut self, leader: Arc<CutLog>) -> Segmenter {
        self.leader = Some(leader);
        self
    }

    /// The sequence number the next finished segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.open.as_ref().map_or(self.next_sequence, |o| o.sequence)
    }

    /// The subscription skipped frames (it lagged): the current segment ends
    /// here and the next one is marked as a discontinuity.
    pub fn handle_gap(&mut self) -> Option<Segment> {
        self.pending_discontinuity = true;
        self.close(None)
    }

    /// The channel ended: the open segment, if any, is finished.
    pub fn finish(&mut self) -> Option<Segment> {
        self.close(None)
    }

    /// Feeds one frame; returns a segment when this frame closed one.
    /// `now_ms` is the wall clock (ms since the Unix epoch) when it arrived.
    pub fn handle_frame(&mut self, frame: &Frame, now_ms: u64) -> Option<Segment> {
        let mut closed = None;
        if self.epoch.is_some_and(|e| e != frame.epoch) {
            // The publisher came back: its timeline and encoder restart.
            self.pending_discontinuity = true;
            closed = self.close(None);
        }
        self.epoch = Some(frame.epoch);
        let got = match frame.kind {
            FrameKind::Metadata => None,
            FrameKind::Video => self.handle_video(frame, now_ms),
            FrameKind::Audio => self.handle_audio(frame, now_ms),
        };
        // At most one of the two is set: a break closes the open segment,
        // after which nothing is open for the frame to close again.
        closed.or(got)
    }

    fn handle_video(&mut self, frame: &Frame, now_ms: u64) -> Option<Segment> {
        let p = &frame.payload;
        if p.first().map(|b| b & 0x0f) != Some(VIDEO_CODEC_AVC) || p.len() < 5 {
            self.skipped.malformed += 1;
            return None;
        }
        let body = p.slice(5..);
        if frame.sequence_header {
            if self.avc.as_ref().is_some_and(|(raw, _, _)| *raw == body) {
                return None;
            }
            match AvcDecoderConfig::parse(&body) {
                Ok(cfg) => {
                    let sps = cfg.sps_info().ok();
                    self.avc = Some((body, cfg, sps));
                    self.params_changed = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unusable AVC sequence header");
                    self.skipped.malformed += 1;
                }
            }
            return None;
        }
        if p[1] != 1 {
            // End of sequence and other non-NALU packets.
            return None;
        }
        let Some((_, avc, _)) = &self.avc else {
            self.skipped.waiting += 1;
            return None;
        };
        self.au.clear();
        if let Err(e) = avc.to_annex_b(&body, frame.keyframe, &mut self.au) {
            tracing::debug!(error = %e, "malformed AVC frame skipped");
            self.skipped.malformed += 1;
            return None;
        }
        let mut closed = None;
        if frame.keyframe {
            let pts = frame.dts.saturating_add_signed(i64::from(frame.cts));
            if let Some(sequence) = self.cut_here(frame.dts, pts) {
                closed = self.close(Some(frame.dts));
                self.open_segment(frame.dts, pts, sequence, now_ms);
            }
        }
        let au = std::mem::take(&mut self.au);
        self.write(TsTrack::Video, frame, &au);
        self.au = au;
        closed
    }

    fn handle_audio(&mut self, frame: &Frame, now_ms: u64) -> Option<Segment> {
        let p = &frame.payload;
        if p.first().map(|b| b >> 4) != Some(SOUND_FORMAT_AAC) || p.len() < 2 {
            self.skipped.malformed += 1;
            return None;
        }
        let body = p.slice(2..);
        if frame.sequence_header {
            if self.aac.as_ref().is_some_and(|(raw, _)| *raw == body) {
                return None;
            }
            match AacConfig::parse(&body) {
                Ok(cfg) => {
                    self.aac = Some((body, cfg));
                    self.params_changed = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unusable AAC sequence header");
                    self.skipped.malformed += 1;
                }
            }
            return None;
        }
        if self.aac.is_none() || body.is_empty() {
            self.skipped.waiting += 1;
            return None;
        }
        let mut closed = None;
        if self.avc.is_none() {
            // Audio only: cut on time.
            if let Some(sequence) = self.cut_here(frame.dts, frame.dts) {
                closed = self.close(Some(frame.dts));
                self.open_segment(frame.dts, frame.dts, sequence, now_ms);
            }
        }
        self.write(TsTrack::Audio, frame, &body);
        closed
    }

    /// Whether a frame that may start a segment does, and with which
    /// sequence number.
    fn cut_here(&mut self, dts: u64, pts: u64) -> Option<u64> {
        let age = self.open.as_ref().map(|o| dts.saturating_sub(o.start_dts));
        let forced = self.params_changed || self.pending_discontinuity;
        let Some(leader) = &self.leader else {
            let due = age.is_none_or(|a| a >= self.target_ms);
            return (due || forced).then(|| self.take_sequence(None));
        };
        // Followers take the leader's number when it keeps ours increasing.
        if let Some(sequence) = leader.find(pts).filter(|s| !self.numbered || *s >= self.next_sequence) {
            self.waiting_since = None;
            self.on_own = false;
            return Some(self.take_sequence(Some(sequence)));
        }
        let lost = 2 * self.target_ms;
        let own = match age {
            // Open: cut on our own only once the leader's cuts stopped
            // matching (then by the usual rule until they match again).
            Some(a) => a >= lost || (self.on_own && a >= self.target_ms) || forced,
            // Nothing open: wait (frames are skipped) for a matching cut, but not for ever.
            None => dts.saturating_sub(*self.waiting_since.get_or_insert(dts)) >= lost,
        };
        own.then(|| {
            if !self.on_own {
                tracing::debug!(dts, "hls: no matching source cut; this rendition cuts on its own");
            }
            self.waiting_since = None;
            self.on_own = true;
            self.take_sequence(None)
        })
    }

    fn take_sequence(&mut self, leader: Option<u64>) -> u64 {
        let sequence = leader.unwrap_or(self.next_sequence);
        self.next_sequence = sequence + 1;
        self.numbered = true;
        sequence
    }

    fn open_segment(&mut self, dts: u64, pts: u64, sequence: u64, now_ms: u64) {
        if let Some(log) = &self.log {
            log.record(Cut { pts, sequence });
        }
        let config = TsConfig {
            has_video: self.avc.is_some(),
            has_audio: self.aac.is_some(),
            aac: self.aac.as_ref().map(|(_, c)| *c),
        };
        let discontinuity = self.pending_discontinuity || (self.params_changed && self.muxer.is_some());
        if self.muxer.as_ref().is_none_or(|m| *m.config() != config) {
            self.muxer = Some(TsMuxer::new(config));
        }
        if discontinuity || self.clock_anchor.is_none() {
            self.clock_anchor = Some((dts, now_ms));
        }
        let pdt = self.clock_anchor.map_or(now_ms, |(d, w)| w + dts.saturating_sub(d));
        let mut buf = BytesMut::with_capacity(256 * 1024);
        if let Some(m) = self.muxer.as_mut() {
            m.start_segment(&mut buf);
        }
        self.pending_discontinuity = false;
        self.params_changed = false;
        self.open = Some(OpenSegment {
            sequence,
            buf,
            start_dts: dts,
            last_dts: dts,
            frame_interval_ms: 0,
            video_frames: 0,
            discontinuity,
            program_date_time_ms: pdt,
        });
    }

    fn write(&mut self, track: TsTrack, frame: &Frame, data: &[u8]) {
        // Frames before the first segment opens (audio ahead of the first
        // keyframe) cannot be decoded from the segment start.
        let (Some(open), Some(muxer)) = (self.open.as_mut(), self.muxer.as_mut()) else {
            self.skipped.waiting += 1;
            return;
        };
        let sample = TsSample { track, dts_ms: frame.dts, cts_ms: frame.cts, keyframe: frame.keyframe, data };
        match muxer.write_sample(&sample, &mut open.buf) {
            Ok(()) => {
                if track == TsTrack::Video {
                    open.video_frames += 1;
                }
                let primary = track == TsTrack::Video || !muxer.config().has_video;
                if primary && frame.dts > open.last_dts {
                    open.frame_interval_ms = frame.dts - open.last_dts;
                    open.last_dts = frame.dts;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "frame not muxed");
                self.skipped.malformed += 1;
            }
        }
    }

    /// Closes the open segment; `next_start` is the first timestamp of the
    /// segment that follows it without a break.
    fn close(&mut self, next_start: Option<u64>) -> Option<Segment> {
        let open = self.open.take()?;
        let end = match next_start {
            Some(t) if t > open.start_dts => t,
            _ => open.last_dts + open.frame_interval_ms.max(1),
        };
        let params = self.params();
        let duration_ms = end.saturating_sub(open.start_dts).max(1);
        // Frames per second measured over the segment, two decimals as
        // FRAME-RATE is written.
        let frame_rate = (open.video_frames > 1)
            .then(|| (f64::from(open.video_frames) * 100_000.0 / duration_ms as f64).round() / 100.0);
        Some(Segment {
            sequence: open.sequence,
            duration_ms,
            frame_rate,
            discontinuity: open.discontinuity,
            program_date_time_ms: open.program_date_time_ms,
            params,
            data: open.buf.freeze(),
        })
    }

    /// The codecs and picture size of the current parameters.
    pub fn params(&self) -> StreamParams {
        let mut p = StreamParams::default();
        if let Some((_, avc, sps)) = &self.avc {
            match sps {
                Some(sps) => {
                    p.codecs.push(sps.codecs());
                    p.resolution = Some((sps.width, sps.height));
                }
                None => p.codecs.push(format!(
                    "avc1.{:02x}{:02x}{:02x}",
                    avc.profile_indication, avc.profile_compatibility, avc.level_indication
                )),
            }
        }
        if let Some((_, aac)) = &self.aac {
            p.codecs.push(aac.codecs());
        }
        p
    }
}

#[cfg(test)]
#[path = "segmenter_tests.rs"]
mod tests;
