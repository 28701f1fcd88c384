//! The transcoder side of the origin: when a channel with a ladder goes
//! live, one ffmpeg worker from the pool (`westream-transcoder`) plays it
//! over loopback RTMP and publishes each rendition back as an ordinary
//! channel `{channel}_{rendition}`, so packaging, metering and edges need no
//! special case.
//!
//! Renditions are published on an internal path: the stream key is
//! `{INTERNAL_PREFIX}{token}.{channel}_{rendition}` with a random token made
//! at start-up, which never leaves the process. Nobody else can publish a
//! rendition name: the RTMP layer refuses any grant of one that did not come
//! through that path.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use westream_transcoder::{
    plan_renditions, EncodeOptions, JobState, KeyframePolicy, LaddersConfig, PoolConfig, RenditionOutput,
    TranscodeJob, TranscoderPool, PASSTHROUGH,
};

use crate::hls::avc::AvcDecoderConfig;
use crate::hub::Hub;

/// Stream-key prefix of the internal rendition publish path.
pub const INTERNAL_PREFIX: &str = "__rendition__.";

/// `[transcoder]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscoderSection {
    /// Transcode at all (a channel still needs a ladder other than `passthrough`).
    pub enabled: bool,
    /// The ladders file (see configs/ladders.toml). Relative paths are from
    /// the working directory; a missing file falls back to the built-in copy.
    pub ladders_file: PathBuf,
    /// Ladder for channels not listed in `channel_ladders`.
    pub default_ladder: String,
    /// Per channel ladder name, e.g. `{ demo = "default" }`.
    pub channel_ladders: BTreeMap<String, String>,
    /// Where renditions put keyframes: `source` (default) copies the
    /// source's keyframes and timestamps, so every rendition's HLS segments
    /// are cut where the source's are and carry the same media sequence
    /// numbers; `interval` forces one every `keyframe_interval_ms` instead
    /// (for sources with very long or irregular GOPs; segments then line up
    /// across renditions but not with the source).
    pub keyframes: KeyframeMode,
    /// Keyframe interval of every rendition with `keyframes = "interval"`
    /// (align it with the HLS segment duration, or a divisor of it).
    pub keyframe_interval_ms: u64,
    /// How long to wait for a new channel's video header before giving up on
    /// transcoding it.
    pub source_wait_ms: u64,
    /// The worker pool: slots, ffmpeg path, backoff.
    pub pool: PoolConfig,
}

impl Default for TranscoderSection {
    fn default() -> Self {
        TranscoderSection {
            enabled: true,
            ladders_file: PathBuf::from("configs/ladders.toml"),
            default_ladder: PASSTHROUGH.to_string(),
            channel_ladders: BTreeMap::new(),
            keyframes: KeyframeMode::Source,
            keyframe_interval_ms: 2000,
            source_wait_ms: 5000,
            pool: PoolConfig::default(),
        }
    }
}

/// `transcoder.keyframes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyframeMode {
    /// Keyframes where the source has them, on the source's timestamps.
    Source,
    /// A keyframe every `keyframe_interval_ms`.
    Interval,
}

/// The built-in ladders, used when `ladders_file` does not exist.
const BUILTIN_LADDERS: &str = include_str!("../../configs/ladders.toml");

impl TranscoderSection {
    /// Loads the ladders this section names.
    pub fn ladders(&self) -> Result<LaddersConfig, String> {
        if self.ladders_file.exists() {
            LaddersConfig::load(&self.ladders_file).map_err(|e| e.to_string())
        } else {
            LaddersConfig::from_toml_str(BUILTIN_LADDERS).map_err(|e| e.to_string())
        }
    }

    /// Checks keys; the error is `(key, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.pool.validate("transcoder.pool").map_err(|e| ("transcoder.pool".to_string(), e.to_string()))?;
        let ladders = self.ladders().map_err(|e| ("transcoder.ladders_file".to_string(), e))?;
        if ladders.ladder(&self.default_ladder).is_none() {
            return Err(("transcoder.default_ladder".into(), format!("no ladder '{}'", self.default_ladder)));
        }
        for (channel, ladder) in &self.channel_ladders {
            if ladders.ladder(ladder).is_none() {
                return Err((format!("transcoder.channel_ladders.{channel}"), format!("no ladder '{ladder}'")));
            }
        }
        if !(250..=10_000).contains(&self.keyframe_interval_ms) {
            return Err(("transcoder.keyframe_interval_ms".into(), "must be between 250 and 10000".into()));
        }
        Ok(())
    }
}

/// Transcoding for the whole origin.
pub struct Transcoding {
    pool: Option<TranscoderPool>,
    ladders: LaddersConfig,
    config: TranscoderSection,
    token: String,
    rendition_names: HashSet<String>,
    /// Active renditions per source channel, highest first.
    active: DashMap<String, Vec<String>>,
}

impl Transcoding {
    /// Sets up the pool (or explains once why transcoding is off) and starts
    /// following channels that go live.
    pub async fn start(
        hub: Arc<Hub>,
        live: tokio::sync::broadcast::Receiver<String>,
        config: TranscoderSection,
        rtmp_addr: SocketAddr,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Transcoding> {
        let ladders = config.ladders().unwrap_or_else(|e| {
            tracing::error!(error = %e, "ladders unreadable; transcoding is off");
            LaddersConfig::from_toml_str("[ladders.passthrough]\n").unwrap_or_else(|_| unreachable!())
        });
        let rendition_names = ladders_rendition_names(&ladders);
        let wants_work = config.enabled
            && (config.default_ladder != PASSTHROUGH || config.channel_ladders.values().any(|l| l != PASSTHROUGH));
        let pool = if !wants_work {
            tracing::info!("transcoding is off: no channel has a ladder (transcoder.default_ladder / channel_ladders)");
            None
        } else {
            match TranscoderPool::probe_ffmpeg(&config.pool.ffmpeg_path).await {
                Err(e) => {
                    tracing::warn!(reason = %e, "transcoding is off: every channel is served as passthrough");
                    None
                }
                Ok(version) => match TranscoderPool::new(config.pool.clone(), &hub.metrics().registry) {
                    Ok(pool) => {
                        tracing::info!(%version, slots = pool.slots(), "transcoder pool ready");
                        Some(pool)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "transcoder metrics could not register; transcoding is off");
                        None
                    }
                },
            }
        };
        let token = random_token();
        let mut live = live;
        let t = Arc::new(Transcoding { pool, ladders, config, token, rendition_names, active: DashMap::new() });
        if t.pool.is_some() {
            let me = Arc::clone(&t);
            let tasks2 = tasks.clone();
            tasks.spawn(async move {
                loop {
                    let channel = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        c = live.recv() => match c {
                            Ok(c) => c,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        },
                    };
                    if me.split_rendition(&channel).1.is_some() {
                        continue;
                    }
                    let me = Arc::clone(&me);
                    let hub = Arc::clone(&hub);
                    let stop = shutdown.clone();
                    tasks2.spawn(async move { me.run_channel(hub, channel, rtmp_addr, stop).await });
                }
                if let Some(pool) = &me.pool {
                    pool.shutdown().await;
                }
            });
        }
        t
    }

    /// The pool, when transcoding is on.
    pub fn pool(&self) -> Option<&TranscoderPool> {
        self.pool.as_ref()
    }

    /// Active renditions of a source channel, highest first.
    pub fn renditions(&self, channel: &str) -> Vec<String> {
        self.active.get(channel).map(|v| v.clone()).unwrap_or_default()
    }

    /// `demo_480p` -> (`demo`, Some(`480p`)) when `480p` is a rendition name.
    pub fn split_rendition<'a>(&self, name: &'a str) -> (&'a str, Option<&'a str>) {
        split_rendition(&self.rendition_names, name)
    }

    /// The channel an internal rendition key publishes, if the key is ours.
    pub fn internal_grant(&self, stream_key: &str) -> Option<String> {
        let rest = stream_key.strip_prefix(INTERNAL_PREFIX)?;
        let (token, channel) = rest.split_once('.')?;
        if !constant_time_eq(token.as_bytes(), self.token.as_bytes()) {
            return None;
        }
        self.split_rendition(channel).1.is_some().then(|| channel.to_string())
    }

    /// Whether a play name (`channel?internal=TOKEN`) is our own worker's.
    pub fn is_internal_play(&self, name: &str) -> bool {
        name.split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("internal=")))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), self.token.as_bytes()))
    }

    async fn run_channel(self: Arc<Self>, hub: Arc<Hub>, channel: String, rtmp: SocketAddr, stop: CancellationToken) {
        let ladder_name = self.config.channel_ladders.get(&channel).unwrap_or(&self.config.default_ladder).clone();
        let Some(ladder) = self.ladders.ladder(&ladder_name).cloned() else { return };
        if ladder.is_passthrough() {
            return;
        }
        let Some(pool) = &self.pool else { return };
        // The source size comes from its SPS; wait for the header.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.source_wait_ms);
        let (width, height) = loop {
            let header = hub.live(&channel).and_then(|s| s.video_header());
            if let Some(size) = header.and_then(|h| source_size(&h.payload)) {
                break size;
            }
            if tokio::time::Instant::now() > deadline || hub.live(&channel).is_none() {
                tracing::info!(%channel, "no video header in time: not transcoded");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let planned = plan_renditions(&ladder, width, height);
        if planned.is_empty() {
            tracing::info!(%channel, width, height, "every rendition is above the source: not transcoded");
            return;
        }
        let outputs: Vec<RenditionOutput> = planned
            .into_iter()
            .map(|p| {
                let url = format!("rtmp://{rtmp}/live/{INTERNAL_PREFIX}{}.{channel}_{}", self.token, p.rendition.name);
                RenditionOutput { rendition: p, url }
            })
            .collect();
        let names: Vec<String> = outputs.iter().map(|o| o.rendition.rendition.name.clone()).collect();
        let job = TranscodeJob {
            channel: channel.clone(),
            input_url: format!("rtmp://{rtmp}/live/{channel}?internal={}", self.token),
            outputs,
            options: match self.config.keyframes {
                KeyframeMode::Source => {
                    EncodeOptions { keyframes: KeyframePolicy::Source, copy_timestamps: true, ..EncodeOptions::default() }
                }
                KeyframeMode::Interval => EncodeOptions {
                    keyframes: KeyframePolicy::EveryMs(self.config.keyframe_interval_ms as u32),
                    ..EncodeOptions::default()
                },
            },
        };
        if let Err(e) = pool.start(job) {
            tracing::warn!(%channel, error = %e, "transcode job not started");
            return;
        }
        tracing::info!(%channel, ladder = %ladder_name, renditions = ?names, width, height, "transcoding");
        self.active.insert(channel.clone(), names);
        // Until the source ends (its grace period included), or shutdown.
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if hub.live(&channel).is_none() {
                        break;
                    }
                }
            }
        }
        self.active.remove(&channel);
        pool.stop(&channel).await;
        tracing::info!(%channel, "transcoding stopped");
    }
}

/// `GET /transcoder/jobs`: the pool's slots and every job, running or
/// queued (with its 1-based queue position), for operators and dashboards.
pub async fn jobs(
    axum::extract::State(ctx): axum::extract::State<Arc<crate::http::HttpContext>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let t = &ctx.transcoding;
    let jobs: Vec<serde_json::Value> = t
        .pool
        .as_ref()
        .map(|p| p.status())
        .unwrap_or_default()
        .into_iter()
        .map(|j| {
            let mut v = serde_json::json!({ "channel": j.channel, "slot": j.slot, "renditions": j.renditions });
            let state = match j.state {
                JobState::Running { pid, speed, window_speed, fps, out_time_ms, lag_ms, slow } => serde_json::json!({
                    "state": "running", "pid": pid, "speed": speed, "window_speed": window_speed, "fps": fps,
                    "out_time_ms": out_time_ms, "lag_ms": lag_ms, "slow": slow,
                }),
                JobState::Queued { position } => serde_json::json!({ "state": "queued", "position": position }),
                JobState::Restarting { attempt } => serde_json::json!({ "state": "restarting", "attempt": attempt }),
            };
            if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), state) {
                v.extend(extra);
            }
            v
        })
        .collect();
    let body = serde_json::json!({
        "enabled": t.pool.is_some(),
        "slots": t.pool.as_ref().map_or(0, |p| p.slots()),
        "jobs": jobs,
    });
    axum::Json(body).into_response()
}

fn ladders_rendition_names(ladders: &LaddersConfig) -> HashSet<String> {
    ladders.ladders.values().flat_map(|l| l.renditions.iter().map(|r| r.name.clone())).collect()
}

/// `name` split at its last `_` when the suffix is a rendition name.
pub fn split_rendition<'a>(names: &HashSet<String>, name: &'a str) -> (&'a str, Option<&'a str>) {
    match name.rsplit_once('_') {
        Some((base, r)) if !base.is_empty() && names.contains(r) => (base, Some(r)),
        _ => (name, None),
    }
}

/// Width and height from an FLV AVC sequence header body.
fn source_size(body: &[u8]) -> Option<(u32, u32)> {
    let record = body.get(5..)?;
    let info = AvcDecoderConfig::parse(record).ok()?.sps_info().ok()?;
    Some((info.width, info.height))
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendition_suffix_splits_only_for_known_names() {
        let names: HashSet<String> = ["480p".to_string(), "720p".to_string()].into();
        assert_eq!(split_rendition(&names, "demo_480p"), ("demo", Some("480p")));
        assert_eq!(split_rendition(&names, "my_show_720p"), ("my_show", Some("720p")));
        assert_eq!(split_rendition(&names, "demo_hd"), ("demo_hd", None));
        assert_eq!(split_rendition(&names, "_480p"), ("_480p", None));
        assert_eq!(split_rendition(&names, "demo"), ("demo", None));
    }

    #[test]
    fn builtin_ladders_parse() {
        let s = TranscoderSection::default();
        assert!(LaddersConfig::from_toml_str(BUILTIN_LADDERS).is_ok());
        s.validate().unwrap();
    }

    #[test]
    fn tokens_differ_and_compare_in_constant_time() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
    }
}
