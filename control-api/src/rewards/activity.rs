//! Activity indicators per account and UTC day (issue #8, item 1).
//!
//! Collected without touching the hot loops: the room and gift paths add to
//! an in-memory [`ActivityLog`] (one short mutex, no I/O), and a flusher
//! moves the tally into `activity_days` (one transaction) every
//! `control.rewards.flush_interval_ms` and before an epoch is computed.
//! Channel-level indicators (publishes, broadcast minutes, peak viewers) are
//! kept per channel and credited to the channel's owner when written.
//!
//! Validity rules, explicit:
//! - a chat message counts once it was accepted (length, rate, slow mode,
//!   mute and ban checks passed); refused ones count nothing;
//! - a gift counts for sender and receiver once its ledger transaction
//!   committed (a replayed retry counts nothing);
//! - a broadcast counts from the hub's go-live to its end; its minutes are
//!   whole minutes, credited on the day it ended;
//! - peak viewers is the largest total the media server reported that day.
//!
//! - a like counts once per account and channel per `LIKE_INTERVAL_MS`;
//! - watch time and plays come from media sessions played with a viewer
//!   token (`?viewer=`, `GET /v1/accounts/me/viewer-token`): the media node
//!   reports a session that ended after media was delivered, in its
//!   idempotent usage batch; it counts once, with a genuine unexpired token
//!   and when at least `control.rewards.min_watch_session_ms` long.

use std::collections::HashMap;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use super::Indicators;
use crate::store::{AccountId, StoreError};

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day of a unix time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// What a flush writes: per (account, day) and per (channel, day).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Indicators of accounts.
    pub accounts: Vec<(AccountId, i64, Indicators)>,
    /// Indicators of channels, credited to their owners.
    pub channels: Vec<(String, i64, Indicators)>,
}

impl Tally {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.channels.is_empty()
    }
}

/// The in-memory tally since the last flush.
#[derive(Debug, Default)]
pub struct ActivityLog {
    accounts: Mutex<HashMap<(AccountId, i64), Indicators>>,
    channels: Mutex<HashMap<(String, i64), Indicators>>,
    live_since: Mutex<HashMap<String, i64>>,
}

/// Bound on pending rows; past it new keys are dropped (and logged) until
/// the next flush, so a flood cannot grow memory without limit.
const MAX_PENDING_ROWS: usize = 200_000;

impl ActivityLog {
    /// Adds to an account's indicators of the day of `now_ms`.
    pub fn account(&self, account: AccountId, now_ms: i64, add: impl FnOnce(&mut Indicators)) {
        let mut map = self.accounts.lock();
        let key = (account, day_of(now_ms));
        if map.len() >= MAX_PENDING_ROWS && !map.contains_key(&key) {
            tracing::warn!(account, "activity tally full until the next flush");
            return;
        }
        add(map.entry(key).or_default());
    }

    fn channel(&self, channel: &str, now_ms: i64, add: impl FnOnce(&mut Indicators)) {
        let mut map = self.channels.lock();
        let key = (channel.to_string(), day_of(now_ms));
        if map.len() >= MAX_PENDING_ROWS && !map.contains_key(&key) {
            return;
        }
        add(map.entry(key).or_default());
    }

    /// A stream went live: one publish.
    pub fn stream_started(&self, channel: &str, now_ms: i64) {
        self.live_since.lock().insert(channel.to_string(), now_ms);
        self.channel(channel, now_ms, |i| i.publishes += 1);
    }

    /// A stream ended: its whole minutes.
    pub fn stream_ended(&self, channel: &str, now_ms: i64) {
        let Some(since) = self.live_since.lock().remove(channel) else { return };
        let minutes = (now_ms - since).max(0) / 60_000;
        if minutes > 0 {
            self.channel(channel, now_ms, |i| i.broadcast_minutes += minutes as u64);
        }
    }

    /// A gift to a channel: its owner received `micro`.
    pub fn channel_gift(&self, channel: &str, now_ms: i64, micro: u64) {
        self.channel(channel, now_ms, |i| i.gifts_received_micro += micro);
    }

    /// The media server's current total viewers of a channel.
    pub fn viewers(&self, channel: &str, now_ms: i64, total: u64) {
        if total > 0 {
            self.channel(channel, now_ms, |i| i.peak_viewers = i.peak_viewers.max(total));
        }
    }

    /// Takes everything tallied so far.
    pub fn drain(&self) -> Tally {
        let accounts = std::mem::take(&mut *self.accounts.lock()).into_iter().map(|((a, d), i)| (a, d, i)).collect();
        let channels = std::mem::take(&mut *self.channels.lock()).into_iter().map(|((c, d), i)| (c, d, i)).collect();
        Tally { accounts, channels }
    }

    /// Puts a tally back (its write failed), so nothing is lost.
    pub fn restore(&self, tally: Tally) {
        for (a, d, add) in tally.accounts {
            self.account(a, d * DAY_MS, |i| merge(i, &add));
        }
        for (c, d, add) in tally.channels {
            self.channel(&c, d * DAY_MS, |i| merge(i, &add));
        }
    }
}

/// Adds `add` to `into` (peak viewers: the larger).
pub fn merge(into: &mut Indicators, add: &Indicators) {
    for p in 0..3 {
        into.watch_seconds[p] += add.watch_seconds[p];
    }
    into.plays += add.plays;
    into.publishes += add.publishes;
    into.broadcast_minutes += add.broadcast_minutes;
    into.chat_messages += add.chat_messages;
    into.likes += add.likes;
    into.shares += add.shares;
    into.gifts_sent_micro += add.gifts_sent_micro;
    into.gifts_received_micro += add.gifts_received_micro;
    into.peak_viewers = into.peak_viewers.max(add.peak_viewers);
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where a tally row goes: the day's record, or the open epoch's inputs.
#[derive(Clone, Copy)]
enum Bucket {
    Day(i64),
    Epoch(i64),
}

impl Bucket {
    /// Table, key column and key value.
    fn place(self) -> (&'static str, &'static str, i64) {
        match self {
            Bucket::Day(day) => ("activity_days", "day", day),
            Bucket::Epoch(epoch) => ("epoch_activity", "epoch", epoch),
        }
    }
}

fn upsert(tx: &Connection, account: AccountId, bucket: Bucket, i: &Indicators) -> Result<(), StoreError> {
    let (table, key, value) = bucket.place();
    tx.prepare_cached(&format!(
        "INSERT INTO {table} (account_id, {key}, watch_rtmp_s, watch_flv_s, watch_hls_s, plays, publishes,
             broadcast_minutes, chat_messages, likes, shares, gifts_sent_micro, gifts_received_micro, peak_viewers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT(account_id, {key}) DO UPDATE SET
             watch_rtmp_s = watch_rtmp_s + excluded.watch_rtmp_s,
             watch_flv_s = watch_flv_s + excluded.watch_flv_s,
             watch_hls_s = watch_hls_s + excluded.watch_hls_s,
             plays = plays + excluded.plays,
             publishes = publishes + excluded.publishes,
             broadcast_minutes = broadcast_minutes + excluded.broadcast_minutes,
             chat_messages = chat_messages + excluded.chat_messages,
             likes = likes + excluded.likes,
             shares = shares + excluded.shares,
             gifts_sent_micro = gifts_sent_micro + excluded.gifts_sent_micro,
             gifts_received_micro = gifts_received_micro + excluded.gifts_received_micro,
             peak_viewers = MAX(peak_viewers, excluded.peak_viewers)"
    ))?
    .execute(rusqlite::params![
        account,
        value,
        n(i.watch_seconds[0]),
        n(i.watch_seconds[1]),
        n(i.watch_seconds[2]),
        n(i.plays),
        n(i.publishes),
        n(i.broadcast_minutes),
        n(i.chat_messages),
        n(i.likes),
        n(i.shares),
        n(i.gifts_sent_micro),
        n(i.gifts_received_micro),
        n(i.peak_viewers),
    ])?;
    Ok(())
}

/// Writes a tally (inside the caller's transaction): to the day's record
/// and to the reward epoch open now (the one after the last closed), so an
/// epoch counts exactly what was flushed before it closed. Channels that no
/// longer resolve to an owner (config-only channels) are skipped.
pub(crate) fn store_tally(tx: &Connection, tally: &Tally) -> Result<(), StoreError> {
    let open = crate::store::epochs::open_epoch(tx)?;
    let add = |account: AccountId, day: i64, i: &Indicators| -> Result<(), StoreError> {
        upsert(tx, account, Bucket::Day(day), i)?;
        upsert(tx, account, Bucket::Epoch(open), i)
    };
    for (account, day, i) in &tally.accounts {
        add(*account, *day, i)?;
    }
    for (channel, day, i) in &tally.channels {
        let owner: Option<AccountId> = tx
            .prepare_cached("SELECT owner_account_id FROM channels WHERE name = ?1")?
            .query_row([channel], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner {
            add(owner, *day, i)?;
        }
    }
    Ok(())
}

/// Every account's row of one day, by account id.
pub(crate) fn day_rows(c: &Connection, day: i64) -> Result<Vec<(AccountId, Indicators)>, StoreError> {
    bucket_rows(c, Bucket::Day(day))
}

/// Every account's activity tallied into `epoch`, by account id.
pub(crate) fn epoch_rows(c: &Connection, epoch: i64) -> Result<Vec<(AccountId, Indicators)>, StoreError> {
    bucket_rows(c, Bucket::Epoch(epoch))
}

fn bucket_rows(c: &Connection, bucket: Bucket) -> Result<Vec<(AccountId, Indicators)>, StoreError> {
    let (table, key, value) = bucket.place();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT account_id, watch_rtmp_s, watch_flv_s, watch_hls_s, plays, publishes, broadcast_minutes,
                chat_messages, likes, shares, gifts_sent_micro, gifts_received_micro, peak_viewers
         FROM {table} WHERE {key} = ?1 ORDER BY account_id"
    ))?;
    let rows = stmt.query_map([value], |r| {
        let u = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        Ok((
            r.get::<_, i64>(0)?,
            Indicators {
                watch_seconds: [u(1)?, u(2)?, u(3)?],
                plays: u(4)?,
                publishes: u(5)?,
                broadcast_minutes: u(6)?,
                chat_messages: u(7)?,
                likes: u(8)?,
                shares: u(9)?,
                gifts_sent_micro: u(10)?,
                gifts_received_micro: u(11)?,
                peak_viewers: u(12)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_negative_times_floor() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn the_tally_adds_up_and_broadcasts_count_whole_minutes() {
        let log = ActivityLog::default();
        let t = 20_000 * DAY_MS + 1000;
        log.account(7, t, |i| i.chat_messages += 1);
        log.account(7, t + 5, |i| i.chat_messages += 1);
        log.account(7, t + DAY_MS, |i| i.chat_messages += 1);
        log.stream_started("demo", t);
        log.viewers("demo", t + 10, 40);
        log.viewers("demo", t + 20, 25);
        log.stream_ended("demo", t + 150_000);
        let mut tally = log.drain();
        tally.accounts.sort_by_key(|r| r.1);
        assert_eq!(tally.accounts.len(), 2, "two days");
        assert_eq!(tally.accounts[0].2.chat_messages, 2);
        assert_eq!(tally.accounts[1].2.chat_messages, 1);
        assert_eq!(tally.channels.len(), 1);
        let demo = tally.channels[0].2;
        assert_eq!((demo.publishes, demo.broadcast_minutes, demo.peak_viewers), (1, 2, 40));
        assert!(log.drain().is_empty(), "drained");
        // An end without a start (a restart in between) counts nothing.
        log.stream_ended("demo", t);
        assert!(log.drain().is_empty());
    }
}
