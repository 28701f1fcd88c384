//! The pool's configuration (a `[transcoder]` section of the server config).

use serde::Deserialize;

use crate::errors::ConfigError;

/// How the pool runs its workers. Every field has a default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Concurrent ffmpeg workers (one per source). Unset: half the cores,
    /// at least 1: one ladder of libx264 encoders keeps about two cores busy
    /// at 720p30 with `veryfast` (see the crate docs for the measurement),
    /// so more workers than that would push every worker under real time.
    pub slots: Option<usize>,
    /// The ffmpeg binary: a path, or a name looked up on `PATH`.
    pub ffmpeg_path: String,
    /// First restart delay after a worker dies.
    pub restart_backoff_min_ms: u64,
    /// Longest restart delay (the delay doubles up to this).
    pub restart_backoff_max_ms: u64,
    /// A worker that ran this long before dying restarts at the minimum delay again.
    pub healthy_after_ms: u64,
    /// Windowed speed under which a worker is falling behind real time.
    /// Slightly under 1.0: a live input cannot be read faster than it is
    /// published, so a healthy worker hovers around 1.0 and jitters below it.
    pub slow_speed_threshold: f64,
    /// How long the speed must stay under the threshold before the worker is reported slow.
    pub slow_period_ms: u64,
    /// The span the speed is measured over.
    pub speed_window_ms: u64,
    /// After SIGTERM, how long a worker gets to flush and exit before SIGKILL.
    pub stop_timeout_ms: u64,
    /// Lines of ffmpeg's stderr kept for the log line when it dies.
    pub stderr_tail_lines: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            slots: None,
            ffmpeg_path: "ffmpeg".to_owned(),
            restart_backoff_min_ms: 1_000,
            restart_backoff_max_ms: 30_000,
            healthy_after_ms: 30_000,
            slow_speed_threshold: 0.95,
            slow_period_ms: 15_000,
            speed_window_ms: 5_000,
            stop_timeout_ms: 5_000,
            stderr_tail_lines: 20,
        }
    }
}

impl PoolConfig {
    /// The slot count in force: `slots`, or `max(1, cores / 2)`.
    pub fn effective_slots(&self) -> usize {
        self.slots.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            (cores / 2).max(1)
        })
    }

    /// Checks every value; the error names the key (under `section`, e.g. `transcoder`).
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid { key: format!("{section}.{key}"), reason };
        if self.slots == Some(0) {
            return Err(bad("slots", "must be at least 1 (use the passthrough ladder to turn transcoding off)".into()));
        }
        if self.ffmpeg_path.trim().is_empty() {
            return Err(bad("ffmpeg_path", "must not be empty".into()));
        }
        if self.restart_backoff_min_ms == 0 {
            return Err(bad("restart_backoff_min_ms", "must be at least 1".into()));
        }
        if self.restart_backoff_max_ms < self.restart_backoff_min_ms {
            return Err(bad(
                "restart_backoff_max_ms",
                format!("must be at least restart_backoff_min_ms ({})", self.restart_backoff_min_ms),
            ));
        }
        if !(self.slow_speed_threshold.is_finite() && self.slow_speed_threshold > 0.0 && self.slow_speed_threshold <= 2.0) {
            return Err(bad("slow_speed_threshold", format!("must be within (0, 2], got {}", self.slow_speed_threshold)));
        }
        if self.speed_window_ms < 500 {
            return Err(bad("speed_window_ms", format!("must be at least 500, got {}", self.speed_window_ms)));
        }
        if self.stderr_tail_lines == 0 {
            return Err(bad("stderr_tail_lines", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_every_default() {
        let c: PoolConfig = toml::from_str("").unwrap();
        assert_eq!(c, PoolConfig::default());
        c.validate("transcoder").unwrap();
        assert!(c.effective_slots() >= 1);
    }

    #[test]
    fn errors_name_the_key() {
        let c: PoolConfig = toml::from_str("slots = 0").unwrap();
        let e = c.validate("transcoder").unwrap_err().to_string();
        assert!(e.starts_with("transcoder.slots:"), "{e}");
        let c = PoolConfig { restart_backoff_min_ms: 100, restart_backoff_max_ms: 10, ..PoolConfig::default() };
        assert!(c.validate("t").unwrap_err().to_string().starts_with("t.restart_backoff_max_ms:"));
        assert!(toml::from_str::<PoolConfig>("slotz = 2").is_err());
        assert_eq!(toml::from_str::<PoolConfig>("slots = 3").unwrap().effective_slots(), 3);
    }
}
