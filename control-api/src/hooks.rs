//! The small trait between the media path and the control plane.
//!
//! Contract: implementations answer from memory or a short cache wherever
//! they can; the media path awaits them only at connection set-up (publish,
//! play), never per frame. A denial carries a reason that is safe to show
//! to the client (it never echoes a stream key).

use std::net::SocketAddr;

/// Which protocol a viewer uses; for play authorization and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayProtocol {
    /// RTMP play.
    Rtmp,
    /// HTTP-FLV.
    Flv,
    /// HLS playlists and segments.
    Hls,
}

impl PlayProtocol {
    /// Stable lowercase label, used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PlayProtocol::Rtmp => "rtmp",
            PlayProtocol::Flv => "flv",
            PlayProtocol::Hls => "hls",
        }
    }
}

/// A publisher asks to go live.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// RTMP application name (`live` in `rtmp://host/live/KEY`).
    pub app: String,
    /// The secret stream key the encoder sent as the stream name.
    pub stream_key: String,
    /// The encoder's address, when known.
    pub client_addr: Option<SocketAddr>,
}

/// A publish that was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishGrant {
    /// The public channel name viewers use; never the key.
    pub channel: String,
}

/// A viewer asks to play a channel.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    /// RTMP application name, or `live` for HTTP paths.
    pub app: String,
    /// The public channel name (possibly with a rendition suffix later).
    pub channel: String,
    /// A play token from the URL (`?token=`), for ticketed streams.
    pub token: Option<String>,
    /// Which protocol the viewer uses.
    pub protocol: PlayProtocol,
    /// The viewer's address, when known.
    pub client_addr: Option<SocketAddr>,
}

/// Why a publish or play was refused. The `Display` text is shown to the
/// client (RTMP status description, HTTP body), so it must not contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The stream key is not known (or was revoked).
    #[error("unknown or revoked stream key")]
    UnknownKey,
    /// The RTMP application is not one this server serves.
    #[error("unknown application '{app}'")]
    UnknownApp {
        /// The application name the client sent.
        app: String,
    },
    /// The channel does not exist.
    #[error("unknown channel '{channel}'")]
    UnknownChannel {
        /// The channel name the client asked for.
        channel: String,
    },
    /// The channel's owner has no bandwidth left.
    #[error("no bandwidth package left for channel '{channel}': buy one to go live")]
    NoBandwidth {
        /// The channel.
        channel: String,
    },
    /// Any other policy refusal, with a reason for the client.
    #[error("{0}")]
    Forbidden(String),
    /// The control plane could not be reached; retrying may help.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
}

impl Denied {
    /// A short, bounded label for the `reason` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Denied::UnknownKey => "unknown_key",
            Denied::UnknownApp { .. } => "unknown_app",
            Denied::UnknownChannel { .. } => "unknown_channel",
            Denied::NoBandwidth { .. } => "no_bandwidth",
            Denied::Forbidden(_) => "forbidden",
            Denied::Unavailable(_) => "unavailable",
        }
    }
}

/// What the media path asks of the control plane.
#[async_trait::async_trait]
pub trait MediaHooks: Send + Sync + 'static {
    /// Maps a stream key to the channel it may publish, or says why not.
    async fn authorize_publish(&self, req: &PublishRequest) -> Result<PublishGrant, Denied>;

    /// Says whether a viewer may play a channel. `Ok` for a channel that
    /// exists but is not live yet: the caller decides what to do then.
    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied>;

    /// Reports one metering batch. A batch is counted once per
    /// `(node_id, batch_seq)`, so the caller may retry it freely until it
    /// gets `Ok`. The receipt carries the stop orders that concern the
    /// channels in the batch. The default counts nothing (config-only auth).
    async fn report_usage(&self, batch: &UsageBatch) -> Result<UsageReceipt, ReportError> {
        let _ = batch;
        Ok(UsageReceipt::default())
    }

    /// Every stop order in force: the node warns the publisher at once and
    /// ends the stream at `stop_at_ms`. Nodes poll this (or read the receipt
    /// of [`MediaHooks::report_usage`]); the default has none.
    async fn stop_orders(&self) -> Result<Vec<StopOrder>, ReportError> {
        Ok(Vec::new())
    }
}

/// Usage of one channel on one node during one metering interval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelUsage {
    /// The public channel name.
    pub channel: String,
    /// Bytes sent to viewers (all protocols). This is what packages pay for.
    pub bytes_out: u64,
    /// Bytes received from the publisher (metered, charged only if configured).
    pub bytes_in: u64,
    /// Sum over viewers of seconds watched in the interval.
    pub viewer_seconds: u64,
}

/// One idempotent metering report from a media node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// Stable id of the reporting node (origin or edge).
    pub node_id: String,
    /// The idempotency key with `node_id`: a retry resends the same number
    /// and content. It must never repeat for other content, also across a
    /// node restart (start it at the boot time in ms, or persist it): a
    /// reused number with other content is refused as a conflict.
    pub batch_seq: u64,
    /// Per-channel counters for the interval.
    pub channels: Vec<ChannelUsage>,
    /// Watch sessions of signed-in viewers that ended since the last batch
    /// (rewards: watch time and plays); counted once, with the batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchSession>,
}

/// Most watch sessions one batch may carry: about 150 bytes of JSON each,
/// so a full batch stays far below the API's 2 MB body limit (a batch the
/// control plane refused would be retried forever).
pub const MAX_BATCH_WATCH_SESSIONS: usize = 2_000;

/// One ended watch session of a viewer who played with a viewer token
/// (`?viewer=` from `GET /v1/accounts/me/viewer-token`). The media node
/// passes the token through unread; the control plane checks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSession {
    /// The viewer token as the player sent it.
    pub viewer: String,
    /// The source channel watched.
    pub channel: String,
    /// `rtmp`, `flv` or `hls`.
    pub protocol: String,
    /// How long media was delivered, ms.
    pub watched_ms: u64,
}

/// An order to end a live stream whose owner ran out of bandwidth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StopOrder {
    /// The channel to stop.
    pub channel: String,
    /// Safe to show to the publisher (no secrets).
    pub reason: String,
    /// When the order was issued (unix ms): warn the publisher now.
    pub issued_at_ms: u64,
    /// When the stream must end (unix ms): issued time plus the grace period.
    pub stop_at_ms: u64,
}

/// What the control plane answers to a usage batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageReceipt {
    /// True when this batch had been counted before (a retry).
    pub duplicate: bool,
    /// Stop orders in force for channels of this batch.
    pub stop_orders: Vec<StopOrder>,
    /// Unexpired package bytes the owner of each known channel of the
    /// batch has left after it was counted (for warnings and metrics).
    #[serde(default)]
    pub bytes_remaining: std::collections::BTreeMap<String, i64>,
}

/// Why a usage report or a stop-order poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The control plane could not be reached or failed; retry the same batch.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The control plane refused the batch (bad node token, a sequence number
    /// reused for different content); retrying the same batch will not help.
    #[error("usage batch rejected: {0}")]
    Rejected(String),
}
