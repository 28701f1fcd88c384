//! Chat limits, sans-IO: a token bucket per account and the checks a chat
//! message goes through, in order (ban, mute, shape, slow mode, rate).
//! Time comes in as an argument.

use std::collections::HashMap;
use std::hash::Hash;

/// Keys beyond which idle buckets are forgotten, so a flood of accounts
/// cannot grow the map without bound.
const MAX_IDLE_KEYS: usize = 100_000;

/// `capacity` events per `window_ms`, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter<K> {
    capacity: f64,
    per_ms: f64,
    buckets: HashMap<K, (f64, i64)>,
}

impl<K: Eq + Hash + Copy> RateLimiter<K> {
    /// A limiter allowing `capacity` events per `window_ms` (bursts included).
    pub fn new(capacity: u32, window_ms: u64) -> Self {
        RateLimiter {
            capacity: f64::from(capacity),
            per_ms: f64::from(capacity) / window_ms.max(1) as f64,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now_ms`; false when none is left.
    pub fn allow(&mut self, key: K, now_ms: i64) -> bool {
        if self.buckets.len() >= MAX_IDLE_KEYS && !self.buckets.contains_key(&key) {
            let (cap, per_ms) = (self.capacity, self.per_ms);
            // Full buckets carry no state worth keeping.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + (now_ms - *at) as f64 * per_ms < cap);
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((self.capacity, now_ms));
        let refilled = (*tokens + (now_ms - *at).max(0) as f64 * self.per_ms).min(self.capacity);
        *at = now_ms.max(*at);
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

/// Why a chat message was not sent; `code` goes into the `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatRefusal {
    /// No API token on the connection.
    #[error("sign in to chat: connect with ?token=API_TOKEN")]
    Unauthenticated,
    /// Banned from this room.
    #[error("you are banned from this room's chat")]
    Banned,
    /// Muted for now.
    #[error("you are muted for another {remaining_ms} ms")]
    Muted {
        /// Time left.
        remaining_ms: i64,
    },
    /// Longer than allowed.
    #[error("message too long: {chars} characters, at most {max}")]
    TooLong {
        /// Its length.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// Slow mode: too soon after this account's last message.
    #[error("slow mode: wait {remaining_ms} ms before your next message")]
    SlowMode {
        /// Time left.
        remaining_ms: i64,
    },
    /// Over the per-account rate.
    #[error("too many messages: at most {messages} per {window_ms} ms")]
    RateLimited {
        /// The limit.
        messages: u32,
        /// Its window.
        window_ms: u64,
    },
    /// Not a chat message we understand (or empty).
    #[error("bad message: {0}")]
    BadMessage(String),
}

impl ChatRefusal {
    /// The stable code of the `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            ChatRefusal::Unauthenticated => "unauthenticated",
            ChatRefusal::Banned => "banned",
            ChatRefusal::Muted { .. } => "muted",
            ChatRefusal::TooLong { .. } => "too_long",
            ChatRefusal::SlowMode { .. } => "slow_mode",
            ChatRefusal::RateLimited { .. } => "rate_limited",
            ChatRefusal::BadMessage(_) => "bad_message",
        }
    }
}

/// A room's moderation state and slow-mode bookkeeping.
#[derive(Debug, Default)]
pub struct ChatPolicy {
    /// Minimum time between two messages of one account (0: off).
    pub slow_mode_ms: u64,
    /// Banned accounts.
    pub banned: std::collections::HashSet<i64>,
    /// Muted accounts and until when (unix ms).
    pub muted: HashMap<i64, i64>,
    last_message: HashMap<i64, i64>,
}

impl ChatPolicy {
    /// The room-local checks of one message (ban, mute, text, slow mode);
    /// on success records the time for slow mode. Returns the trimmed text.
    pub fn check<'a>(
        &mut self,
        account: i64,
        text: &'a str,
        max_chars: usize,
        now_ms: i64,
    ) -> Result<&'a str, ChatRefusal> {
        if self.banned.contains(&account) {
            return Err(ChatRefusal::Banned);
        }
        if let Some(until) = self.muted.get(&account).copied() {
            if until > now_ms {
                return Err(ChatRefusal::Muted {
                    remaining_ms: until - now_ms,
                });
            }
            self.muted.remove(&account);
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(ChatRefusal::BadMessage("empty text".into()));
        }
        let chars = text.chars().count();
        if chars > max_chars {
            return Err(ChatRefusal::TooLong {
                chars,
                max: max_chars,
            });
        }
        if self.slow_mode_ms > 0 {
            let slow = i64::try_from(self.slow_mode_ms).unwrap_or(i64::MAX);
            if let Some(last) = self.last_message.get(&account) {
                let wait = last.saturating_add(slow) - now_ms;
                if wait > 0 {
                    return Err(ChatRefusal::SlowMode { remaining_ms: wait });
                }
            }
            if self.last_message.len() >= MAX_IDLE_KEYS {
                self.last_message.retain(|_, t| t.saturating_add(slow) > now_ms);
            }
            self.last_message.insert(account, now_ms);
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_refills_over_the_window() {
        let mut r = RateLimiter::new(5, 10_000);
        assert!((0..5).all(|_| r.allow(1, 0)));
        assert!(!r.allow(1, 0), "sixth in the burst");
        assert!(r.allow(2, 0), "other accounts are separate");
        assert!(!r.allow(1, 1_999));
        assert!(r.allow(1, 2_000), "one token per 2 s");
        assert!(!r.allow(1, 2_001));
        assert!((0..5).all(|_| r.allow(1, 100_000)), "refilled to the cap, not beyond");
        assert!(!r.allow(1, 100_000));
    }

    #[test]
    fn checks_run_ban_mute_text_then_slow_mode() {
        let mut p = ChatPolicy {
            slow_mode_ms: 3_000,
            ..ChatPolicy::default()
        };
        assert_eq!(p.check(1, "  hi  ", 10, 0), Ok("hi"));
        assert_eq!(p.check(1, "again", 10, 1_000), Err(ChatRefusal::SlowMode { remaining_ms: 2_000 }));
        assert_eq!(p.check(1, "again", 10, 3_000), Ok("again"));
        assert_eq!(p.check(2, "x".repeat(11).as_str(), 10, 0).map_err(|e| e.code()), Err("too_long"));
        assert_eq!(p.check(2, "日本語", 3, 0), Ok("日本語"), "characters, not bytes");
        assert_eq!(p.check(2, "   ", 10, 10_000).map_err(|e| e.code()), Err("bad_message"));
        p.muted.insert(3, 5_000);
        assert_eq!(p.check(3, "hi", 10, 4_000), Err(ChatRefusal::Muted { remaining_ms: 1_000 }));
        assert_eq!(p.check(3, "hi", 10, 5_000), Ok("hi"), "a mute ends");
        p.banned.insert(3);
        assert_eq!(p.check(3, "hi", 10, 99_000), Err(ChatRefusal::Banned));
    }
}
