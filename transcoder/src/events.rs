//! Typed pool events: each one is logged and counted in one place
//! ([`PoolEvent::record`]) and broadcast to subscribers (the server uses them
//! to publish or drop renditions and to downgrade slow workers).

use tracing::{info, warn};

use crate::metrics::PoolMetrics;

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// No free slot: the job waits (the stream is served as passthrough meanwhile).
    Queued {
        /// The channel.
        channel: String,
        /// 1-based position in the queue.
        position: usize,
    },
    /// An ffmpeg process started for the job.
    Started {
        /// The channel.
        channel: String,
        /// The slot it holds.
        slot: usize,
        /// The ffmpeg PID.
        pid: u32,
        /// Names of the renditions it produces, highest first.
        renditions: Vec<String>,
    },
    /// The process could not be spawned (binary gone, too many processes...).
    SpawnFailed {
        /// The channel.
        channel: String,
        /// The OS error.
        error: String,
    },
    /// The process exited on its own with a failure.
    Died {
        /// The channel.
        channel: String,
        /// The PID it had.
        pid: u32,
        /// Exit code or signal.
        status: String,
        /// ffmpeg's last stderr lines, oldest first.
        stderr_tail: Vec<String>,
    },
    /// A restart is scheduled after `delay_ms`.
    Restarting {
        /// The channel.
        channel: String,
        /// Restarts since the worker was last healthy (1 = first).
        attempt: u32,
        /// Delay before the next spawn.
        delay_ms: u64,
    },
    /// Under the speed threshold for the whole slow period; the owner may
    /// call [`crate::TranscoderPool::downgrade`].
    Slow {
        /// The channel.
        channel: String,
        /// Its slot.
        slot: usize,
        /// Windowed speed.
        speed: f64,
        /// Renditions it currently produces.
        renditions: usize,
    },
    /// Back at or above the threshold.
    Recovered {
        /// The channel.
        channel: String,
        /// Windowed speed.
        speed: f64,
    },
    /// The job dropped its top rendition and restarts with the rest.
    Downgraded {
        /// The channel.
        channel: String,
        /// The rendition dropped.
        dropped: String,
        /// Renditions left.
        remaining: Vec<String>,
    },
    /// The job is over and its slot is free.
    Finished {
        /// The channel.
        channel: String,
        /// Why.
        reason: FinishReason,
    },
}

/// Why a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// [`crate::TranscoderPool::stop`] (or shutdown).
    Stopped,
    /// ffmpeg exited with success: its input ended (the source went offline).
    SourceEnded,
}

impl PoolEvent {
    /// Logs the event and updates the counters it stands for.
    pub(crate) fn record(&self, metrics: &PoolMetrics) {
        match self {
            Self::Queued { channel, position } => info!(channel = %channel, position, "transcode job queued: no free slot"),
            Self::Started { channel, slot, pid, renditions } => {
                info!(channel = %channel, slot, pid, renditions = ?renditions, "transcoder worker started")
            }
            Self::SpawnFailed { channel, error } => warn!(channel = %channel, error = %error, "cannot spawn ffmpeg"),
            Self::Died { channel, pid, status, stderr_tail } => warn!(
                channel = %channel,
                pid,
                status = %status,
                stderr = %stderr_tail.join(" | "),
                "transcoder worker died"
            ),
            Self::Restarting { channel, attempt, delay_ms } => {
                metrics.restarts_total.inc();
                info!(channel = %channel, attempt, delay_ms, "restarting transcoder worker")
            }
            Self::Slow { channel, slot, speed, renditions } => {
                metrics.slow_reports_total.inc();
                metrics.set_slow(*slot, true);
                warn!(channel = %channel, slot, speed, renditions, "transcoder worker is falling behind real time")
            }
            Self::Recovered { channel, speed } => info!(channel = %channel, speed, "transcoder worker is back to real time"),
            Self::Downgraded { channel, dropped, remaining } => {
                warn!(channel = %channel, dropped = %dropped, remaining = ?remaining, "transcode job downgraded")
            }
            Self::Finished { channel, reason } => info!(channel = %channel, reason = ?reason, "transcode job finished"),
        }
    }
}
