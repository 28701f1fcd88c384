//! Segmenter scenarios on synthetic hub frames, and a property test over
//! any frame sequence the hub can hand out.

use bytes::Bytes;
use proptest::prelude::*;

use std::sync::Arc;

use super::*;
use crate::hls::playlist::{self, ChannelPlaylist};
use crate::media::Frame;

const SPS: &str = "6764001facd9405005bb0110000003001000000303c0f1831960";
const PPS: &str = "68ebe3cb22c0";
const START: u64 = 1_000;
const WALL: u64 = 1_764_000_000_000;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn avc_header() -> Vec<u8> {
    let (sps, pps) = (hex(SPS), hex(PPS));
    let mut r = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0x00, 0x1F, 0xFF, 0xE1];
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(&sps);
    r.push(1);
    r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    r.extend_from_slice(&pps);
    r
}

fn frame(kind: FrameKind, dts: u64, epoch: u32, body: Vec<u8>) -> Frame {
    Frame::parse(kind, dts, epoch, Bytes::from(body)).expect("valid test frame")
}

fn video(dts: u64, key: bool, epoch: u32) -> Frame {
    let nal: &[u8] = if key { &[0x65, 0x88, 0x84, 0x00, 0x33] } else { &[0x41, 0x9A, 0x02] };
    let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    b.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    b.extend_from_slice(nal);
    frame(FrameKind::Video, dts, epoch, b)
}

fn audio(dts: u64, epoch: u32) -> Frame {
    frame(FrameKind::Audio, dts, epoch, vec![0xaf, 1, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c])
}

fn aac_header(epoch: u32) -> Frame {
    frame(FrameKind::Audio, 0, epoch, vec![0xaf, 0, 0x12, 0x10])
}

/// Publishes headers then `seconds` of 30 fps video with a keyframe every
/// `gop` frames and AAC every ~23 ms, returning the segments closed.
fn publish_av(s: &mut Segmenter, from_ms: u64, seconds: u64, gop: u64, epoch: u32) -> Vec<Segment> {
    let mut out = Vec::new();
    out.extend(s.handle_frame(&frame(FrameKind::Video, from_ms, epoch, avc_header()), WALL));
    out.extend(s.handle_frame(&aac_header(epoch), WALL));
    let frames = seconds * 30;
    let mut next_audio = from_ms;
    for i in 0..frames {
        let dts = from_ms + i * 1000 / 30;
        while next_audio <= dts {
            out.extend(s.handle_frame(&audio(next_audio, epoch), WALL + next_audio));
            next_audio += 23;
        }
        out.extend(s.handle_frame(&video(dts, i % gop == 0, epoch), WALL + dts));
    }
    out
}

fn assert_ts(seg: &Segment) {
    assert!(!seg.data.is_empty());
    assert_eq!(seg.data.len() % 188, 0);
    assert!(seg.data.chunks(188).all(|p| p[0] == 0x47));
}

#[test]
fn video_is_cut_at_the_first_keyframe_after_the_target() {
    let mut s = Segmenter::new(2000, 7);
    let segs = publish_av(&mut s, START, 10, 30, 0);
    // Keyframes every second, target 2 s: a cut every 2 s.
    assert_eq!(segs.len(), 4, "{segs:?}");
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg.sequence, 7 + i as u64);
        assert_eq!(seg.duration_ms, 2000);
        assert!(!seg.discontinuity);
        assert_ts(seg);
        assert_eq!(seg.params.codecs, ["avc1.64001f", "mp4a.40.2"]);
        assert_eq!(seg.params.resolution, Some((1280, 720)));
    }
    let last = s.finish().expect("open segment finished");
    assert_eq!(last.sequence, 11);
    assert!((1900..=2100).contains(&last.duration_ms), "{}", last.duration_ms);
}

#[test]
fn a_follower_cuts_where_its_leader_did_with_the_same_numbers() {
    let log = Arc::new(CutLog::default());
    let mut leader = Segmenter::new(2000, 500).with_log(Arc::clone(&log));
    let led = publish_av(&mut leader, START, 10, 30, 0);
    assert_eq!(led.iter().map(|s| s.sequence).collect::<Vec<_>>(), [500, 501, 502, 503]);
    // A rendition joins a second late, numbering on its own from much
    // later: it skips to the leader's next cut and takes its numbers.
    let mut follower = Segmenter::new(2000, 9_000).follow(log);
    let mut followed = publish_av(&mut follower, START + 1000, 9, 30, 0);
    assert!(follower.skipped.waiting > 0, "frames before the first matching cut are skipped");
    followed.extend(follower.finish());
    let pairs: Vec<(u64, u64)> = followed.iter().map(|s| (s.sequence, s.duration_ms)).collect();
    assert_eq!(&pairs[..3], [(501, 2000), (502, 2000), (503, 2000)]);
    for seg in &followed {
        assert_ts(seg);
    }
}

#[test]
fn a_follower_whose_keyframes_match_no_cut_cuts_on_its_own() {
    let log = Arc::new(CutLog::default());
    let mut leader = Segmenter::new(2000, 500).with_log(Arc::clone(&log));
    publish_av(&mut leader, START, 12, 30, 0);
    // Keyframes half a second off the leader's: nothing matches.
    let mut follower = Segmenter::new(2000, 9_000).follow(log);
    let segs = publish_av(&mut follower, START + 500, 11, 30, 0);
    assert!(segs.len() >= 3, "{segs:?}");
    assert_eq!(segs[0].sequence, 9_000, "its own numbers");
    // The first waits for twice the target, then the usual rule holds.
    assert_eq!(segs.iter().skip(1).map(|s| s.duration_ms).collect::<Vec<_>>()[..2], [2000, 2000]);
    assert!(segs.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
}

#[test]
fn a_long_gop_is_never_split() {
    let mut s = Segmenter::new(2000, 0);
    // Keyframes every 3 s: each segment is a whole GOP, 3 s.
    let segs = publish_av(&mut s, START, 10, 90, 0);
    assert_eq!(segs.iter().map(|s| s.duration_ms).collect::<Vec<_>>(), [3000, 3000, 3000]);
}

#[test]
fn audio_only_is_cut_on_time_and_program_date_time_follows_the_media() {
    let mut s = Segmenter::new(2000, 0);
    let mut segs = Vec::new();
    segs.extend(s.handle_frame(&aac_header(0), WALL));
    for i in 0..400u64 {
        segs.extend(s.handle_frame(&audio(START + i * 23, 0), WALL + i * 23 + 5));
    }
    assert!(segs.len() >= 4);
    for seg in &segs {
        assert!((2000..2023 + 1).contains(&seg.duration_ms), "{}", seg.duration_ms);
        assert_eq!(seg.params.codecs, ["mp4a.40.2"]);
        assert_ts(seg);
    }
    assert_eq!(segs[1].program_date_time_ms - segs[0].program_date_time_ms, segs[0].duration_ms);
}

#[test]
fn a_new_epoch_marks_exactly_one_discontinuity_and_numbers_keep_counting() {
    let mut s = Segmenter::new(2000, 100);
    let mut segs = publish_av(&mut s, START, 5, 30, 0);
    // Reconnect: the hub continues the timeline and resends the same headers.
    segs.extend(publish_av(&mut s, START + 5040, 6, 30, 1));
    segs.extend(s.finish());
    let marked: Vec<_> = segs.iter().filter(|s| s.discontinuity).map(|s| s.sequence).collect();
    assert_eq!(marked.len(), 1, "{segs:?}");
    let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The segment cut by the reconnect ends at the old publisher's last frame.
    let before = segs.iter().position(|s| s.discontinuity).unwrap() - 1;
    assert!(segs[before].duration_ms <= 1100, "{:?}", segs[before]);
}

#[test]
fn new_codec_parameters_mark_a_discontinuity_at_the_next_keyframe() {
    let mut s = Segmenter::new(2000, 0);
    let mut segs = publish_av(&mut s, START, 3, 30, 0);
    // Same epoch, different SPS (a resolution change).
    let mut changed = avc_header();
    changed[8] = 0x20;
    segs.extend(s.handle_frame(&frame(FrameKind::Video, START + 3000, 0, changed), WALL));
    segs.extend(s.handle_frame(&video(START + 3000, true, 0), WALL));
    segs.extend(s.finish());
    assert_eq!(segs.iter().filter(|s| s.discontinuity).count(), 1, "{segs:?}");
    assert!(segs.last().unwrap().discontinuity);
}

#[test]
fn a_gap_closes_the_segment_and_marks_the_next() {
    let mut s = Segmenter::new(2000, 0);
    let mut segs = publish_av(&mut s, START, 3, 30, 0);
    segs.extend(s.handle_gap());
    // Non-key frames after the gap are waited out.
    segs.extend(s.handle_frame(&video(START + 5000, false, 0), WALL));
    segs.extend(s.handle_frame(&video(START + 6000, true, 0), WALL));
    segs.extend(s.finish());
    assert_eq!(segs.iter().filter(|s| s.discontinuity).count(), 1);
    assert!(segs.last().unwrap().discontinuity);
}

#[test]
fn frames_before_headers_and_garbage_are_skipped_not_fatal() {
    let mut s = Segmenter::new(2000, 0);
    assert!(s.handle_frame(&video(0, true, 0), WALL).is_none());
    assert!(s.handle_frame(&audio(0, 0), WALL).is_none());
    assert!(s.handle_frame(&frame(FrameKind::Video, 0, 0, vec![0x17, 0, 0, 0, 0, 9, 9]), WALL).is_none());
    assert!(s.handle_frame(&frame(FrameKind::Video, 0, 0, vec![0x12, 1, 2]), WALL).is_none());
    assert!(s.handle_frame(&frame(FrameKind::Audio, 0, 0, vec![0x2f, 1, 2]), WALL).is_none());
    assert!(s.finish().is_none());
    assert!(s.skipped.malformed >= 3 && s.skipped.waiting >= 2, "{:?}", s.skipped);
}

#[test]
fn playlist_window_target_duration_and_discontinuity_sequence() {
    let mut s = Segmenter::new(2000, 50);
    let mut segs = publish_av(&mut s, START, 5, 30, 0);
    segs.extend(publish_av(&mut s, START + 5040, 21, 30, 1));
    let mut p = ChannelPlaylist::new("demo", 2000, 3, 2);
    assert!(p.media_playlist().is_none());
    for seg in segs {
        p.push(seg);
    }
    let text = String::from_utf8(p.media_playlist().unwrap().to_vec()).unwrap();
    let parsed = hls_m3u8::MediaPlaylist::try_from(text.as_str()).expect("parses back");
    assert_eq!(parsed.segments.num_elements(), 3);
    assert_eq!(parsed.target_duration.as_secs(), 2);
    // The discontinuity scrolled out of the window and is counted.
    assert_eq!(parsed.discontinuity_sequence, 1, "{text}");
    let first = parsed.media_sequence as u64;
    assert!(p.segment(first - 2).is_ok(), "kept for players behind");
    assert_eq!(p.segment(first - 3).unwrap_err(), playlist::SegmentLookup::Expired);
    assert_eq!(p.segment(first + 3).unwrap_err(), playlist::SegmentLookup::NotYet);
    p.end();
    let text = String::from_utf8(p.media_playlist().unwrap().to_vec()).unwrap();
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
    let master = String::from_utf8(p.master_playlist().unwrap().to_vec()).unwrap();
    let parsed = hls_m3u8::MasterPlaylist::try_from(master.as_str()).expect("master parses back");
    assert_eq!(parsed.variant_streams.len(), 1);
    assert!(master.contains("CODECS=\"avc1.64001f,mp4a.40.2\""), "{master}");
    assert!(master.contains("RESOLUTION=1280x720"), "{master}");
}

#[test]
fn target_duration_never_understates_a_long_segment() {
    let mut s = Segmenter::new(2000, 0);
    let segs = publish_av(&mut s, START, 12, 150, 0);
    let mut p = ChannelPlaylist::new("demo", 2000, 6, 0);
    for seg in segs {
        p.push(seg);
    }
    let text = String::from_utf8(p.media_playlist().unwrap().to_vec()).unwrap();
    let parsed = hls_m3u8::MediaPlaylist::try_from(text.as_str()).unwrap();
    assert_eq!(parsed.target_duration.as_secs(), 5, "{text}");
}

#[test]
fn a_segment_a_frame_longer_than_the_target_does_not_raise_it() {
    // 2.033 s segments (a 61-frame GOP at 30 fps) round to 2: the target
    // stays 2 s, as RFC 8216 allows, instead of jumping to 3 s for good.
    let mut s = Segmenter::new(2000, 0);
    let segs = publish_av(&mut s, START, 13, 61, 0);
    assert!(segs.iter().all(|s| (2000..2100).contains(&s.duration_ms)), "{segs:?}");
    let mut p = ChannelPlaylist::new("demo", 2000, 6, 0);
    for seg in segs {
        p.push(seg);
    }
    let text = String::from_utf8(p.media_playlist().unwrap().to_vec()).unwrap();
    let parsed = hls_m3u8::MediaPlaylist::try_from(text.as_str()).unwrap();
    assert_eq!(parsed.target_duration.as_secs(), 2, "{text}");
}

#[test]
fn program_date_time_is_iso8601_utc() {
    assert_eq!(playlist::iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(playlist::iso8601_ms(1_764_070_852_123), "2025-11-25T11:40:52.123Z");
    assert_eq!(playlist::iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

/// A frame the hub can produce: any kind, codec byte and body, timestamps
/// monotonic per track, epochs that only grow.
fn hub_frames() -> impl Strategy<Value = Vec<Frame>> {
    let step = (
        0u8..6,
        0u64..400,
        -100i32..400,
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::bool::weighted(0.03),
    );
    proptest::collection::vec(step, 1..120).prop_map(|steps| {
        let (mut v, mut a, mut epoch) = (0u64, 0u64, 0u32);
        let mut out = Vec::new();
        for (what, dt, cts, key, mut body, bump) in steps {
            if bump {
                epoch += 1;
            }
            let (kind, dts) = match what {
                0 => (FrameKind::Metadata, v.max(a)),
                1 | 2 => {
                    v += dt;
                    // AVC: a header, a keyframe or an inter frame, any NALU bytes.
                    let mut b = vec![if key { 0x17 } else { 0x27 }, u8::from(what == 2), 0, 0, 0];
                    b[2..5].copy_from_slice(&cts.to_be_bytes()[1..]);
                    if what == 1 && key && body.len() < 3 {
                        b = avc_header();
                    } else {
                        b.append(&mut body);
                    }
                    out.extend(Frame::parse(FrameKind::Video, v, epoch, Bytes::from(b)).ok());
                    continue;
                }
                3 => {
                    a += dt;
                    let mut b = vec![0xaf, u8::from(!key)];
                    b.append(&mut body);
                    out.extend(Frame::parse(FrameKind::Audio, a, epoch, Bytes::from(b)).ok());
                    continue;
                }
                4 => (FrameKind::Audio, a),
                _ => (FrameKind::Video, v),
            };
            out.extend(Frame::parse(kind, dts, epoch, Bytes::from(body)).ok());
        }
        out
    })
}

proptest! {
    #[test]
    fn any_hub_frame_sequence_yields_only_whole_sync_aligned_packets(frames in hub_frames()) {
        let mut s = Segmenter::new(500, 0);
        let mut p = ChannelPlaylist::new("prop", 500, 3, 1);
        let mut segs = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if i % 37 == 36 {
                segs.extend(s.handle_gap());
            }
            segs.extend(s.handle_frame(f, WALL + f.dts));
        }
        segs.extend(s.finish());
        let mut last = None;
        for seg in segs {
            prop_assert_eq!(seg.data.len() % 188, 0);
            prop_assert!(seg.data.chunks(188).all(|p| p[0] == 0x47));
            prop_assert!(seg.duration_ms >= 1);
            if let Some(l) = last { prop_assert_eq!(seg.sequence, l + 1); }
            last = Some(seg.sequence);
            p.push(seg);
            let text = String::from_utf8(p.media_playlist().unwrap().to_vec()).unwrap();
            prop_assert!(hls_m3u8::MediaPlaylist::try_from(text.as_str()).is_ok(), "{}", text);
        }
    }
}
