//! Configuration of `westream serve`: a TOML file, overridden by flags,
//! validated on load with errors that name the key.
//!
//! Every field has a default, so an empty file is a working dev server on
//! loopback. Units are in the key names.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hub::HubConfig;

/// Errors loading a config. Each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message names it).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key and line.
        message: String,
    },
    /// A value that parsed but is not allowed.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners, data directory, shutdown.
    pub server: ServerConfig,
    /// RTMP ingest and play.
    pub rtmp: RtmpConfig,
    /// The stream hub.
    pub hub: HubSection,
    /// HTTP serving (HTTP-FLV, metrics).
    pub http: HttpConfig,
    /// HLS packaging.
    pub hls: HlsConfig,
    /// Channels and their secret stream keys, used when there is no
    /// `[control]` table.
    pub channels: Vec<ChannelConfig>,
    /// The embedded control plane (accounts, keys, ledger, packages). When
    /// present it decides publish and play and meters usage; see
    /// `westream_control::ControlConfig` for its keys.
    pub control: Option<westream_control::ControlConfig>,
    /// The origin's QUIC relay that edges pull channels from; see
    /// `westream_edge::RelayConfig` for its keys.
    pub relay: westream_edge::RelayConfig,
    /// The edge role (`westream edge`): origins, node token, location,
    /// capacity; see `westream_edge::EdgeConfig`. Ignored by `serve`.
    pub edge: Option<westream_edge::EdgeConfig>,
    /// The transcoder pool and which channels get which ladder.
    pub transcoder: crate::transcode::TranscoderSection,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// RTMP listen address (`--rtmp-listen`).
    pub rtmp_listen: String,
    /// HTTP listen address for media, `/metrics` and `/healthz` (`--http-listen`).
    pub http_listen: String,
    /// Where state lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout_ms: u64,
    /// This node's id in usage reports to the control plane.
    pub node_id: String,
    /// How often served bytes are reported to the control plane.
    pub usage_report_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            rtmp_listen: "127.0.0.1:1935".into(),
            http_listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            shutdown_timeout_ms: 3000,
            node_id: "origin-1".into(),
            usage_report_interval_ms: 5000,
        }
    }
}

/// `[rtmp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// RTMP application names served (`live` in `rtmp://host/live/KEY`).
    pub apps: Vec<String>,
    /// Outbound chunk size.
    pub chunk_size: u32,
    /// Largest inbound message (a video frame).
    pub max_message_bytes: u32,
    /// Largest inbound AMF command or data message.
    pub max_amf_bytes: u32,
    /// Time allowed for the handshake and connect.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed (publishers;
    /// players are closed when a write stalls for as long).
    pub idle_timeout_ms: u64,
    /// Most concurrent RTMP connections.
    pub max_connections: usize,
    /// Kernel send buffer per player (`SO_SNDBUF`), bytes; 0 keeps the
    /// kernel's autotuning. A smaller buffer bounds kernel memory per viewer
    /// and notices a stalled player sooner (it then catches up on its own,
    /// skipping to a keyframe if it fell a whole queue behind).
    pub send_buffer_bytes: usize,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            apps: vec!["live".into()],
            chunk_size: 4096,
            max_message_bytes: 8 * 1024 * 1024,
            max_amf_bytes: 64 * 1024,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections: 20_000,
            send_buffer_bytes: 0,
        }
    }
}

/// `[hub]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// How long a channel keeps its viewers after the publisher drops.
    pub publisher_grace_ms: u64,
    /// Largest GOP kept for fast start.
    pub gop_cache_max_bytes: usize,
    /// Frames a viewer may lag before it is skipped to the next keyframe.
    pub viewer_queue_frames: usize,
    /// Audio kept for new viewers of audio-only channels.
    pub audio_only_cache_ms: u64,
    /// Merged writes: frames wait for a batch until the oldest has waited
    /// this long (or a keyframe comes), so each viewer gets fewer, larger
    /// writes: less server CPU per GB, up to this much more latency. 0: a
    /// batch per video frame, audio riding with it. At most 100; default 35.
    /// An edge sends each burst from its origin on at once, whatever this is.
    pub merge_write_ms: u64,
}

impl Default for HubSection {
    fn default() -> Self {
        let d = HubConfig::default();
        HubSection {
            publisher_grace_ms: d.publisher_grace.as_millis() as u64,
            gop_cache_max_bytes: d.gop_cache_max_bytes,
            viewer_queue_frames: d.viewer_queue_frames,
            audio_only_cache_ms: d.audio_only_cache_ms,
            merge_write_ms: d.merge_write_ms,
        }
    }
}

impl HubSection {
    /// The hub's runtime config.
    pub fn to_hub_config(&self) -> HubConfig {
        HubConfig {
            publisher_grace: Duration::from_millis(self.publisher_grace_ms),
            gop_cache_max_bytes: self.gop_cache_max_bytes,
            viewer_queue_frames: self.viewer_queue_frames,
            audio_only_cache_ms: self.audio_only_cache_ms,
            merge_write_ms: self.merge_write_ms,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `Access-Control-Allow-Origin` on media responses.
    pub cors_allow_origin: String,
    /// A viewer whose socket accepts nothing for this long is dropped.
    pub write_timeout_ms: u64,
    /// The built web page (`npm --prefix web ci && npm --prefix web run
    /// build` writes it), served at `/` and `/assets/...`. A relative path
    /// is taken from the working directory; when the directory is missing,
    /// `/` answers a page that names the build command.
    pub web_dir: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { cors_allow_origin: "*".into(), write_timeout_ms: 30_000, web_dir: PathBuf::from("web/dist") }
    }
}

/// `[hls]`: the in-process MPEG-TS segmenter and its live playlists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Package every live channel as HLS (`/live/{channel}/index.m3u8`).
    pub enabled: bool,
    /// Target segment duration: a segment is cut at the first keyframe
    /// after this much media (audio-only streams cut on time).
    pub segment_duration_ms: u64,
    /// Segments listed in the live playlist.
    pub playlist_length: usize,
    /// Segments kept in memory beyond the playlist, for players behind.
    pub extra_segments_kept: usize,
    /// How long a finished playlist (with `EXT-X-ENDLIST`) stays served
    /// after its channel ended.
    pub ended_playlist_keep_ms: u64,
    /// Also write segments and the playlist under `{data_dir}/hls/{channel}/`.
    pub dvr_enabled: bool,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            enabled: true,
            segment_duration_ms: 2000,
            playlist_length: 6,
            extra_segments_kept: 4,
            ended_playlist_keep_ms: 60_000,
            dvr_enabled: false,
        }
    }
}

/// `[[channels]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Public name viewers use.
    pub name: String,
    /// Secret key the encoder publishes with.
    pub stream_key: String,
}

/// Whether `name` is a valid channel name: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Reads and parses a file (validation is separate, after flags apply).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })
    }

    /// The RTMP listen address.
    pub fn rtmp_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.rtmp_listen", &self.server.rtmp_listen)
    }

    /// The HTTP listen address.
    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.http_listen", &self.server.http_listen)
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.rtmp_addr()?;
        self.http_addr()?;
        if !valid_channel_name(&self.server.node_id) {
            return Err(invalid("server.node_id", "must be 1-64 of [A-Za-z0-9_-]"));
        }
        if !(100..=600_000).contains(&self.server.usage_report_interval_ms) {
            return Err(invalid("server.usage_report_interval_ms", "must be between 100 and 600000"));
        }
        self.transcoder.validate().map_err(|(key, reason)| invalid(key, reason))?;
        self.relay.validate().map_err(|e| invalid(e.key, e.message))?;
        if let Some(edge) = &self.edge {
            edge.validate().map_err(|e| invalid(e.key, e.message))?;
        }
        if let Some(control) = &self.control {
            control.validate().map_err(|e| invalid(e.key, e.message))?;
            if !self.channels.is_empty() {
                return Err(invalid("channels", "not used with [control]: seed channels in control.seed instead"));
            }
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        if self.http.web_dir.as_os_str().is_empty() {
            return Err(invalid("http.web_dir", "must not be empty (default: web/dist)"));
        }
        let r = &self.rtmp;
        if r.apps.is_empty() {
            return Err(invalid("rtmp.apps", "list at least one application"));
        }
        for app in &r.apps {
            if !valid_channel_name(app) {
                return Err(invalid("rtmp.apps", format!("'{app}' is not 1-64 of [A-Za-z0-9_-]")));
            }
        }
        if !(128..=65536).contains(&r.chunk_size) {
            return Err(invalid("rtmp.chunk_size", "must be between 128 and 65536"));
        }
        if !(64 * 1024..=16 * 1024 * 1024).contains(&r.max_message_bytes) {
            return Err(invalid("rtmp.max_message_bytes", "must be between 64 KiB and 16 MiB"));
        }
        if !(1024..=1024 * 1024).contains(&r.max_amf_bytes) {
            return Err(invalid("rtmp.max_amf_bytes", "must be between 1 KiB and 1 MiB"));
        }
        if r.handshake_timeout_ms == 0 {
            return Err(invalid("rtmp.handshake_timeout_ms", "must be positive"));
        }
        if r.idle_timeout_ms == 0 {
            return Err(invalid("rtmp.idle_timeout_ms", "must be positive"));
        }
        if r.max_connections == 0 {
            return Err(invalid("rtmp.max_connections", "must be positive"));
        }
        if self.hub.viewer_queue_frames < 16 {
            return Err(invalid("hub.viewer_queue_frames", "must be at least 16"));
        }
        if self.hub.gop_cache_max_bytes < 1024 * 1024 {
            return Err(invalid("hub.gop_cache_max_bytes", "must be at least 1 MiB"));
        }
        if self.hub.merge_write_ms > crate::hub::MAX_HOLD_MS {
            return Err(invalid("hub.merge_write_ms", format!("must be 0..={}", crate::hub::MAX_HOLD_MS)));
        }
        let h = &self.hls;
        if !(500..=30_000).contains(&h.segment_duration_ms) {
            return Err(invalid("hls.segment_duration_ms", "must be between 500 and 30000"));
        }
        if !(2..=100).contains(&h.playlist_length) {
            return Err(invalid("hls.playlist_length", "must be between 2 and 100"));
        }
        if h.extra_segments_kept > 1000 {
            return Err(invalid("hls.extra_segments_kept", "must be at most 1000"));
        }
        if h.ended_playlist_keep_ms > 24 * 3600 * 1000 {
            return Err(invalid("hls.ended_playlist_keep_ms", "must be at most 24 h"));
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            if !valid_channel_name(&c.name) {
                return Err(invalid(format!("channels[{i}].name"), "must be 1-64 of [A-Za-z0-9_-]"));
            }
            if c.stream_key.len() < 8 || c.stream_key.len() > 128 || !valid_channel_name_key(&c.stream_key) {
                return Err(invalid(format!("channels[{i}].stream_key"), "must be 8-128 of [A-Za-z0-9_-]"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(invalid(format!("channels[{i}].name"), format!("duplicate channel '{}'", c.name)));
            }
            if !keys.insert(c.stream_key.as_str()) {
                return Err(invalid(format!("channels[{i}].stream_key"), "duplicate stream key"));
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            if names.contains(c.stream_key.as_str()) {
                return Err(invalid(format!("channels[{i}].stream_key"), "a stream key must not be a channel name"));
            }
        }
        Ok(())
    }
}

fn valid_channel_name_key(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| invalid(key, format!("'{value}' is not an address like 127.0.0.1:1935 ({e})")))
}

/// Duration helper for millisecond keys.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_configs_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") && !path.file_name().unwrap().to_string_lossy().starts_with("ladders") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Keys for other roles (control, edge) are validated by their own crates.
                let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no configs found in {}", dir.display());
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("[server]\nrtmp_listn = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(err.contains("rtmp_listn"), "{err}");
    }

    #[test]
    fn bad_address_is_named_in_the_error() {
        let cfg = Config::parse("[server]\nhttp_listen = \"localhost-8080\"\n").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("server.http_listen"), "{err}");
    }

    #[test]
    fn hls_section_has_defaults_and_names_bad_keys() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.hls.segment_duration_ms, 2000);
        assert_eq!(cfg.hls.playlist_length, 6);
        assert!(!cfg.hls.dvr_enabled);
        let err = Config::parse("[hls]\nsegment_duration_ms = 10\n").unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("hls.segment_duration_ms"), "{err}");
        let err = Config::parse("[hls]\nsegment_ms = 2000\n").unwrap_err().to_string();
        assert!(err.contains("segment_ms"), "{err}");
    }

    #[test]
    fn merged_writes_default_to_35_ms_and_are_bounded() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.hub.to_hub_config().merge_write_ms, 35);
        let cfg = Config::parse("[hub]\nmerge_write_ms = 0\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.hub.to_hub_config().merge_write_ms, 0, "0 turns them off");
        let cfg = Config::parse("[hub]\nmerge_write_ms = 40\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.hub.to_hub_config().merge_write_ms, 40);
        let err = Config::parse("[hub]\nmerge_write_ms = 101\n").unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("hub.merge_write_ms"), "{err}");
    }

    #[test]
    fn empty_file_is_a_valid_loopback_server() {
        let cfg = Config::parse("").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.rtmp_addr().unwrap().port(), 1935);
    }

    #[test]
    fn duplicate_keys_and_keys_equal_to_channel_names_are_refused() {
        let dup = "[[channels]]\nname='a'\nstream_key='secret-1'\n[[channels]]\nname='b'\nstream_key='secret-1'\n";
        assert!(Config::parse(dup).unwrap().validate().unwrap_err().to_string().contains("channels[1].stream_key"));
        let clash = "[[channels]]\nname='secret-22'\nstream_key='secret-11'\n[[channels]]\nname='b'\nstream_key='secret-22'\n";
        assert!(Config::parse(clash).unwrap().validate().is_err());
    }
}
