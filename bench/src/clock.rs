//! The run's shared monotonic clock: the publisher stamps frames with it and
//! players read it on receipt, so latency needs no clock sync.

use std::time::{Duration, Instant};

/// Microseconds since the run's origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Now, in microseconds since the origin.
    pub(crate) fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// The tokio instant `us` microseconds after the origin.
    pub(crate) fn instant_at(&self, us: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_micros(us))
    }
}
