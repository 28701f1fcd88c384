//! HLS packaging (DESIGN.md §3): an in-process MPEG-TS segmenter per live
//! channel, live playlists, segments served from memory.
//!
//! Shape: [`HlsPackager::start`] listens to the hub for channels going live
//! and runs one segmenter task per channel. The task is an ordinary hub
//! subscriber (it never slows the publisher; if it lags, the hub skips it to
//! a keyframe and the playlist marks a discontinuity). It feeds frames to
//! the sans-IO [`segmenter::Segmenter`] and pushes finished segments into
//! the channel's [`playlist::ChannelPlaylist`], which the HTTP handlers
//! ([`http`]) read. When the channel ends, its playlist gains
//! `EXT-X-ENDLIST` and is served for `ended_playlist_keep_ms`, then dropped;
//! a channel that comes back later starts fresh.
//!
//! Media sequence numbers start at the Unix time in seconds when the
//! channel goes live, so a later broadcast of the same channel never reuses
//! a segment URL that a cache may still hold. A transcoded rendition
//! (`{channel}_{rendition}`, told apart by [`HlsPackager::set_source_of`])
//! follows its source's segment starts and numbers (see
//! [`segmenter::CutLog`]), so a segment `N` of every rendition covers the
//! same span of the broadcast as the source's segment `N`.

pub mod aac;
pub mod avc;
pub mod fast_path;
pub mod http;
pub mod memfd;
pub mod playlist;
pub mod segmenter;
pub mod ts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::RwLock;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ms, valid_channel_name, HlsConfig};
use crate::hub::{Hub, Stream};
use crate::metrics::Metrics;
use playlist::ChannelPlaylist;
use segmenter::{CutLog, Segment, Segmenter};

/// Maps a rendition channel to its source channel; `None` for a source.
pub type SourceOf = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// HLS metrics, registered in the media server's registry.
#[derive(Clone)]
pub struct HlsMetrics {
    /// Segments produced.
    pub segments: IntCounter,
    /// Segment durations.
    pub segment_duration: Histogram,
    /// Requests by kind (`master`, `media`, `segment`, `other`) and result.
    pub requests: IntCounterVec,
    /// The series of `requests`, resolved once (no label lookup per request).
    pub counters: RequestCounters,
}

/// The `kind` label of `westream_hls_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `index.m3u8`
    Master,
    /// `{rendition}.m3u8`
    Media,
    /// `{n}.ts`
    Segment,
    /// Anything else under `/live/{channel}/`.
    Other,
}

/// The `result` label of `westream_hls_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// Served.
    Ok,
    /// Refused by the play authorization.
    Denied,
    /// No such channel, rendition or segment.
    NotFound,
}

/// Every (kind, result) series of the request counter.
#[derive(Clone)]
pub struct RequestCounters([[IntCounter; 3]; 4]);

impl RequestCounters {
    fn new(requests: &IntCounterVec) -> RequestCounters {
        let row = |kind| {
            ["ok", "denied", "not_found"].map(|result| requests.with_label_values(&[kind, result]))
        };
        RequestCounters(["master", "media", "segment", "other"].map(row))
    }

    /// The counter of one kind and result.
    pub fn get(&self, kind: RequestKind, result: RequestResult) -> &IntCounter {
        &self.0[kind as usize][result as usize]
    }
}

impl HlsMetrics {
    fn new(metrics: &Metrics) -> HlsMetrics {
        let segments = IntCounter::new("westream_hls_segments_total", "HLS segments produced").expect("valid metric");
        let segment_duration = Histogram::with_opts(
            HistogramOpts::new("westream_hls_segment_duration_seconds", "Duration of produced HLS segments")
                .buckets(vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0]),
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new("westream_hls_requests_total", "HLS requests by kind and result"),
            &["kind", "result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(segments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(segment_duration.clone()),
            Box::new(requests.clone()),
        ] {
            // A second packager on one registry (tests) keeps the first's series.
            if let Err(e) = metrics.registry.register(c) {
                tracing::debug!(error = %e, "hls metric already registered");
            }
        }
        let counters = RequestCounters::new(&requests);
        HlsMetrics { segments, segment_duration, requests, counters }
    }
}

/// One channel being (or recently) packaged.
#[derive(Clone)]
pub struct ChannelEntry {
    /// Its playlists and segments.
    pub playlist: Arc<RwLock<ChannelPlaylist>>,
    /// The hub stream it follows (for metering served bytes).
    pub stream: Arc<Stream>,
    /// Where its segments started, for its renditions to follow.
    pub cuts: Arc<CutLog>,
}

/// The HLS side of the server: the channels and what the handlers share.
pub struct HlsPackager {
    hub: Arc<Hub>,
    config: HlsConfig,
    data_dir: PathBuf,
    channels: DashMap<String, ChannelEntry>,
    source_of: std::sync::OnceLock<SourceOf>,
    metrics: HlsMetrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl HlsPackager {
    /// Starts following the hub. Subscribes before returning, so a channel
    /// published right after this call is not missed.
    pub fn start(
        hub: Arc<Hub>,
        config: HlsConfig,
        data_dir: PathBuf,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<HlsPackager> {
        let went_live = hub.subscribe_went_live();
        let metrics = HlsMetrics::new(hub.metrics());
        let packager = Arc::new(HlsPackager {
            hub,
            config,
            data_dir,
            channels: DashMap::new(),
            source_of: std::sync::OnceLock::new(),
            metrics,
            shutdown,
            tasks: tasks.clone(),
        });
        tasks.spawn(Arc::clone(&packager).run(went_live));
        packager
    }

    /// Tells renditions from sources (set once, before publishers connect):
    /// a rendition's segments follow its source's.
    pub fn set_source_of(&self, source_of: SourceOf) {
        if self.source_of.set(source_of).is_err() {
            tracing::warn!("hls: rendition mapping set twice; keeping the first");
        }
    }

    /// The packaging settings.
    pub fn config(&self) -> &HlsConfig {
        &self.config
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// HLS metrics.
    pub fn metrics(&self) -> &HlsMetrics {
        &self.metrics
    }

    /// The channel's HLS state, if it is live or ended recently.
    pub fn channel(&self, name: &str) -> Option<ChannelEntry> {
        self.channels.get(name).map(|e| e.clone())
    }

    async fn run(self: Arc<Self>, mut went_live: broadcast::Receiver<String>) {
        for info in self.hub.live_streams() {
            self.follow(&info.name);
        }
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                e = went_live.recv() => e,
            };
            match event {
                Ok(name) => self.follow(&name),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "hls: live events lagged, rescanning the hub");
                    for info in self.hub.live_streams() {
                        self.follow(&info.name);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Starts a segmenter for `name` unless one already follows its stream.
    fn follow(self: &Arc<Self>, name: &str) {
        let Some(stream) = self.hub.live(name) else { return };
        if self.channels.get(name).is_some_and(|e| Arc::ptr_eq(&e.stream, &stream)) {
            return;
        }
        let Some(sub) = stream.subscribe(self.hub.metrics()) else { return };
        let c = &self.config;
        let playlist = Arc::new(RwLock::new(ChannelPlaylist::new(
            name,
            c.segment_duration_ms,
            c.playlist_length,
            c.extra_segments_kept,
        )));
        let entry = ChannelEntry { playlist, stream, cuts: Arc::new(CutLog::default()) };
        let leader = self
            .source_of
            .get()
            .and_then(|f| f(name))
            .and_then(|source| self.channels.get(&source).map(|e| Arc::clone(&e.cuts)));
        // A channel that comes back after it ended starts fresh.
        self.channels.insert(name.to_string(), entry.clone());
        let span = tracing::info_span!("hls", channel = %name);
        self.tasks.spawn(Arc::clone(self).segment_channel(sub, entry, leader).instrument(span));
    }

    async fn segment_channel(
        self: Arc<Self>,
        mut sub: crate::hub::Subscription,
        entry: ChannelEntry,
        leader: Option<Arc<CutLog>>,
    ) {
        let first_sequence = unix_ms() / 1000;
        let mut segmenter =
            Segmenter::new(self.config.segment_duration_ms, first_sequence).with_log(Arc::clone(&entry.cuts));
        if let Some(leader) = leader {
            tracing::info!("hls: a rendition; following its source's segments");
            segmenter = segmenter.follow(leader);
        }
        let mut dropped = sub.dropped();
        tracing::info!(first_sequence, "hls segmenter started");
        loop {
            let frame = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                f = sub.recv() => f,
            };
            let Some(frame) = frame else { break };
            if sub.dropped() != dropped {
                dropped = sub.dropped();
                if let Some(s) = segmenter.handle_gap() {
                    self.publish(&entry, s);
                }
                // An empty gap still marks the next segment.
            }
            if let Some(s) = segmenter.handle_frame(&frame, unix_ms()) {
                self.publish(&entry, s);
            }
        }
        drop(sub);
        if let Some(s) = segmenter.finish() {
            self.publish(&entry, s);
        }
        entry.playlist.write().end();
        self.write_dvr_playlist(&entry);
        tracing::info!(skipped = ?segmenter.skipped, "hls stream ended; playlist kept with ENDLIST");
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = tokio::time::sleep(ms(self.config.ended_playlist_keep_ms)) => {}
        }
        let name = entry.playlist.read().channel().to_string();
        self.channels.remove_if(&name, |_, e| Arc::ptr_eq(&e.playlist, &entry.playlist));
    }

    fn publish(&self, entry: &ChannelEntry, segment: Segment) {
        self.metrics.segments.inc();
        self.metrics.segment_duration.observe(segment.duration_ms as f64 / 1000.0);
        tracing::debug!(
            sequence = segment.sequence,
            duration_ms = segment.duration_ms,
            bytes = segment.data.len(),
            discontinuity = segment.discontinuity,
            "hls segment"
        );
        let dvr = self.config.dvr_enabled.then(|| (segment.sequence, segment.data.clone()));
        // Sealed before the lock is taken: the copy costs a syscall and a
        // memcpy, readers should not wait for it.
        let file = match memfd::SealedFile::new(&format!("hls-{}", segment.sequence), &segment.data) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "hls segment not sealed; it is served by copy");
                None
            }
        };
        entry.playlist.write().push_with_file(segment, file);
        if let Some((sequence, data)) = dvr {
            self.write_dvr(entry, format!("{sequence}.ts"), data);
            self.write_dvr_playlist(entry);
        }
    }

    fn write_dvr_playlist(&self, entry: &ChannelEntry) {
        if !self.config.dvr_enabled {
            return;
        }
        let text = entry.playlist.read().media_playlist();
        if let Some(text) = text {
            self.write_dvr(entry, format!("{}.m3u8", playlist::SOURCE_RENDITION), text);
        }
    }

    /// Writes one file under `{data_dir}/hls/{channel}/`, off the segmenter
    /// task. Names are ours (numbers and fixed names), the channel name is
    /// checked again, so nothing from a request reaches the filesystem.
    fn write_dvr(&self, entry: &ChannelEntry, file: String, data: bytes::Bytes) {
        let channel = entry.playlist.read().channel().to_string();
        if !valid_channel_name(&channel) {
            return;
        }
        let dir = self.data_dir.join("hls").join(&channel);
        self.tasks.spawn(async move {
            let write = async {
                tokio::fs::create_dir_all(&dir).await?;
                let tmp = dir.join(format!(".{file}.tmp"));
                tokio::fs::write(&tmp, &data).await?;
                tokio::fs::rename(&tmp, dir.join(&file)).await
            };
            if let Err(e) = write.await {
                tracing::warn!(%channel, file, error = %e, "hls dvr write failed");
            }
        });
    }
}

/// Wall clock, ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
