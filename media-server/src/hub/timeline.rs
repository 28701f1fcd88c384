//! Maps a publisher's 32-bit RTMP timestamps onto the stream's 64-bit,
//! per-track monotonic timeline.
//!
//! RTMP timestamps are milliseconds modulo 2^32 (they wrap after 49.7 days)
//! and restart from wherever the encoder likes when it reconnects. Viewers
//! of a stream must see one timeline that never goes backwards, across wraps
//! and across a reconnect within the grace period.

/// Which track a timestamp belongs to; each is kept monotonic on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Video frames.
    Video = 0,
    /// Audio frames.
    Audio = 1,
    /// Script data.
    Data = 2,
}

/// Gap inserted between the last frame of a dropped publisher and the first
/// frame of its replacement, so the two never share a timestamp.
pub const RECONNECT_GAP_MS: u64 = 40;

/// A returning publisher whose clock goes on from where the stream was (at
/// least [`RECONNECT_GAP_MS`] past the newest timestamp, at most this much)
/// keeps its own timestamps instead of being rebased. An encoder that
/// restarts from zero is rebased; one that carries the source's timestamps
/// (a restarted transcoder worker) stays on them, so its renditions stay
/// aligned with the source.
pub const CONTINUE_WINDOW_MS: u64 = 60_000;

/// The timestamp mapper of one stream.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    last_raw: Option<u32>,
    last_ext: i64,
    offset: i64,
    rebase_on_next: bool,
    last_out: [Option<u64>; 3],
    newest: Option<u64>,
}

impl Timeline {
    /// A timeline whose first publisher keeps its own timestamps.
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// The next publisher (after a reconnect) starts just after the newest
    /// timestamp sent so far, unless its own clock already continues the
    /// stream (see [`CONTINUE_WINDOW_MS`]).
    pub fn restart(&mut self) {
        self.last_raw = None;
        self.rebase_on_next = self.newest.is_some();
    }

    /// The newest timestamp handed out, 0 before the first.
    pub fn current(&self) -> u64 {
        self.newest.unwrap_or(0)
    }

    /// Maps one raw timestamp.
    pub fn map(&mut self, track: Track, raw: u32) -> u64 {
        let ext = match self.last_raw {
            None => i64::from(raw),
            // The nearest unwrapped value: a small step either way, across
            // the 2^32 wrap too (audio and video interleave slightly out of order).
            Some(last) => self.last_ext + i64::from(raw.wrapping_sub(last) as i32),
        };
        if self.rebase_on_next {
            let start = self.newest.unwrap_or(0) + RECONNECT_GAP_MS;
            let as_is = ext + self.offset;
            let continues = as_is >= start as i64 && as_is <= (start + CONTINUE_WINDOW_MS) as i64;
            if !continues {
                self.offset = start as i64 - ext;
            }
            self.rebase_on_next = false;
        }
        self.last_raw = Some(raw);
        self.last_ext = ext;
        let mut out = (ext + self.offset).max(0) as u64;
        if let Some(prev) = self.last_out[track as usize] {
            out = out.max(prev);
        }
        self.last_out[track as usize] = Some(out);
        self.newest = Some(self.newest.map_or(out, |n| n.max(out)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_publisher_keeps_its_timestamps_past_the_extended_mark() {
        let mut t = Timeline::new();
        assert_eq!(t.map(Track::Video, 17_000_000), 17_000_000);
        assert_eq!(t.map(Track::Audio, 17_000_023), 17_000_023);
    }

    #[test]
    fn thirty_two_bit_wrap_keeps_counting() {
        let mut t = Timeline::new();
        assert_eq!(t.map(Track::Video, u32::MAX - 10), u64::from(u32::MAX) - 10);
        assert_eq!(t.map(Track::Video, 30), u64::from(u32::MAX) + 31);
    }

    #[test]
    fn each_track_never_goes_backwards() {
        let mut t = Timeline::new();
        assert_eq!(t.map(Track::Video, 1000), 1000);
        assert_eq!(t.map(Track::Video, 990), 1000);
        // Audio slightly behind video is its own track and keeps its value.
        assert_eq!(t.map(Track::Audio, 995), 995);
    }

    #[test]
    fn reconnect_continues_after_the_newest_timestamp() {
        let mut t = Timeline::new();
        t.map(Track::Video, 5000);
        t.map(Track::Audio, 5010);
        t.restart();
        assert_eq!(t.map(Track::Video, 0), 5010 + RECONNECT_GAP_MS);
        assert_eq!(t.map(Track::Audio, 21), 5010 + RECONNECT_GAP_MS + 21);
    }

    #[test]
    fn a_reconnect_whose_clock_goes_on_keeps_it() {
        let mut t = Timeline::new();
        t.map(Track::Video, 100_000);
        t.restart();
        // A restarted transcoder worker carries the source's timestamps on.
        assert_eq!(t.map(Track::Video, 103_000), 103_000);
        t.restart();
        // Too close (would collide) or too far ahead: rebased as usual.
        assert_eq!(t.map(Track::Video, 103_010), 103_000 + RECONNECT_GAP_MS);
        t.restart();
        let newest = 103_000 + RECONNECT_GAP_MS;
        assert_eq!(t.map(Track::Video, 10_000_000), newest + RECONNECT_GAP_MS);
    }

    proptest! {
        #[test]
        fn output_is_monotonic_per_track_for_any_input(
            steps in proptest::collection::vec((0u8..2, any::<u32>(), any::<bool>()), 1..200)
        ) {
            let mut t = Timeline::new();
            let mut last = [0u64; 2];
            for (track, raw, restart) in steps {
                if restart { t.restart(); }
                let tr = if track == 0 { Track::Video } else { Track::Audio };
                let out = t.map(tr, raw);
                prop_assert!(out >= last[track as usize]);
                last[track as usize] = out;
            }
        }
    }
}
