//! Time as a parameter: the rooms, votes and tickets read "now" from a
//! [`Clock`], so tests can advance days without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of unix time in milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Unix time in ms.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::plane::now_ms()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            ms: AtomicI64::new(start_ms),
        }
    }

    /// A clock stopped at the current system time.
    pub fn at_system_now() -> Self {
        Self::new(crate::plane::now_ms())
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}
