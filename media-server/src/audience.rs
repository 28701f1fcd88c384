//! Who watches which channel, by protocol, for the rooms' viewer counts.
//!
//! Contract:
//! - Counts are per *source* channel: callers pass the name with any
//!   rendition suffix split off, so `demo_480p` viewers count for `demo`.
//! - RTMP and HTTP-FLV viewers hold a [`ViewerGuard`] for their
//!   connection's life: two atomic operations per viewer, nothing per frame.
//! - HLS has no connection: a client (address and `User-Agent`) counts as
//!   a viewer of a channel while it fetched one of its playlists or
//!   segments within the window. One map write per HLS request.
//! - [`Audience::snapshot`] is meant for a once-a-second reader: it also
//!   forgets idle HLS clients and channels nobody watches.
//! - Watch sessions (rewards): a viewer who plays with a viewer token
//!   (`?viewer=`) has its session recorded when its guard drops, if media
//!   was delivered ([`ViewerGuard::saw_media`]); the usage reporter takes
//!   them ([`Audience::take_watch_sessions`]) into its next batch. Bounded:
//!   past [`MAX_PENDING_SESSIONS`] unsent sessions new ones are dropped.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use westream_control::hooks::WatchSession;

/// Ended watch sessions kept until the next usage report.
pub const MAX_PENDING_SESSIONS: usize = 100_000;

/// Longest viewer token passed on; a longer one is ignored.
const MAX_VIEWER_TOKEN_LEN: usize = 128;

/// Viewers of one channel by protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// RTMP players.
    pub rtmp: u64,
    /// HTTP-FLV players.
    pub flv: u64,
    /// HLS clients seen within the window.
    pub hls: u64,
}

/// A connection-bound protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// RTMP play.
    Rtmp,
    /// HTTP-FLV.
    Flv,
}

#[derive(Debug, Default)]
struct LiveCounts {
    rtmp: AtomicU64,
    flv: AtomicU64,
}

impl LiveCounts {
    fn counter(&self, p: Connected) -> &AtomicU64 {
        match p {
            Connected::Rtmp => &self.rtmp,
            Connected::Flv => &self.flv,
        }
    }
}

/// The registry; one per server.
#[derive(Debug)]
pub struct Audience {
    connected: DashMap<String, Arc<LiveCounts>>,
    /// (channel, client) -> last request, ms.
    hls: DashMap<(String, u64), u64>,
    hls_window_ms: u64,
    ended: Arc<Mutex<Vec<WatchSession>>>,
    /// Signed-in HLS viewers: (viewer token, channel) -> (media ms fetched,
    /// last segment request ms). A session ends after the window idle.
    hls_watch: DashMap<(String, String), (u64, u64)>,
}

/// Counts one RTMP or FLV viewer until dropped.
#[derive(Debug)]
pub struct ViewerGuard {
    counts: Arc<LiveCounts>,
    protocol: Connected,
    watch: Option<Watch>,
}

/// A signed-in viewer's session in progress.
#[derive(Debug)]
struct Watch {
    viewer: String,
    channel: String,
    /// When media first reached the viewer: the session counts from there
    /// (an RTMP player may wait for its publisher first).
    media_since: Option<std::time::Instant>,
    ended: Arc<Mutex<Vec<WatchSession>>>,
}

impl ViewerGuard {
    /// Media reached this viewer (cheap: call it as often as convenient).
    pub fn saw_media(&mut self) {
        if let Some(w) = &mut self.watch {
            w.media_since.get_or_insert_with(std::time::Instant::now);
        }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.counts.counter(self.protocol).fetch_sub(1, Ordering::Relaxed);
        if let Some((w, since)) = self.watch.take().and_then(|w| w.media_since.map(|s| (w, s))) {
            let session = WatchSession {
                viewer: w.viewer,
                channel: w.channel,
                protocol: match self.protocol {
                    Connected::Rtmp => "rtmp",
                    Connected::Flv => "flv",
                }
                .to_string(),
                watched_ms: since.elapsed().as_millis() as u64,
            };
            let mut ended = w.ended.lock();
            if ended.len() < MAX_PENDING_SESSIONS {
                ended.push(session);
            }
        }
    }
}

impl Audience {
    /// An HLS client counts for `hls_window_ms` after its last request.
    pub fn new(hls_window_ms: u64) -> Audience {
        Audience {
            connected: DashMap::new(),
            hls: DashMap::new(),
            hls_window_ms,
            ended: Arc::default(),
            hls_watch: DashMap::new(),
        }
    }

    /// [`Audience::join`] for a viewer that may carry a viewer token: its
    /// session is recorded when the guard drops, if media was delivered.
    pub fn join_as(&self, source: &str, protocol: Connected, viewer: Option<&str>) -> ViewerGuard {
        let mut guard = self.join(source, protocol);
        guard.watch = viewer.filter(|v| !v.is_empty() && v.len() <= MAX_VIEWER_TOKEN_LEN).map(|v| Watch {
            viewer: v.to_string(),
            channel: source.to_string(),
            media_since: None,
            ended: Arc::clone(&self.ended),
        });
        guard
    }

    /// A signed-in HLS viewer fetched a segment of `source` holding
    /// `media_ms` of media: its session's watch time grows by that much.
    pub fn hls_watched(&self, viewer: &str, source: &str, media_ms: u64, now_ms: u64) {
        if viewer.is_empty() || viewer.len() > MAX_VIEWER_TOKEN_LEN {
            return;
        }
        let key = (viewer.to_string(), source.to_string());
        if self.hls_watch.len() >= MAX_PENDING_SESSIONS && !self.hls_watch.contains_key(&key) {
            return;
        }
        let mut e = self.hls_watch.entry(key).or_insert((0, now_ms));
        e.0 += media_ms;
        e.1 = now_ms;
    }

    /// Ends the HLS sessions idle for the window.
    fn end_idle_hls_sessions(&self, now_ms: u64) {
        let mut done = Vec::new();
        self.hls_watch.retain(|(viewer, channel), (watched, last)| {
            let idle = now_ms.saturating_sub(*last) > self.hls_window_ms;
            if idle {
                done.push(WatchSession {
                    viewer: viewer.clone(),
                    channel: channel.clone(),
                    protocol: "hls".to_string(),
                    watched_ms: *watched,
                });
            }
            !idle
        });
        if !done.is_empty() {
            let mut ended = self.ended.lock();
            let room = MAX_PENDING_SESSIONS.saturating_sub(ended.len());
            ended.extend(done.into_iter().take(room));
        }
    }

    /// The watch sessions ended since the last call (HLS sessions idle
    /// for the window at `now_ms` end here).
    pub fn take_watch_sessions(&self, now_ms: u64) -> Vec<WatchSession> {
        self.end_idle_hls_sessions(now_ms);
        std::mem::take(&mut *self.ended.lock())
    }

    /// A viewer of `source` joined over `protocol`; it leaves when the guard drops.
    pub fn join(&self, source: &str, protocol: Connected) -> ViewerGuard {
        // Cloned inside the shard lock, so `snapshot` never forgets an
        // entry a guard is about to use.
        let counts = Arc::clone(self.connected.entry(source.to_string()).or_default().value());
        counts.counter(protocol).fetch_add(1, Ordering::Relaxed);
        ViewerGuard { counts, protocol, watch: None }
    }

    /// An HLS request of `source` from a client.
    pub fn hls_request(&self, source: &str, addr: IpAddr, user_agent: &[u8], now_ms: u64) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        addr.hash(&mut h);
        user_agent.hash(&mut h);
        self.hls.insert((source.to_string(), h.finish()), now_ms);
    }

    /// Current counts of every watched channel; forgets HLS clients idle
    /// past the window and channels with no connected viewer.
    pub fn snapshot(&self, now_ms: u64) -> BTreeMap<String, Counts> {
        let mut out: BTreeMap<String, Counts> = BTreeMap::new();
        self.hls.retain(|(channel, _), last| {
            let fresh = now_ms.saturating_sub(*last) <= self.hls_window_ms;
            if fresh {
                out.entry(channel.clone()).or_default().hls += 1;
            }
            fresh
        });
        self.connected.retain(|channel, counts| {
            let rtmp = counts.rtmp.load(Ordering::Relaxed);
            let flv = counts.flv.load(Ordering::Relaxed);
            if rtmp + flv > 0 {
                let c = out.entry(channel.clone()).or_default();
                c.rtmp = rtmp;
                c.flv = flv;
            }
            // Only the map holds it: no guard can appear without the shard lock.
            rtmp + flv > 0 || Arc::strong_count(counts) > 1
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn watch_sessions_are_recorded_once_media_was_delivered_and_hls_sessions_end_when_idle() {
        let a = Audience::new(6000);
        drop(a.join_as("demo", Connected::Flv, Some("tok")));
        assert!(a.take_watch_sessions(0).is_empty(), "no media, no session");
        let mut g = a.join_as("demo", Connected::Rtmp, Some("tok"));
        g.saw_media();
        drop(g);
        drop(a.join("demo", Connected::Flv));
        let s = a.take_watch_sessions(0);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].protocol.as_str(), s[0].viewer.as_str(), s[0].channel.as_str()), ("rtmp", "tok", "demo"));

        a.hls_watched("tok", "demo", 2000, 1_000);
        a.hls_watched("tok", "demo", 2000, 3_000);
        assert!(a.take_watch_sessions(8_000).is_empty(), "still within the window");
        let s = a.take_watch_sessions(9_001);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].protocol.as_str(), s[0].watched_ms), ("hls", 4000));
        assert!(a.take_watch_sessions(20_000).is_empty(), "ended once");
    }

    #[test]
    fn connected_viewers_count_while_their_guard_lives() {
        let a = Audience::new(6000);
        let g1 = a.join("demo", Connected::Flv);
        let g2 = a.join("demo", Connected::Flv);
        let g3 = a.join("demo", Connected::Rtmp);
        assert_eq!(a.snapshot(0)["demo"], Counts { rtmp: 1, flv: 2, hls: 0 });
        drop((g1, g3));
        assert_eq!(a.snapshot(0)["demo"], Counts { rtmp: 0, flv: 1, hls: 0 });
        drop(g2);
        assert!(a.snapshot(0).is_empty(), "an unwatched channel is forgotten");
        let _g = a.join("demo", Connected::Rtmp);
        assert_eq!(a.snapshot(0)["demo"].rtmp, 1, "and counted again when watched");
    }

    #[test]
    fn hls_clients_count_once_each_within_the_window() {
        let a = Audience::new(6000);
        for t in [0, 1000, 2000] {
            a.hls_request("demo", A, b"hls.js", t);
        }
        a.hls_request("demo", A, b"ffmpeg", 2000);
        a.hls_request("demo", B, b"hls.js", 3000);
        a.hls_request("other", B, b"hls.js", 3000);
        assert_eq!(a.snapshot(3000)["demo"].hls, 3);
        assert_eq!(a.snapshot(3000)["other"].hls, 1);
        // A's ffmpeg and hls.js were last seen at 2000, B at 3000.
        assert_eq!(a.snapshot(8500)["demo"].hls, 1);
        assert!(a.snapshot(9001).is_empty());
    }
}
