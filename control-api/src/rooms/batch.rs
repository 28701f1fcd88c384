//! Per-room event batching, sans-IO: serialized events, `now` and "the
//! last frame reached every client" in; WebSocket frames and the next
//! deadline out. The room drives it under its lock and arms one timer when
//! [`EventBatcher::poll_timeout`] says so.
//!
//! Contract: an event that finds the room quiet (no window open, nothing
//! held) is a frame of its own at once, and opens a window. Events inside an
//! open window are held and go out together when it ends, as one
//! `{"type":"batch","events":[...]}` frame (a lone held event goes out
//! bare), and the next window opens. So a busy room sends each client one
//! frame per window instead of one per event, a quiet room adds no delay,
//! and no event waits longer than one window. Order is kept; a batch holds
//! at most [`MAX_BATCH_EVENTS`] events and about [`MAX_BATCH_BYTES`] bytes,
//! beyond which it goes out early.
//!
//! The window adapts to load: it lasts [`FANOUT_FACTOR`] times as long as
//! the last frame took to reach every client ([`EventBatcher::handle_fanout_done`]),
//! at least the configured minimum and at most the maximum. A small room
//! (fan-out in a few ms) keeps the minimum; a room of 10,000 clients, where
//! one fan-out is 10,000 socket writes, gets fewer, larger frames, so the
//! fan-out takes at most about half of the time and the writes per second
//! stay what the machine can do. Until the fan-out is known to be done the
//! window is the maximum, and the room is told to check again every
//! [`FANOUT_PROBE`].

use axum::extract::ws::Utf8Bytes;
use std::time::{Duration, Instant};

/// Most events in one batch frame.
pub(crate) const MAX_BATCH_EVENTS: usize = 64;
/// A batch goes out as soon as its events reach this many bytes, so a
/// frame (and the room's ring of them) stays small.
pub(crate) const MAX_BATCH_BYTES: usize = 32 * 1024;
/// A window lasts this many times the last fan-out (see the module doc).
pub(crate) const FANOUT_FACTOR: u32 = 2;
/// While events are held and the last fan-out is not known to be done, the
/// room checks this often.
pub(crate) const FANOUT_PROBE: Duration = Duration::from_millis(2);

/// One serialized event and whether it belongs in the room's history.
#[derive(Debug, Clone)]
pub(crate) struct HeldEvent {
    pub(crate) bytes: Utf8Bytes,
    pub(crate) history: bool,
}

/// A frame to send to every client, with the events it carries (for the
/// room's history).
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) text: Utf8Bytes,
    pub(crate) events: Vec<HeldEvent>,
}

/// The batching state of one room. See the module doc.
#[derive(Debug)]
pub(crate) struct EventBatcher {
    min_window: Duration,
    max_window: Duration,
    held: Vec<HeldEvent>,
    held_bytes: usize,
    /// When the last frame went out (none: no window open; always none with
    /// a zero minimum window).
    last_sent: Option<Instant>,
    /// How long that frame took to reach every client, once known.
    fanout: Option<Duration>,
}

impl EventBatcher {
    /// A batcher with windows from `min_window` to `max_window` (see the
    /// module doc); a zero `min_window` sends every event at once.
    pub(crate) fn new(min_window: Duration, max_window: Duration) -> Self {
        EventBatcher {
            min_window,
            max_window: max_window.max(min_window),
            held: Vec::new(),
            held_bytes: 0,
            last_sent: None,
            fanout: None,
        }
    }

    /// Takes one event at `now`; returns the frame to send now, if any.
    pub(crate) fn handle_event(&mut self, event: HeldEvent, now: Instant) -> Option<Frame> {
        let open = self.window_ends().is_some_and(|end| now < end);
        self.held_bytes += event.bytes.len();
        self.held.push(event);
        if !open || self.held.len() >= MAX_BATCH_EVENTS || self.held_bytes >= MAX_BATCH_BYTES {
            return Some(self.take(now));
        }
        None
    }

    /// Every client has taken the last frame, as seen at `now` (the first
    /// report after a frame counts; later ones change nothing).
    pub(crate) fn handle_fanout_done(&mut self, now: Instant) {
        if let (Some(sent), None) = (self.last_sent, self.fanout) {
            self.fanout = Some(now.saturating_duration_since(sent));
        }
    }

    /// The timer fired at `now`: the held events, if their window ended.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<Frame> {
        let ended = self.window_ends().is_none_or(|end| now >= end);
        (ended && !self.held.is_empty()).then(|| self.take(now))
    }

    /// Everything held, at once (no timer to wait for).
    pub(crate) fn flush(&mut self, now: Instant) -> Option<Frame> {
        (!self.held.is_empty()).then(|| self.take(now))
    }

    /// When to call [`Self::handle_timeout`] (after reporting a finished
    /// fan-out, if it is): while events are held, the end of the window,
    /// or sooner, to check on a fan-out not known to be done; else never.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        let end = self.window_ends()?;
        match self.fanout {
            Some(_) => Some(end),
            None => Some(end.min(now + FANOUT_PROBE)),
        }
    }

    /// The current window: [`FANOUT_FACTOR`] times the last fan-out within
    /// the bounds, the maximum while that is unknown.
    pub(crate) fn window(&self) -> Duration {
        self.fanout
            .map_or(self.max_window, |f| (f * FANOUT_FACTOR).clamp(self.min_window, self.max_window))
    }

    fn window_ends(&self) -> Option<Instant> {
        self.last_sent.map(|sent| sent + self.window())
    }

    fn take(&mut self, now: Instant) -> Frame {
        let events = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        self.last_sent = (!self.min_window.is_zero()).then_some(now);
        self.fanout = None;
        Frame { text: frame_text(&events), events }
    }
}

/// One event bare; several as a `batch` with the already-serialized events
/// spliced in (no event is serialized twice).
fn frame_text(events: &[HeldEvent]) -> Utf8Bytes {
    if let [one] = events {
        return one.bytes.clone();
    }
    let len: usize = events.iter().map(|e| e.bytes.len() + 1).sum();
    let mut s = String::with_capacity(len + 32);
    s.push_str(r#"{"type":"batch","events":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(e.bytes.as_str());
    }
    s.push_str("]}");
    Utf8Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_millis(50);

    /// A batcher whose fan-outs finish at once, unless a test says not.
    fn batcher() -> EventBatcher {
        EventBatcher::new(WINDOW, MAX)
    }

    fn ev(n: u32) -> HeldEvent {
        HeldEvent { bytes: Utf8Bytes::from(format!(r#"{{"type":"chat","id":{n}}}"#)), history: n.is_multiple_of(2) }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_lone_event_in_a_quiet_room_goes_out_at_once_and_bare() {
        let t0 = Instant::now();
        let mut b = batcher();
        let f = b.handle_event(ev(1), t0).expect("sent at once");
        assert_eq!(f.text.as_str(), r#"{"type":"chat","id":1}"#);
        assert_eq!(b.poll_timeout(t0), None, "nothing held, no timer");
        b.handle_fanout_done(ms(t0, 1));
        // Quiet for a window: the next one goes out at once too.
        assert!(b.handle_event(ev(2), ms(t0, 20)).is_some());
    }

    #[test]
    fn events_inside_a_window_go_out_as_one_batch_in_order_when_it_ends() {
        let t0 = Instant::now();
        let mut b = batcher();
        assert!(b.handle_event(ev(1), t0).is_some());
        b.handle_fanout_done(ms(t0, 1));
        for (n, at) in [(2, 1), (3, 5), (4, 19)] {
            assert!(b.handle_event(ev(n), ms(t0, at)).is_none(), "event {n} held");
        }
        assert_eq!(b.poll_timeout(ms(t0, 19)), Some(ms(t0, 20)));
        assert!(b.handle_timeout(ms(t0, 19)).is_none(), "early timer: keep holding");
        let f = b.handle_timeout(ms(t0, 20)).expect("window ended");
        assert_eq!(
            f.text.as_str(),
            r#"{"type":"batch","events":[{"type":"chat","id":2},{"type":"chat","id":3},{"type":"chat","id":4}]}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(f.text.as_str()).expect("valid json");
        assert_eq!(parsed["events"].as_array().map(Vec::len), Some(3));
        let history: Vec<bool> = f.events.iter().map(|e| e.history).collect();
        assert_eq!(history, [true, false, true], "each event keeps its history flag");
        assert_eq!(b.poll_timeout(ms(t0, 20)), None);
        // That frame opened the next window: a busy room stays batched.
        assert!(b.handle_event(ev(5), ms(t0, 25)).is_none());
        b.handle_fanout_done(ms(t0, 26));
        assert_eq!(b.poll_timeout(ms(t0, 26)), Some(ms(t0, 40)));
        let f = b.handle_timeout(ms(t0, 41)).expect("sent");
        assert_eq!(f.text.as_str(), r#"{"type":"chat","id":5}"#, "a lone held event goes out bare");
    }

    #[test]
    fn a_late_timer_does_not_hold_events_past_their_window() {
        let t0 = Instant::now();
        let mut b = batcher();
        assert!(b.handle_event(ev(1), t0).is_some());
        b.handle_fanout_done(t0);
        assert!(b.handle_event(ev(2), ms(t0, 10)).is_none());
        // The window ended before the timer ran: the next event takes all.
        let f = b.handle_event(ev(3), ms(t0, 30)).expect("window over");
        assert_eq!(f.events.len(), 2);
        assert!(b.handle_timeout(ms(t0, 31)).is_none(), "the timer finds nothing");
    }

    #[test]
    fn a_full_batch_goes_out_early() {
        let t0 = Instant::now();
        let mut b = batcher();
        assert!(b.handle_event(ev(0), t0).is_some());
        b.handle_fanout_done(t0);
        let mut frames = Vec::new();
        for n in 1..=(MAX_BATCH_EVENTS as u32 + 1) {
            frames.extend(b.handle_event(ev(n), ms(t0, 1)));
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].events.len(), MAX_BATCH_EVENTS);
        assert_eq!(b.flush(ms(t0, 1)).map(|f| f.events.len()), Some(1), "the rest is still held");

        let big = HeldEvent { bytes: Utf8Bytes::from("x".repeat(MAX_BATCH_BYTES)), history: false };
        let f = b.handle_event(big, ms(t0, 2)).expect("over the byte cap: sent");
        assert_eq!(f.events.len(), 1);
    }

    #[test]
    fn a_zero_window_sends_every_event_at_once() {
        let t0 = Instant::now();
        let mut b = EventBatcher::new(Duration::ZERO, MAX);
        for n in 0..5 {
            let f = b.handle_event(ev(n), t0).expect("sent at once");
            assert_eq!(f.events.len(), 1);
        }
        assert_eq!(b.poll_timeout(t0), None);
    }

    #[test]
    fn a_slow_fan_out_widens_the_window_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = batcher();
        // 15 ms to reach every client: the next window is 30 ms.
        assert!(b.handle_event(ev(0), t0).is_some());
        assert!(b.handle_event(ev(1), ms(t0, 5)).is_none());
        b.handle_fanout_done(ms(t0, 15));
        b.handle_fanout_done(ms(t0, 18)); // a later report changes nothing
        assert_eq!(b.window(), Duration::from_millis(30));
        assert_eq!(b.poll_timeout(ms(t0, 15)), Some(ms(t0, 30)));
        assert!(b.handle_event(ev(2), ms(t0, 29)).is_none(), "still inside the wider window");
        let f = b.handle_timeout(ms(t0, 30)).expect("window over");
        assert_eq!(f.events.len(), 2);
        // 40 ms: twice that is over the maximum, which holds.
        assert!(b.handle_event(ev(3), ms(t0, 31)).is_none());
        b.handle_fanout_done(ms(t0, 70));
        assert_eq!(b.window(), MAX);
        assert_eq!(b.poll_timeout(ms(t0, 70)), Some(ms(t0, 80)));
        // A fast fan-out brings it back to the minimum.
        assert_eq!(b.handle_timeout(ms(t0, 80)).map(|f| f.events.len()), Some(1));
        b.handle_fanout_done(ms(t0, 81));
        assert_eq!(b.window(), WINDOW);
    }

    #[test]
    fn while_a_fan_out_is_unfinished_events_wait_at_most_the_maximum_and_the_room_checks_often() {
        let t0 = Instant::now();
        let mut b = batcher();
        assert!(b.handle_event(ev(0), t0).is_some());
        assert!(b.handle_event(ev(1), ms(t0, 25)).is_none(), "past the minimum, but the fan-out is not done");
        assert_eq!(b.poll_timeout(ms(t0, 25)), Some(ms(t0, 25) + FANOUT_PROBE), "check again soon");
        assert_eq!(b.poll_timeout(ms(t0, 49)), Some(ms(t0, 50)), "never past the maximum");
        assert!(b.handle_timeout(ms(t0, 49)).is_none());
        let f = b.handle_timeout(ms(t0, 50)).expect("the maximum bounds the wait");
        assert_eq!(f.events.len(), 1);
    }
}
