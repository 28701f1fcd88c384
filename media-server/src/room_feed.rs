//! Live state and viewer counts into the rooms (chat pages): a task that
//! follows the hub and tells a [`RoomSink`] when a source channel goes live
//! or ends, and its viewers by protocol once a second.
//!
//! Contract:
//! - Only source channels are reported; renditions' viewers are already
//!   counted for their source by the [`Audience`].
//! - "Live" is the hub's view: a publisher that drops and returns within
//!   the grace period never ends the room's broadcast.
//! - A start is reported as soon as the hub announces it; an end and
//!   viewer changes at the next tick. A channel nobody watches any more
//!   gets one last all-zero count. The sink sees each change once; the
//!   work per tick is one pass over live channels and watched channels,
//!   nothing per frame.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::audience::{Audience, Counts};
use crate::hub::Hub;
use crate::transcode::Transcoding;

/// Where live state and counts go (the control plane's rooms).
pub trait RoomSink: Send + Sync + 'static {
    /// A source channel went live.
    fn stream_started(&self, channel: &str);
    /// A source channel ended.
    fn stream_ended(&self, channel: &str);
    /// Current viewers of a source channel.
    fn set_viewers(&self, channel: &str, counts: Counts);
}

impl RoomSink for westream_control::Rooms {
    fn stream_started(&self, channel: &str) {
        westream_control::Rooms::stream_started(self, channel);
    }

    fn stream_ended(&self, channel: &str) {
        westream_control::Rooms::stream_ended(self, channel);
    }

    fn set_viewers(&self, channel: &str, c: Counts) {
        let v = westream_control::ViewerCounts { rtmp: c.rtmp, flv: c.flv, hls: c.hls };
        westream_control::Rooms::set_viewers(self, channel, v);
    }
}

/// What the feed tells the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// `stream_started`
    Started(String),
    /// `stream_ended`
    Ended(String),
    /// `set_viewers`
    Viewers(String, Counts),
}

/// The sans-IO part: what changed since the last look.
#[derive(Debug, Default)]
pub struct FeedState {
    live: BTreeSet<String>,
    watched: BTreeMap<String, Counts>,
}

impl FeedState {
    /// The hub announced `channel` (a source) live.
    pub fn handle_went_live(&mut self, channel: &str) -> Option<FeedEvent> {
        self.live.insert(channel.to_string()).then(|| FeedEvent::Started(channel.to_string()))
    }

    /// A periodic look: the source channels live now and the viewer counts.
    pub fn handle_tick(&mut self, live_now: BTreeSet<String>, counts: BTreeMap<String, Counts>) -> Vec<FeedEvent> {
        let mut out: Vec<FeedEvent> = live_now.difference(&self.live).map(|c| FeedEvent::Started(c.clone())).collect();
        out.extend(self.live.difference(&live_now).map(|c| FeedEvent::Ended(c.clone())));
        self.live = live_now;
        for (c, n) in &counts {
            if self.watched.get(c) != Some(n) {
                out.push(FeedEvent::Viewers(c.clone(), *n));
            }
        }
        for c in self.watched.keys().filter(|c| !counts.contains_key(*c)) {
            out.push(FeedEvent::Viewers(c.clone(), Counts::default()));
        }
        self.watched = counts;
        out
    }

    /// Shutdown: every live channel ends.
    pub fn handle_shutdown(&mut self) -> Vec<FeedEvent> {
        std::mem::take(&mut self.live).into_iter().map(FeedEvent::Ended).collect()
    }
}

fn deliver(sink: &dyn RoomSink, ev: FeedEvent) {
    match ev {
        FeedEvent::Started(c) => {
            tracing::debug!(channel = %c, "room: live");
            sink.stream_started(&c);
        }
        FeedEvent::Ended(c) => {
            tracing::debug!(channel = %c, "room: ended");
            sink.stream_ended(&c);
        }
        FeedEvent::Viewers(c, n) => sink.set_viewers(&c, n),
    }
}

/// Runs until `shutdown`, looking every `interval`.
pub async fn run(
    hub: Arc<Hub>,
    audience: Arc<Audience>,
    transcoding: Arc<Transcoding>,
    sink: Arc<dyn RoomSink>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut went_live = hub.subscribe_went_live();
    let mut state = FeedState::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let is_source = |name: &str| transcoding.split_rendition(name).1.is_none();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                state.handle_shutdown().into_iter().for_each(|e| deliver(sink.as_ref(), e));
                return;
            }
            ev = went_live.recv() => match ev {
                Ok(name) if is_source(&name) => {
                    if let Some(e) = state.handle_went_live(&name) {
                        deliver(sink.as_ref(), e);
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let live_now = hub.live_streams().into_iter().map(|s| s.name).filter(|n| is_source(n)).collect();
                let counts = audience.snapshot(crate::hls::unix_ms());
                state.handle_tick(live_now, counts).into_iter().for_each(|e| deliver(sink.as_ref(), e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn counts(v: &[(&str, u64, u64, u64)]) -> BTreeMap<String, Counts> {
        v.iter().map(|(c, rtmp, flv, hls)| (c.to_string(), Counts { rtmp: *rtmp, flv: *flv, hls: *hls })).collect()
    }

    #[test]
    fn a_start_is_told_once_whether_announced_or_found_by_a_tick() {
        let mut s = FeedState::default();
        assert_eq!(s.handle_went_live("demo"), Some(FeedEvent::Started("demo".into())));
        assert_eq!(s.handle_went_live("demo"), None);
        assert_eq!(s.handle_tick(set(&["demo", "other"]), BTreeMap::new()), vec![FeedEvent::Started("other".into())]);
        assert_eq!(s.handle_tick(set(&["demo", "other"]), BTreeMap::new()), vec![]);
    }

    #[test]
    fn an_end_is_found_by_the_next_tick_and_at_shutdown() {
        let mut s = FeedState::default();
        s.handle_tick(set(&["a", "b"]), BTreeMap::new());
        assert_eq!(s.handle_tick(set(&["b"]), BTreeMap::new()), vec![FeedEvent::Ended("a".into())]);
        assert_eq!(s.handle_shutdown(), vec![FeedEvent::Ended("b".into())]);
        assert_eq!(s.handle_shutdown(), vec![]);
    }

    #[test]
    fn viewer_counts_are_told_when_they_change_and_zeroed_once_when_nobody_watches() {
        let mut s = FeedState::default();
        let live = set(&["demo"]);
        let first = s.handle_tick(live.clone(), counts(&[("demo", 1, 2, 3)]));
        assert_eq!(first, vec![FeedEvent::Started("demo".into()), FeedEvent::Viewers("demo".into(), Counts { rtmp: 1, flv: 2, hls: 3 })]);
        assert_eq!(s.handle_tick(live.clone(), counts(&[("demo", 1, 2, 3)])), vec![]);
        assert_eq!(
            s.handle_tick(live.clone(), counts(&[("demo", 0, 2, 3)])),
            vec![FeedEvent::Viewers("demo".into(), Counts { rtmp: 0, flv: 2, hls: 3 })]
        );
        assert_eq!(s.handle_tick(live.clone(), BTreeMap::new()), vec![FeedEvent::Viewers("demo".into(), Counts::default())]);
        assert_eq!(s.handle_tick(live, BTreeMap::new()), vec![]);
    }
}
