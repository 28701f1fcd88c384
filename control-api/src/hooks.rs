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
}
