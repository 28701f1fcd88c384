//! Errors of the transcoder layer.

use std::io;

/// A ladders or pool config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file (or `<string>`).
        path: String,
        /// The TOML error, which names the line and key.
        source: toml::de::Error,
    },
    /// A value is out of range; `key` is its dotted path.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `ladders.default.renditions[1].height`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why ffmpeg cannot be used: said once at startup, then transcoding is off
/// and streams are served as passthrough.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No file at the configured path, or not on `PATH`.
    #[error("ffmpeg not found at {path:?} (set transcoder.ffmpeg_path or install ffmpeg)")]
    NotFound {
        /// The configured path.
        path: String,
    },
    /// The binary exists but could not be run.
    #[error("cannot run ffmpeg at {path:?}: {source}")]
    Spawn {
        /// The configured path.
        path: String,
        /// The spawn error.
        source: io::Error,
    },
    /// `ffmpeg -version` did not answer in time.
    #[error("ffmpeg at {path:?} did not answer -version within {timeout_ms} ms")]
    Timeout {
        /// The configured path.
        path: String,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// It ran but did not print an ffmpeg version line.
    #[error("{path:?} does not look like ffmpeg (no version line; exit {status})")]
    NotFfmpeg {
        /// The configured path.
        path: String,
        /// Its exit status.
        status: String,
    },
    /// This build lacks an encoder the ladder needs (e.g. a build without libx264).
    #[error("ffmpeg {version} at {path:?} has no {encoder} encoder")]
    MissingEncoder {
        /// The configured path.
        path: String,
        /// The version it reported.
        version: String,
        /// `libx264` or `aac`.
        encoder: &'static str,
    },
}

/// A request to the pool that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The channel already has a job (running, restarting or queued).
    #[error("channel {channel} already has a transcode job")]
    AlreadyActive {
        /// The channel.
        channel: String,
    },
    /// A job with no outputs (a passthrough ladder, or a source smaller than every rung).
    #[error("channel {channel}: nothing to transcode")]
    NoOutputs {
        /// The channel.
        channel: String,
    },
    /// No job for this channel.
    #[error("channel {channel} has no transcode job")]
    UnknownChannel {
        /// The channel.
        channel: String,
    },
    /// Downgrading would leave no rendition; stop the job instead.
    #[error("channel {channel}: already at its last rendition")]
    CannotDowngrade {
        /// The channel.
        channel: String,
    },
}
