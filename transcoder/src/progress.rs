//! Sans-IO pieces of worker supervision: the `-progress` parser, the
//! bounded stderr ring, and the real-time tracker that decides when a worker
//! is too slow. No clock and no IO: times come in as milliseconds.

use std::collections::VecDeque;

/// One `-progress` report (a block of `key=value` lines ending in
/// `progress=continue` or `progress=end`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressReport {
    /// Frames encoded so far (of the first output).
    pub frame: u64,
    /// Encoding frame rate.
    pub fps: f64,
    /// ffmpeg's own speed: media time over wall time since it started
    /// (includes start-up, so a live worker reads slightly under 1.0).
    pub speed: f64,
    /// Media time written so far, in microseconds.
    pub out_time_us: u64,
    /// Frames dropped to keep up.
    pub drop_frames: u64,
    /// True on the last report (`progress=end`).
    pub end: bool,
}

/// Accumulates `-progress` lines into [`ProgressReport`]s.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: ProgressReport,
}

impl ProgressParser {
    /// Feeds one line (without newline); returns a report when the line
    /// closes a block. Unknown keys and malformed values are ignored.
    pub fn handle_line(&mut self, line: &str) -> Option<ProgressReport> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "frame" => self.current.frame = value.parse().unwrap_or(self.current.frame),
            "fps" => self.current.fps = parse_finite(value).unwrap_or(self.current.fps),
            "speed" => {
                // "1.02x", or "N/A" before the first frame.
                self.current.speed = value.strip_suffix('x').and_then(parse_finite).unwrap_or(0.0);
            }
            // out_time_ms is microseconds too (an old ffmpeg misnomer); prefer out_time_us.
            "out_time_us" | "out_time_ms" => {
                if let Ok(us) = value.parse::<i64>() {
                    self.current.out_time_us = u64::try_from(us).unwrap_or(0);
                }
            }
            "out_time" if self.current.out_time_us == 0 => {
                if let Some(s) = ffmpeg_sidecar::log_parser::parse_time_str(value).filter(|s| s.is_finite() && *s >= 0.0) {
                    self.current.out_time_us = (s * 1e6) as u64;
                }
            }
            "drop_frames" => self.current.drop_frames = value.parse().unwrap_or(self.current.drop_frames),
            "progress" => {
                self.current.end = value == "end";
                let report = self.current.clone();
                self.current = ProgressReport::default();
                return Some(report);
            }
            _ => {}
        }
        None
    }
}

/// A progress line from stderr's classic stats output
/// (`frame=  300 fps= 30 ... time=00:00:10.00 ... speed=1.01x`), for ffmpeg
/// runs without `-progress`; parsed with ffmpeg-sidecar's log parser.
pub fn parse_stderr_stats(line: &str) -> Option<ProgressReport> {
    let p = ffmpeg_sidecar::log_parser::try_parse_progress(line)?;
    let out_time_s = ffmpeg_sidecar::log_parser::parse_time_str(&p.time).filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(0.0);
    Some(ProgressReport {
        frame: u64::from(p.frame),
        fps: f64::from(p.fps),
        speed: f64::from(p.speed),
        out_time_us: (out_time_s * 1e6) as u64,
        drop_frames: 0,
        end: false,
    })
}

fn parse_finite(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The last `capacity` lines of a worker's stderr, for the log line that
/// reports its death.
#[derive(Debug, Clone)]
pub struct StderrRing {
    lines: VecDeque<String>,
    capacity: usize,
}

impl StderrRing {
    /// Longest line kept; ffmpeg can print very long lines on bad input.
    pub const MAX_LINE_BYTES: usize = 512;

    /// An empty ring of `capacity` lines (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { lines: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Adds a line, evicting the oldest when full; blank lines are skipped.
    pub fn push(&mut self, line: &str) {
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        let mut end = line.len().min(Self::MAX_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line[..end].to_owned());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The kept lines joined with " | " (one log field).
    pub fn joined(&self) -> String {
        self.lines.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
    }

    /// Forgets everything (a new process starts).
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

/// A change of a worker's real-time health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpeedTransition {
    /// Speed stayed under the threshold for the whole slow period.
    BecameSlow {
        /// The windowed speed when it was decided.
        speed: f64,
    },
    /// Back at or above the threshold.
    Recovered {
        /// The windowed speed.
        speed: f64,
    },
}

/// Tracks media time against wall time for one worker process.
///
/// ffmpeg's own `speed` counts from process start, so a live worker that
/// spent two seconds connecting reads 0.97x a minute later even though it
/// keeps up. This tracker measures speed over a sliding window of
/// `window_ms` instead, and the encode lag as wall time minus media time
/// since the first report (how far the output has fallen behind since it
/// got going).
#[derive(Debug, Clone)]
pub struct RealtimeTracker {
    threshold: f64,
    slow_period_ms: u64,
    window_ms: u64,
    samples: VecDeque<(u64, u64)>,
    first: Option<(u64, u64)>,
    below_since_ms: Option<u64>,
    slow: bool,
    window_speed: Option<f64>,
    lag_ms: u64,
}

impl RealtimeTracker {
    /// `threshold`: windowed speed under which a worker is falling behind;
    /// `slow_period_ms`: how long it must stay under before it is reported;
    /// `window_ms`: the span the speed is measured over.
    pub fn new(threshold: f64, slow_period_ms: u64, window_ms: u64) -> Self {
        Self {
            threshold,
            slow_period_ms,
            window_ms: window_ms.max(1),
            samples: VecDeque::new(),
            first: None,
            below_since_ms: None,
            slow: false,
            window_speed: None,
            lag_ms: 0,
        }
    }

    /// Feeds a report's media time at wall time `now_ms`.
    pub fn handle_progress(&mut self, now_ms: u64, out_time_us: u64) -> Option<SpeedTransition> {
        let out_ms = out_time_us / 1000;
        // Ignore reports before the first frame is out: start-up is not lag.
        if out_ms == 0 && self.first.is_none() {
            return None;
        }
        let first = *self.first.get_or_insert((now_ms, out_ms));
        self.lag_ms = now_ms.saturating_sub(first.0).saturating_sub(out_ms.saturating_sub(first.1));

        self.samples.push_back((now_ms, out_ms));
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|s| now_ms.saturating_sub(s.0) >= self.window_ms) {
            self.samples.pop_front();
        }
        let (t0, m0) = *self.samples.front()?;
        let wall = now_ms.saturating_sub(t0);
        if wall < self.window_ms {
            // Not a full window yet.
            return None;
        }
        let speed = out_ms.saturating_sub(m0) as f64 / wall as f64;
        self.window_speed = Some(speed);

        if speed < self.threshold {
            let since = *self.below_since_ms.get_or_insert(now_ms);
            if !self.slow && now_ms.saturating_sub(since) >= self.slow_period_ms {
                self.slow = true;
                return Some(SpeedTransition::BecameSlow { speed });
            }
        } else {
            self.below_since_ms = None;
            if self.slow {
                self.slow = false;
                return Some(SpeedTransition::Recovered { speed });
            }
        }
        None
    }

    /// Speed over the last window, once a full window has been seen.
    pub fn window_speed(&self) -> Option<f64> {
        self.window_speed
    }

    /// Wall time minus media time since the first frame, in milliseconds.
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms
    }

    /// True between `BecameSlow` and `Recovered`.
    pub fn is_slow(&self) -> bool {
        self.slow
    }
}

/// Exponential restart backoff: `min`, `2*min`, ... capped at `max`;
/// [`Backoff::reset`] after a worker has run long enough to count as healthy.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        Self { min_ms: min_ms.max(1), max_ms: max_ms.max(min_ms.max(1)), attempt: 0 }
    }

    /// The delay before the next restart, and counts the attempt.
    pub fn next_delay_ms(&mut self) -> u64 {
        let shift = self.attempt.min(32);
        self.attempt = self.attempt.saturating_add(1);
        self.min_ms.saturating_mul(1u64 << shift).min(self.max_ms)
    }

    /// Restarts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to `min` for the next failure.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_progress_block_becomes_one_report() {
        let mut p = ProgressParser::default();
        let block = "frame=300\nfps=29.97\nstream_0_0_q=23.0\nbitrate=2500.1kbits/s\ntotal_size=123456\n\
                     out_time_us=10010000\nout_time_ms=10010000\nout_time=00:00:10.010000\ndup_frames=0\n\
                     drop_frames=2\nspeed=1.01x\nprogress=continue";
        let reports: Vec<_> = block.lines().filter_map(|l| p.handle_line(l)).collect();
        assert_eq!(
            reports,
            [ProgressReport { frame: 300, fps: 29.97, speed: 1.01, out_time_us: 10_010_000, drop_frames: 2, end: false }]
        );
        let end: Vec<_> = "frame=301\nspeed=N/A\nout_time=00:00:10.5\nprogress=end".lines().filter_map(|l| p.handle_line(l)).collect();
        assert_eq!(end[0].speed, 0.0);
        assert_eq!(end[0].out_time_us, 10_500_000);
        assert!(end[0].end);
    }

    #[test]
    fn negative_and_garbage_values_do_not_poison_the_report() {
        let mut p = ProgressParser::default();
        for l in ["out_time_us=-9223372036854775807", "fps=nan", "frame=x", "no equals sign", "speed=inf x"] {
            assert_eq!(p.handle_line(l), None);
        }
        let r = p.handle_line("progress=continue").unwrap();
        assert_eq!(r, ProgressReport::default());
    }

    #[test]
    fn stderr_stats_lines_parse_through_ffmpeg_sidecar() {
        let r = parse_stderr_stats("frame=  300 fps= 30 q=28.0 size=    1024kB time=00:00:10.00 bitrate= 838.9kbits/s speed=0.98x").unwrap();
        assert_eq!(r.frame, 300);
        assert_eq!(r.out_time_us, 10_000_000);
        assert!((r.speed - 0.98).abs() < 1e-6);
        assert_eq!(parse_stderr_stats("[flv @ 0x1] Failed to update header"), None);
    }

    #[test]
    fn the_stderr_ring_keeps_the_last_lines_only() {
        let mut ring = StderrRing::new(3);
        for i in 0..10 {
            ring.push(&format!("line {i}\n"));
        }
        ring.push("   ");
        assert_eq!(ring.lines().collect::<Vec<_>>(), ["line 7", "line 8", "line 9"]);
        assert_eq!(ring.joined(), "line 7 | line 8 | line 9");
        ring.push(&"é".repeat(1000));
        assert!(ring.lines().last().unwrap().len() <= StderrRing::MAX_LINE_BYTES);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(500, 30_000);
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay_ms()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(b.attempt(), 9);
        b.reset();
        assert_eq!(b.next_delay_ms(), 500);
        let mut huge = Backoff::new(1, u64::MAX);
        for _ in 0..100 {
            huge.next_delay_ms();
        }
    }

    /// Feeds a worker producing `speed` media seconds per wall second, one report per 500 ms.
    fn run(tracker: &mut RealtimeTracker, from_ms: u64, to_ms: u64, speed: f64, media_ms: &mut f64) -> Vec<(u64, SpeedTransition)> {
        let mut out = Vec::new();
        let mut now = from_ms;
        while now < to_ms {
            now += 500;
            *media_ms += 500.0 * speed;
            if let Some(t) = tracker.handle_progress(now, (*media_ms * 1000.0) as u64) {
                out.push((now, t));
            }
        }
        out
    }

    #[test]
    fn a_worker_slow_for_the_whole_period_is_reported_once_then_recovers() {
        let mut t = RealtimeTracker::new(0.95, 10_000, 4_000);
        let mut media = 0.0;
        // Start-up: two seconds with no media time is not lag.
        assert!(t.handle_progress(1_000, 0).is_none());
        assert!(t.handle_progress(2_000, 0).is_none());
        assert!(run(&mut t, 2_000, 30_000, 1.0, &mut media).is_empty());
        assert_eq!(t.lag_ms(), 0);
        assert!((t.window_speed().unwrap() - 1.0).abs() < 0.01);

        let slow = run(&mut t, 30_000, 60_000, 0.8, &mut media);
        assert_eq!(slow.len(), 1, "{slow:?}");
        let (at, SpeedTransition::BecameSlow { speed }) = slow[0] else { panic!("{slow:?}") };
        assert!((0.8..0.95).contains(&speed));
        // Under the threshold from about 31 s (window catches up), reported 10 s later.
        assert!((40_000..=46_000).contains(&at), "{at}");
        assert!(t.is_slow());
        assert!(t.lag_ms() >= 5_000, "{}", t.lag_ms());

        let back = run(&mut t, 60_000, 80_000, 1.5, &mut media);
        assert!(matches!(back.as_slice(), [(_, SpeedTransition::Recovered { .. })]), "{back:?}");
        assert!(!t.is_slow());
    }

    #[test]
    fn short_dips_are_not_reported() {
        let mut t = RealtimeTracker::new(0.95, 10_000, 2_000);
        let mut media = 0.0;
        for i in 0..10 {
            let base = i * 10_000;
            assert!(run(&mut t, base, base + 6_000, 1.0, &mut media).is_empty());
            assert!(run(&mut t, base + 6_000, base + 10_000, 0.5, &mut media).is_empty());
        }
    }

    proptest! {
        #[test]
        fn the_progress_parser_never_panics(lines in proptest::collection::vec(".{0,40}", 0..50)) {
            let mut p = ProgressParser::default();
            for l in &lines {
                let _ = p.handle_line(l);
            }
        }

        #[test]
        fn planned_speeds_are_finite(times in proptest::collection::vec((0u64..1_000_000, 0u64..u64::MAX / 2), 0..50)) {
            let mut t = RealtimeTracker::new(1.0, 1000, 1000);
            let mut sorted = times.clone();
            sorted.sort();
            for (now, out) in sorted {
                let _ = t.handle_progress(now, out);
                if let Some(s) = t.window_speed() { prop_assert!(s.is_finite()); }
            }
        }
    }
}
