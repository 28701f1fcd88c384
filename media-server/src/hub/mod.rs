//! The stream hub: one entry per live channel, which publishers push frames
//! into and viewers of every protocol subscribe to. Protocols never talk to
//! each other, only to the hub.
//!
//! Contract:
//! - A frame is parsed once and shared (`Arc<Frame>`); nothing here copies a
//!   payload per viewer.
//! - The publisher never waits for a viewer: frames go into a bounded
//!   broadcast ring; a viewer that falls a whole ring behind is skipped
//!   forward to the next keyframe, and the skipped frames are counted.
//! - A new viewer first gets metadata, sequence headers and the GOP cache
//!   (from the last keyframe), so it starts decoding at once.
//! - A publisher that drops keeps the channel (and its viewers) for a grace
//!   period; one that returns in time continues the same timeline.

pub mod direct;
pub mod timeline;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::media::{Frame, FrameKind, FrameParseError};
use crate::metrics::Metrics;
use direct::Shard;
pub use direct::{Batch, Cursor, DirectSink, Step};
use timeline::{Timeline, Track};

/// Batches kept for viewers that come back from direct delivery (see
/// [`direct`]): about four seconds at 30 frames a second. One further
/// behind skips forward to a keyframe.
const RECENT_BATCHES: usize = 128;

/// Most fan-out shards (tasks) per channel; there is one per runtime
/// worker up to this.
const MAX_SHARDS: usize = 8;

/// Longest frames are held back for a batch (audio waiting for a video
/// frame, or a merged write) before they leave anyway.
pub const MAX_HOLD_MS: u64 = 100;

/// The default `hub.merge_write_ms`: a batch leaves when its oldest frame has
/// waited this long. At 30 fps with 44.1 kHz AAC that is 21.5 writes a
/// second per viewer instead of 30 (one per video frame), for at most 35 ms
/// more latency, against the 33 ms an audio frame already waited for the
/// next video frame.
pub const DEFAULT_MERGE_WRITE_MS: u64 = 35;

/// Hub tuning, from the `[hub]` config table.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long a channel outlives its publisher's disconnect.
    pub publisher_grace: Duration,
    /// Most bytes kept in one channel's GOP cache; a longer GOP is not cached.
    pub gop_cache_max_bytes: usize,
    /// Frames a viewer may fall behind before it is skipped forward.
    pub viewer_queue_frames: usize,
    /// For audio-only channels: how much audio a new viewer gets at once.
    pub audio_only_cache_ms: u64,
    /// Merged writes (`hub.merge_write_ms`): frames wait for a batch, and
    /// the batch leaves when its oldest frame has waited this long (a
    /// timer), when it spans this much media time (a publisher sending
    /// faster than real time), or at once with a keyframe, a sequence
    /// header or metadata. Each viewer gets fewer, larger writes: fewer
    /// sends per GB, for up to this much latency. 0: a batch per video
    /// frame, audio riding with the next one. Default
    /// [`DEFAULT_MERGE_WRITE_MS`], at most [`MAX_HOLD_MS`].
    pub merge_write_ms: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            publisher_grace: Duration::from_secs(5),
            gop_cache_max_bytes: 32 * 1024 * 1024,
            viewer_queue_frames: 1024,
            audio_only_cache_ms: 1000,
            merge_write_ms: DEFAULT_MERGE_WRITE_MS,
        }
    }
}

/// Hub errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// Someone is already publishing this channel.
    #[error("channel '{channel}' already has a publisher")]
    AlreadyPublishing {
        /// The channel.
        channel: String,
    },
    /// This publisher was replaced or the channel was stopped.
    #[error("publisher of '{channel}' is no longer current")]
    NotCurrentPublisher {
        /// The channel.
        channel: String,
    },
    /// The message could not be parsed as a frame.
    #[error(transparent)]
    Frame(#[from] FrameParseError),
}

#[derive(Debug)]
struct State {
    publisher: Option<u64>,
    stop: Option<CancellationToken>,
    grace_until: Option<Instant>,
    closed: bool,
    /// Every batch goes out here (frames wait for their batch at most
    /// `merge_write_ms`, or without merged writes audio waits for the next
    /// video frame, at most [`MAX_HOLD_MS`] if video stalls)...
    tx: Option<broadcast::Sender<Batch>>,
    /// ...and to the fan-out shards of direct viewers.
    shards: Vec<Arc<Shard>>,
    /// Sequence number of the next batch.
    next_seq: u64,
    /// The last [`RECENT_BATCHES`] batches.
    recent: VecDeque<Batch>,
    /// Live [`Subscription`]s.
    subscribers: usize,
    /// Frames held back for the next batch: with merged writes
    /// (`merge_write_ms`) every frame until the batch is due, else audio
    /// until the next video frame.
    pending: Vec<Arc<Frame>>,
    /// With merged writes: when the oldest held frame arrived.
    pending_since: Option<tokio::time::Instant>,
    metadata: Option<Arc<Frame>>,
    avc: Option<Arc<Frame>>,
    aac: Option<Arc<Frame>>,
    gop: VecDeque<Arc<Frame>>,
    gop_bytes: usize,
    epoch: u32,
    timeline: Timeline,
    live_since: Option<Instant>,
}

/// One channel in the hub.
#[derive(Debug)]
pub struct Stream {
    name: String,
    state: Mutex<State>,
    has_video: AtomicBool,
    has_audio: AtomicBool,
    /// Told when a merged write starts holding frames (its timer starts).
    held: tokio::sync::Notify,
    /// Bytes sent to viewers of this channel, all protocols (for metering).
    pub bytes_out: AtomicU64,
    /// Bytes received from its publishers.
    pub bytes_in: AtomicU64,
    /// `bytes_out` / `bytes_in` as of the last usage report (metering).
    reported: Mutex<(u64, u64)>,
}

/// A snapshot of a channel, for the API and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Channel name.
    pub name: String,
    /// A publisher is connected now.
    pub publishing: bool,
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Video seen.
    pub has_video: bool,
    /// Audio seen.
    pub has_audio: bool,
}

impl Stream {
    fn new(name: &str, queue: usize) -> Stream {
        let (tx, _) = broadcast::channel(queue.max(16));
        Stream {
            name: name.to_string(),
            state: Mutex::new(State {
                publisher: None,
                stop: None,
                grace_until: None,
                closed: false,
                tx: Some(tx),
                shards: Vec::new(),
                next_seq: 0,
                recent: VecDeque::new(),
                subscribers: 0,
                pending: Vec::new(),
                pending_since: None,
                metadata: None,
                avc: None,
                aac: None,
                gop: VecDeque::new(),
                gop_bytes: 0,
                epoch: 0,
                timeline: Timeline::new(),
                live_since: None,
            }),
            has_video: AtomicBool::new(false),
            has_audio: AtomicBool::new(false),
            held: tokio::sync::Notify::new(),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            reported: Mutex::new((0, 0)),
        }
    }

    /// Frames held now for the next batch (merged writes, or audio
    /// waiting for a video frame).
    pub fn held(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a publisher is connected or the channel is in its grace period.
    pub fn is_live(&self) -> bool {
        let st = self.state.lock();
        !st.closed && (st.publisher.is_some() || st.grace_until.is_some())
    }

    /// Whether video was seen on this channel.
    pub fn has_video(&self) -> bool {
        self.has_video.load(Ordering::Relaxed)
    }

    /// Whether audio was seen on this channel.
    pub fn has_audio(&self) -> bool {
        self.has_audio.load(Ordering::Relaxed)
    }

    /// The current AVC sequence header, if the publisher sent one.
    pub fn video_header(&self) -> Option<Arc<Frame>> {
        self.state.lock().avc.clone()
    }

    /// A snapshot.
    pub fn info(&self) -> StreamInfo {
        let st = self.state.lock();
        StreamInfo {
            name: self.name.clone(),
            publishing: st.publisher.is_some(),
            subscribers: st.subscribers,
            has_video: self.has_video(),
            has_audio: self.has_audio(),
        }
    }

    /// Subscribes: the returned subscription yields metadata, sequence
    /// headers and the GOP cache first, then live frames. `None` once the
    /// channel has closed.
    pub fn subscribe(self: &Arc<Self>, metrics: &Metrics) -> Option<Subscription> {
        let mut st = self.state.lock();
        let rx = st.tx.as_ref()?.subscribe();
        st.subscribers += 1;
        let mut backlog: VecDeque<Arc<Frame>> = VecDeque::with_capacity(st.gop.len() + 3);
        backlog.extend(st.metadata.iter().cloned());
        backlog.extend(st.avc.iter().cloned());
        backlog.extend(st.aac.iter().cloned());
        // Frames held for the next batch (audio waiting for video, video
        // in a merged write) are already in the GOP cache but not yet
        // broadcast: this receiver gets them with that batch, so the
        // backlog stops short of them (else they would arrive twice, and
        // timestamps would go backwards).
        let mut replay = st.gop.len();
        for held in st.pending.iter().rev() {
            if replay > 0 && Arc::ptr_eq(&st.gop[replay - 1], held) {
                replay -= 1;
            } else {
                break;
            }
        }
        backlog.extend(st.gop.iter().take(replay).cloned());
        let starts_on_key = st.gop.front().is_some_and(|f| f.keyframe);
        let waiting_for_key = self.has_video() && !starts_on_key;
        Some(Subscription {
            stream: Arc::clone(self),
            rx: Some(rx),
            backlog,
            cursor: Cursor { next_seq: st.next_seq, waiting_for_key },
            dropped: 0,
            frames_dropped: metrics.frames_dropped.clone(),
            closed: false,
            hub: None,
        })
    }
}

/// The hub.
pub struct Hub {
    streams: DashMap<String, Arc<Stream>>,
    config: HubConfig,
    metrics: Metrics,
    next_publisher: AtomicU64,
    /// Channels that ended since the last usage report, so their last
    /// bytes are still counted.
    retired: Mutex<Vec<Arc<Stream>>>,
    went_live: broadcast::Sender<String>,
    on_demand: parking_lot::RwLock<Option<OnDemand>>,
}

/// Called when a viewer asks for a channel (the edge role starts pulling it
/// from an origin); see [`Hub::set_on_demand`].
pub type OnDemandFn = Arc<dyn Fn(&str) + Send + Sync>;

struct OnDemand {
    callback: OnDemandFn,
    wait: Duration,
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig, metrics: Metrics) -> Arc<Hub> {
        let (went_live, _) = broadcast::channel(256);
        Arc::new(Hub {
            streams: DashMap::new(),
            config,
            metrics,
            next_publisher: AtomicU64::new(1),
            went_live,
            retired: Mutex::new(Vec::new()),
            on_demand: parking_lot::RwLock::new(None),
        })
    }

    /// Installs the on-demand hook (edges): every play request (RTMP play,
    /// an HTTP-FLV viewer, every HLS request) calls `callback(channel)`, live
    /// or not, so the hook can start an upstream and keep it alive; players
    /// of a channel that is not live yet wait up to `wait` for it.
    pub fn set_on_demand(&self, wait: Duration, callback: OnDemandFn) {
        *self.on_demand.write() = Some(OnDemand { callback, wait });
    }

    /// Tells the on-demand hook that a viewer wants `channel`. Returns how
    /// long the caller may wait for it to go live (zero without a hook).
    pub fn demand(&self, channel: &str) -> Duration {
        let hook = self.on_demand.read().as_ref().map(|h| (Arc::clone(&h.callback), h.wait));
        match hook {
            Some((callback, wait)) => {
                callback(channel);
                wait
            }
            None => Duration::ZERO,
        }
    }

    /// The channel once it is live, waiting at most `wait`.
    pub async fn wait_live(&self, channel: &str, wait: Duration) -> Option<Arc<Stream>> {
        let mut went_live = self.went_live.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.live(channel) {
                return Some(s);
            }
            match tokio::time::timeout_at(deadline, went_live.recv()).await {
                Err(_) => return None,
                Ok(Err(broadcast::error::RecvError::Closed)) => return self.live(channel),
                // A lag or another channel: look again.
                Ok(_) => {}
            }
        }
    }

    /// Names of channels as they go live (a first publisher, not one that
    /// resumes within the grace period). Packagers that follow every channel
    /// (HLS) listen here; one that lags should rescan [`Hub::live_streams`].
    pub fn subscribe_went_live(&self) -> broadcast::Receiver<String> {
        self.went_live.subscribe()
    }

    /// The metrics the hub reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The channel, if it is live (publishing or within its grace period).
    pub fn live(&self, channel: &str) -> Option<Arc<Stream>> {
        let s = self.streams.get(channel)?.clone();
        s.is_live().then_some(s)
    }

    /// Subscribers of a channel, live or still awaited (RTMP players wait).
    pub fn subscribers(&self, channel: &str) -> usize {
        let stream = self.streams.get(channel).map(|s| s.clone());
        stream.map_or(0, |s| s.info().subscribers)
    }

    /// Snapshots of every live channel.
    pub fn live_streams(&self) -> Vec<StreamInfo> {
        let all: Vec<Arc<Stream>> = self.streams.iter().map(|e| e.value().clone()).collect();
        all.into_iter().filter(|s| s.is_live()).map(|s| s.info()).collect()
    }

    /// The channel's entry, created idle if missing.
    fn entry(&self, channel: &str) -> Arc<Stream> {
        self.streams
            .entry(channel.to_string())
            .or_insert_with(|| Arc::new(Stream::new(channel, self.config.viewer_queue_frames)))
            .clone()
    }

    /// Drops `stream` from the map unless another entry already replaced it.
    fn forget(&self, stream: &Arc<Stream>) {
        self.streams.remove_if(&stream.name, |_, v| Arc::ptr_eq(v, stream));
    }

    /// Subscribes to a channel whether or not it is live yet (RTMP players
    /// wait for the publisher). The entry is dropped again when its last
    /// waiting viewer leaves.
    pub fn watch(self: &Arc<Self>, channel: &str) -> Subscription {
        self.demand(channel);
        loop {
            let stream = self.entry(channel);
            if let Some(mut sub) = stream.subscribe(&self.metrics) {
                sub.hub = Some(Arc::clone(self));
                return sub;
            }
            // Closed under our feet: clear it and make a fresh one.
            self.forget(&stream);
        }
    }

    /// Starts publishing `channel`. Fails if it already has a publisher; takes
    /// over a channel in its grace period (viewers stay connected).
    pub fn publish(self: &Arc<Self>, channel: &str) -> Result<Publisher, HubError> {
        let id = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        loop {
            let stream = self.entry(channel);
            let mut st = stream.state.lock();
            if st.closed {
                drop(st);
                self.forget(&stream);
                continue;
            }
            if st.publisher.is_some() {
                return Err(HubError::AlreadyPublishing { channel: channel.to_string() });
            }
            let mut fresh = false;
            if st.grace_until.take().is_some() {
                // The same broadcast continues: new headers will follow.
                st.epoch += 1;
                st.metadata = None;
                st.avc = None;
                st.aac = None;
                st.gop.clear();
                st.gop_bytes = 0;
                tracing::info!(channel, epoch = st.epoch, "publisher resumed within the grace period");
            } else {
                self.metrics.streams_live.inc();
                st.live_since = Some(Instant::now());
                fresh = true;
            }
            let stop = CancellationToken::new();
            st.publisher = Some(id);
            st.stop = Some(stop.clone());
            drop(st);
            self.metrics.publishers.inc();
            if fresh {
                // Err only means no packager is listening.
                let _ = self.went_live.send(channel.to_string());
            }
            let flusher = self.spawn_flusher(&stream);
            return Ok(Publisher { hub: Arc::clone(self), stream, id, stop, _flusher: flusher });
        }
    }

    /// Stops a channel's publisher now (an operator or the control plane
    /// asked). Its viewers are closed after the grace period as usual.
    pub fn stop_publisher(&self, channel: &str) -> bool {
        let Some(stream) = self.streams.get(channel).map(|s| s.clone()) else { return false };
        let st = stream.state.lock();
        match &st.stop {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Bytes moved per channel since the last call, as
    /// `(channel, bytes_out, bytes_in, subscribers)`, including channels that
    /// ended in between. For the usage reporter only (one caller).
    pub fn take_usage(&self) -> Vec<(String, u64, u64, usize)> {
        let mut streams: Vec<Arc<Stream>> = self.streams.iter().map(|e| e.value().clone()).collect();
        streams.append(&mut self.retired.lock());
        let mut out = Vec::new();
        for s in streams {
            let now = (s.bytes_out.load(Ordering::Relaxed), s.bytes_in.load(Ordering::Relaxed));
            let before = std::mem::replace(&mut *s.reported.lock(), now);
            let (d_out, d_in) = (now.0 - before.0, now.1 - before.1);
            let subscribers = s.info().subscribers;
            if d_out > 0 || d_in > 0 || subscribers > 0 {
                out.push((s.name.clone(), d_out, d_in, subscribers));
            }
        }
        out
    }

    /// With merged writes, the task that sends a held batch once it is due
    /// (while the publisher lives). Outside a tokio runtime (unit tests)
    /// there is none, and a held batch leaves with the first frame pushed
    /// after it is due.
    fn spawn_flusher(&self, stream: &Arc<Stream>) -> Option<DropGuard> {
        let hold = Duration::from_millis(self.config.merge_write_ms);
        if hold.is_zero() {
            return None;
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let stop = CancellationToken::new();
        rt.spawn(flush_when_due(Arc::clone(stream), hold, stop.clone()));
        Some(stop.drop_guard())
    }

    fn unpublish(self: &Arc<Self>, stream: &Arc<Stream>, id: u64) {
        let mut st = stream.state.lock();
        if st.publisher != Some(id) {
            return;
        }
        st.publisher = None;
        st.stop = None;
        // Frames held for a batch that will not fill now.
        st.send_held();
        st.timeline.restart();
        let grace = self.config.publisher_grace;
        st.grace_until = Some(Instant::now() + grace);
        drop(st);
        self.metrics.publishers.dec();
        let hub = Arc::clone(self);
        let stream = Arc::clone(stream);
        let expire = move || {
            let mut st = stream.state.lock();
            let expired = st.publisher.is_none() && st.grace_until.is_some_and(|t| t <= Instant::now());
            if expired {
                st.grace_until = None;
                st.close();
                drop(st);
                hub.metrics.streams_live.dec();
                hub.forget(&stream);
                hub.retired.lock().push(Arc::clone(&stream));
                tracing::info!(channel = %stream.name, "channel ended");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    expire();
                });
            }
            // Outside a runtime (unit tests): expire at once when grace is zero.
            Err(_) if grace.is_zero() => expire(),
            Err(_) => {}
        }
    }

    fn release_idle(&self, stream: &Arc<Stream>) {
        let mut st = stream.state.lock();
        let idle = st.publisher.is_none() && st.grace_until.is_none() && !st.closed;
        if idle && st.subscribers == 0 {
            st.close();
            drop(st);
            self.forget(stream);
        }
    }
}

/// The publishing side of a channel. Dropping it starts the grace period.
pub struct Publisher {
    hub: Arc<Hub>,
    stream: Arc<Stream>,
    id: u64,
    stop: CancellationToken,
    /// Stops the merged writes' timer task with the publisher.
    _flusher: Option<DropGuard>,
}

impl Publisher {
    /// The channel.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Cancelled when this publisher must stop (replaced, or stopped by the
    /// control plane).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Sends the frames held for a batch now: a relay whose upstream sent
    /// its frames already batched (an edge pulling from its origin) calls
    /// this once it has read what arrived, so they are not held twice.
    pub fn flush(&self) {
        let mut st = self.stream.state.lock();
        if st.publisher == Some(self.id) {
            st.send_held();
        }
    }

    /// Pushes one audio, video or metadata message with its raw RTMP
    /// timestamp. Returns the frame as the hub stored it.
    pub fn push(&self, kind: FrameKind, raw_ts: u32, payload: Bytes) -> Result<Arc<Frame>, HubError> {
        let len = payload.len();
        let hub = &self.hub;
        let mut st = self.stream.state.lock();
        if st.publisher != Some(self.id) {
            return Err(HubError::NotCurrentPublisher { channel: self.stream.name.clone() });
        }
        let track = match kind {
            FrameKind::Video => Track::Video,
            FrameKind::Audio => Track::Audio,
            FrameKind::Metadata => Track::Data,
        };
        // Script data has no meaningful timestamp of its own (rml_rtmp drops
        // it); it takes the newest time so it never disturbs the unwrapping.
        let dts = if track == Track::Data { st.timeline.current() } else { st.timeline.map(track, raw_ts) };
        let frame = Arc::new(Frame::parse(kind, dts, st.epoch, payload)?);
        match kind {
            FrameKind::Metadata => st.metadata = Some(Arc::clone(&frame)),
            FrameKind::Video => {
                self.stream.has_video.store(true, Ordering::Relaxed);
                if frame.sequence_header {
                    st.avc = Some(Arc::clone(&frame));
                } else {
                    cache_gop(&mut st, &frame, true, hub.config());
                }
            }
            FrameKind::Audio => {
                self.stream.has_audio.store(true, Ordering::Relaxed);
                if frame.sequence_header {
                    st.aac = Some(Arc::clone(&frame));
                } else {
                    let has_video = self.stream.has_video();
                    cache_gop(&mut st, &frame, has_video, hub.config());
                }
            }
        }
        let held_span = st.pending.first().map_or(0, |first| frame.dts.saturating_sub(first.dts));
        let merge_ms = hub.config().merge_write_ms;
        let mut timer_starts = false;
        st.pending.push(Arc::clone(&frame));
        if merge_ms > 0 {
            // Merged writes: every frame waits until the batch is due (its
            // timer, or the media span when frames come faster than real
            // time); a keyframe, a sequence header or metadata leaves at
            // once with whatever is held.
            // tokio's clock, so tests can pause it; the std clock outside a runtime.
            let now = tokio::time::Instant::now();
            let hold = Duration::from_millis(merge_ms);
            let overdue = st.pending_since.is_some_and(|since| now.duration_since(since) >= hold);
            let leaves_now = kind == FrameKind::Metadata || frame.sequence_header || frame.keyframe;
            if leaves_now || overdue || held_span >= merge_ms {
                st.send_held();
            } else {
                timer_starts = st.pending_since.is_none();
                st.pending_since.get_or_insert(now);
            }
        } else {
            // In a channel with video, audio rides with the next video frame.
            let rides = self.stream.has_video() && kind == FrameKind::Audio && !frame.sequence_header;
            if !rides || held_span >= MAX_HOLD_MS {
                st.send_held();
            }
        }
        drop(st);
        if timer_starts {
            self.stream.held.notify_one();
        }
        self.stream.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        hub.metrics.bytes_in.inc_by(len as u64);
        Ok(frame)
    }
}

impl State {
    /// Sends the frames held for a batch (if any) now, and stops its timer.
    fn send_held(&mut self) {
        self.pending_since = None;
        if !self.pending.is_empty() {
            let held = std::mem::take(&mut self.pending);
            self.send(held);
        }
    }

    /// Sends frames that leave together to every subscriber and shard.
    fn send(&mut self, frames: Vec<Arc<Frame>>) {
        let Some(tx) = &self.tx else { return };
        let batch = Batch::new(self.next_seq, frames);
        self.next_seq += 1;
        // Err only means nobody is subscribed.
        let _ = tx.send(batch.clone());
        for shard in &self.shards {
            shard.push(&batch);
        }
        if self.recent.len() >= RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(batch);
    }

    /// Ends the channel: dropping the sender ends every subscription once
    /// drained; the shards deliver what they hold, then end their sinks.
    fn close(&mut self) {
        self.closed = true;
        self.tx = None;
        self.recent.clear();
        for shard in self.shards.drain(..) {
            shard.close();
        }
    }
}

/// The merged writes' timer: sends a held batch once its oldest frame has
/// waited `hold`, unless a push sent it first.
async fn flush_when_due(stream: Arc<Stream>, hold: Duration, stop: CancellationToken) {
    loop {
        let since = stream.state.lock().pending_since;
        let Some(since) = since else {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = stream.held.notified() => continue,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(since + hold) => {}
        }
        let mut st = stream.state.lock();
        if st.pending_since == Some(since) {
            st.send_held();
        }
    }
}

fn cache_gop(st: &mut State, frame: &Arc<Frame>, has_video: bool, config: &HubConfig) {
    if has_video {
        if frame.is_video() && frame.keyframe {
            st.gop.clear();
            st.gop_bytes = 0;
        } else if st.gop.is_empty() {
            // Nothing decodable to start from until the first keyframe.
            return;
        }
        st.gop.push_back(Arc::clone(frame));
        st.gop_bytes += frame.payload.len();
        if st.gop_bytes > config.gop_cache_max_bytes {
            // A GOP this long is not worth replaying: new viewers wait for
            // the next keyframe instead.
            st.gop.clear();
            st.gop_bytes = 0;
        }
    } else {
        st.gop.push_back(Arc::clone(frame));
        st.gop_bytes += frame.payload.len();
        while let Some(first) = st.gop.front() {
            let too_old = frame.dts.saturating_sub(first.dts) > config.audio_only_cache_ms;
            if too_old || st.gop_bytes > config.gop_cache_max_bytes {
                st.gop_bytes -= first.payload.len();
                st.gop.pop_front();
            } else {
                break;
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.hub.unpublish(&self.stream, self.id);
    }
}

/// One viewer's view of a channel.
pub struct Subscription {
    stream: Arc<Stream>,
    /// `None` while the viewer is served by the fan-out ([`Subscription::go_direct`]).
    rx: Option<broadcast::Receiver<Batch>>,
    backlog: VecDeque<Arc<Frame>>,
    cursor: Cursor,
    dropped: u64,
    frames_dropped: prometheus::IntCounter,
    closed: bool,
    hub: Option<Arc<Hub>>,
}

/// What [`Subscription::go_direct`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoDirect {
    /// The fan-out delivers from now on; the subscription is idle until
    /// [`Subscription::resume`].
    Armed,
    /// Frames are waiting (or the channel ended): read them first.
    Behind,
}

impl Subscription {
    /// The channel.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Frames this viewer skipped because it fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next frame; `None` when the channel has ended. Waits forever
    /// while the subscription is direct (call [`Subscription::resume`]).
    pub async fn recv(&mut self) -> Option<Arc<Frame>> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                return Some(f);
            }
            if self.closed {
                return None;
            }
            let Some(rx) = &mut self.rx else {
                return std::future::pending().await;
            };
            match rx.recv().await {
                Ok(batch) => self.unpack(&batch),
                // The next batch's sequence number tells how many were lost.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// The next frame if one is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Frame>> {
        loop {
            if let Some(f) = self.backlog.pop_front() {
                return Some(f);
            }
            if self.closed {
                return None;
            }
            let rx = self.rx.as_mut()?;
            match rx.try_recv() {
                Ok(batch) => self.unpack(&batch),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.closed = true;
                    return None;
                }
                Err(broadcast::error::TryRecvError::Empty) => return None,
            }
        }
    }

    /// Whether the fan-out delivers (since [`Subscription::go_direct`],
    /// until [`Subscription::resume`]).
    pub fn is_direct(&self) -> bool {
        self.rx.is_none() && !self.closed
    }

    /// Whether the channel has ended and every frame was delivered.
    pub fn is_closed(&self) -> bool {
        self.closed && self.backlog.is_empty()
    }

    /// Hands delivery to the channel's fan-out: `sink` gets every batch
    /// from here on, written by a shard task, until it leaves (its socket
    /// was full) and the owner calls [`Subscription::resume`] with the
    /// sink's cursor. Only when everything received so far was taken
    /// (`try_recv` gave `None`) and the channel is still open.
    pub fn go_direct(&mut self, sink: Arc<dyn DirectSink>) -> GoDirect {
        if !self.backlog.is_empty() || self.closed {
            return GoDirect::Behind;
        }
        let mut st = self.stream.state.lock();
        if st.tx.is_none() || st.next_seq != self.cursor.next_seq {
            return GoDirect::Behind;
        }
        if sink.arm(self.cursor) {
            let workers = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
            let shard = if st.shards.len() < workers.clamp(1, MAX_SHARDS) {
                let shard = Shard::spawn(&self.stream.name);
                st.shards.push(Arc::clone(&shard));
                shard
            } else {
                let least = st.shards.iter().min_by_key(|s| s.len()).expect("at least one shard");
                Arc::clone(least)
            };
            shard.register(sink);
        }
        // The ring would otherwise keep every batch alive for this
        // receiver that nobody reads.
        self.rx = None;
        GoDirect::Armed
    }

    /// Takes delivery back from the fan-out at `cursor` (the sink's): the
    /// batches since then come from the channel's recent ring, or, if the
    /// viewer fell further behind than that, it skips to a keyframe.
    pub fn resume(&mut self, cursor: Cursor) {
        let st = self.stream.state.lock();
        self.cursor = cursor;
        match &st.tx {
            Some(tx) => self.rx = Some(tx.subscribe()),
            None => self.closed = true,
        }
        let recent: Vec<Batch> = st.recent.iter().filter(|b| b.seq() >= cursor.next_seq).cloned().collect();
        let next_seq = st.next_seq;
        drop(st);
        for b in &recent {
            self.unpack(b);
        }
        if self.cursor.next_seq < next_seq {
            // Nothing left of what it missed (the ring moved on, or closed).
            self.lagged(next_seq - self.cursor.next_seq);
            self.cursor.next_seq = next_seq;
        }
    }

    fn lagged(&mut self, n: u64) {
        self.dropped += n;
        self.frames_dropped.inc_by(n);
        if self.stream.has_video() {
            self.cursor.waiting_for_key = true;
        }
        tracing::debug!(channel = %self.stream.name, skipped = n, "slow viewer skipped forward");
    }

    fn unpack(&mut self, batch: &Batch) {
        match self.cursor.step(batch.seq()) {
            Step::Seen => return,
            Step::Missed => {
                self.lagged(batch.seq() - self.cursor.next_seq);
                self.cursor.next_seq = batch.seq() + 1;
            }
            Step::Deliver => {}
        }
        for f in batch.frames() {
            if self.cursor.admit(f) {
                self.backlog.push_back(Arc::clone(f));
            } else {
                self.dropped += 1;
                self.frames_dropped.inc();
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Leave the count first, then see whether an idle entry (viewers
        // waiting for a publisher that never came) can go.
        self.rx = None;
        self.stream.state.lock().subscribers -= 1;
        if let Some(hub) = self.hub.take() {
            hub.release_idle(&self.stream);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
