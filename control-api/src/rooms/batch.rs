//! Per-room event batching, sans-IO: serialized events and `now` in,
//! WebSocket frames and the next deadline out. The room drives it under its
//! lock and arms one timer when [`EventBatcher::poll_timeout`] says so.
//!
//! Contract: an event that finds the room quiet (nothing sent for
//! `batch_window_ms`, nothing held) is a frame of its own at once, and opens
//! a window. Events inside an open window are held and go out together when
//! it ends, as one `{"type":"batch","events":[...]}` frame (a lone held event
//! goes out bare), and the next window opens. So a busy room sends each
//! client one frame per window instead of one per event, a quiet room adds
//! no delay, and no event waits longer than one window. Order is kept; a
//! batch holds at most [`MAX_BATCH_EVENTS`] events and about
//! [`MAX_BATCH_BYTES`] bytes, beyond which it goes out early.

use axum::extract::ws::Utf8Bytes;
use std::time::{Duration, Instant};

/// Most events in one batch frame.
pub(crate) const MAX_BATCH_EVENTS: usize = 64;
/// A batch goes out as soon as its events reach this many bytes, so a
/// frame (and the room's ring of them) stays small.
pub(crate) const MAX_BATCH_BYTES: usize = 32 * 1024;

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
    window: Duration,
    held: Vec<HeldEvent>,
    held_bytes: usize,
    /// End of the window opened by the last frame sent.
    window_ends: Option<Instant>,
}

impl EventBatcher {
    /// A batcher with windows of `window`; zero sends every event at once.
    pub(crate) fn new(window: Duration) -> Self {
        EventBatcher { window, held: Vec::new(), held_bytes: 0, window_ends: None }
    }

    /// Takes one event at `now`; returns the frame to send now, if any.
    pub(crate) fn handle_event(&mut self, event: HeldEvent, now: Instant) -> Option<Frame> {
        let open = self.window_ends.is_some_and(|end| now < end);
        self.held_bytes += event.bytes.len();
        self.held.push(event);
        if !open || self.held.len() >= MAX_BATCH_EVENTS || self.held_bytes >= MAX_BATCH_BYTES {
            return Some(self.take(now));
        }
        None
    }

    /// The timer fired at `now`: the held events, if their window ended.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<Frame> {
        let ended = self.window_ends.is_none_or(|end| now >= end);
        (ended && !self.held.is_empty()).then(|| self.take(now))
    }

    /// Everything held, at once (no timer to wait for).
    pub(crate) fn flush(&mut self, now: Instant) -> Option<Frame> {
        (!self.held.is_empty()).then(|| self.take(now))
    }

    /// When to call [`Self::handle_timeout`]: the end of the window while
    /// events are held, else never.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        self.window_ends
    }

    fn take(&mut self, now: Instant) -> Frame {
        let events = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        self.window_ends = (!self.window.is_zero()).then(|| now + self.window);
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

    fn ev(n: u32) -> HeldEvent {
        HeldEvent { bytes: Utf8Bytes::from(format!(r#"{{"type":"chat","id":{n}}}"#)), history: n.is_multiple_of(2) }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_lone_event_in_a_quiet_room_goes_out_at_once_and_bare() {
        let t0 = Instant::now();
        let mut b = EventBatcher::new(WINDOW);
        let f = b.handle_event(ev(1), t0).expect("sent at once");
        assert_eq!(f.text.as_str(), r#"{"type":"chat","id":1}"#);
        assert_eq!(b.poll_timeout(), None, "nothing held, no timer");
        // Quiet for a window: the next one goes out at once too.
        assert!(b.handle_event(ev(2), ms(t0, 20)).is_some());
    }

    #[test]
    fn events_inside_a_window_go_out_as_one_batch_in_order_when_it_ends() {
        let t0 = Instant::now();
        let mut b = EventBatcher::new(WINDOW);
        assert!(b.handle_event(ev(1), t0).is_some());
        for (n, at) in [(2, 1), (3, 5), (4, 19)] {
            assert!(b.handle_event(ev(n), ms(t0, at)).is_none(), "event {n} held");
        }
        assert_eq!(b.poll_timeout(), Some(ms(t0, 20)));
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
        assert_eq!(b.poll_timeout(), None);
        // That frame opened the next window: a busy room stays batched.
        assert!(b.handle_event(ev(5), ms(t0, 25)).is_none());
        assert_eq!(b.poll_timeout(), Some(ms(t0, 40)));
        let f = b.handle_timeout(ms(t0, 41)).expect("sent");
        assert_eq!(f.text.as_str(), r#"{"type":"chat","id":5}"#, "a lone held event goes out bare");
    }

    #[test]
    fn a_late_timer_does_not_hold_events_past_their_window() {
        let t0 = Instant::now();
        let mut b = EventBatcher::new(WINDOW);
        assert!(b.handle_event(ev(1), t0).is_some());
        assert!(b.handle_event(ev(2), ms(t0, 10)).is_none());
        // The window ended before the timer ran: the next event takes all.
        let f = b.handle_event(ev(3), ms(t0, 30)).expect("window over");
        assert_eq!(f.events.len(), 2);
        assert!(b.handle_timeout(ms(t0, 31)).is_none(), "the timer finds nothing");
    }

    #[test]
    fn a_full_batch_goes_out_early() {
        let t0 = Instant::now();
        let mut b = EventBatcher::new(WINDOW);
        assert!(b.handle_event(ev(0), t0).is_some());
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
        let mut b = EventBatcher::new(Duration::ZERO);
        for n in 0..5 {
            let f = b.handle_event(ev(n), t0).expect("sent at once");
            assert_eq!(f.events.len(), 1);
        }
        assert_eq!(b.poll_timeout(), None);
    }
}
