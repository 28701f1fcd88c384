//! Rooms in SQL: settings, moderation, gifts (one balanced journal entry
//! each, with the vote bookkeeping in the same transaction), share links,
//! tickets and the ranking index. The vote formula itself is in
//! [`crate::votes`].

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{ledger, random_secret, system, AccountId, Caller, Replayable, StoreError};
use crate::votes::{self, Eligibility, VoteRules, EMPTY_LOG2};

/// A room's owner and settings (defaults for a channel never configured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// Channel name.
    pub channel: String,
    /// Channel owner (the streamer).
    pub owner: AccountId,
    /// Owner's handle.
    pub owner_handle: String,
    /// Room title.
    pub title: String,
    /// Minimum time between two chat messages of one account, ms (0: off).
    pub slow_mode_ms: u64,
    /// Share of the streamer's part paid to a sharer, basis points.
    pub sharer_bps: u32,
    /// Ticket price, micro-WE (0: free).
    pub ticket_price_micro: i64,
}

/// A settings change; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New slow mode, ms.
    #[serde(default)]
    pub slow_mode_ms: Option<u64>,
    /// New sharer share, basis points.
    #[serde(default)]
    pub sharer_bps: Option<u32>,
    /// New ticket price, micro-WE.
    #[serde(default)]
    pub ticket_price_micro: Option<i64>,
}

/// A streamer's moderation action on one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Bans the account from the room's chat.
    Ban,
    /// Lifts a ban.
    Unban,
    /// Mutes until a time (unix ms); a past time unmutes.
    MuteUntil(i64),
}

/// One moderation row as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationRow {
    /// Channel.
    pub channel: String,
    /// The moderated account.
    pub account_id: AccountId,
    /// Banned from chat.
    pub banned: bool,
    /// Muted until (unix ms), 0 if not.
    pub muted_until_ms: i64,
}

/// Everything the rooms keep in memory, read once at start.
#[derive(Debug, Clone, Default)]
pub struct RoomsSnapshot {
    /// Every channel with settings (configured or default).
    pub settings: Vec<RoomSettings>,
    /// Mutes and bans in force or recorded.
    pub moderation: Vec<ModerationRow>,
    /// Stored `log2_score` of every room that has one.
    pub scores: Vec<(String, f64)>,
}

/// What a gift request asks, with the policy in force.
#[derive(Debug, Clone)]
pub struct GiftOrder {
    /// Channel receiving the gift.
    pub channel: String,
    /// Gift id.
    pub gift_id: String,
    /// Gift display name.
    pub gift_name: String,
    /// Price of one, micro-WE.
    pub unit_price_micro: i64,
    /// How many.
    pub count: u32,
    /// Share code it came through.
    pub share: Option<String>,
    /// Platform fee, basis points.
    pub platform_fee_bps: u32,
    /// The vote rules.
    pub rules: VoteRules,
}

/// The result of a gift: the payment split and the vote it cast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GiftReceipt {
    /// Gift row id.
    pub gift_id: i64,
    /// Journal entry of the payment.
    pub tx_id: i64,
    /// Channel.
    pub channel: String,
    /// Gift id (`flower`).
    pub gift: String,
    /// Gift display name.
    pub name: String,
    /// How many.
    pub count: u32,
    /// Paid by the sender.
    pub paid_micro: i64,
    /// Received by the streamer.
    pub streamer_micro: i64,
    /// Kept by the platform.
    pub fee_micro: i64,
    /// Received by the sharer.
    pub sharer_micro: i64,
    /// The sharer's account, when the gift came through a share link.
    pub sharer: Option<AccountId>,
    /// The vote weight cast (0 for self-gifts, young or idle accounts).
    pub vote_weight: f64,
    /// Sender's wallet balance right after.
    pub balance_micro: i64,
    /// Sender account.
    pub account: AccountId,
    /// Sender handle.
    pub handle: String,
    /// Time of the gift (unix ms).
    pub ts_ms: i64,
    /// The room's stored `log2_score` after this gift (for the in-memory
    /// room; not shown, not kept for replays).
    #[serde(skip)]
    pub log2_score: Option<f64>,
}
impl Replayable for GiftReceipt {}

/// A share link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Referral code.
    pub code: String,
    /// Channel shared.
    pub channel: String,
    /// Sharer.
    pub account: AccountId,
    /// Plays (WebSocket visits) through the link.
    pub plays: i64,
    /// Gifts through the link.
    pub gifts: i64,
    /// WE earned through the link, micro-WE.
    pub earned_micro: i64,
}
impl Replayable for Share {}

/// A ticket (the play token is minted from it by the API, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Ticket id.
    pub ticket_id: i64,
    /// Channel.
    pub channel: String,
    /// Holder.
    pub account: AccountId,
    /// Price paid, micro-WE (0 for the owner's own ticket).
    pub paid_micro: i64,
    /// Expiry (unix ms).
    pub expires_ms: i64,
}
impl Replayable for Ticket {}

/// One line of the ranking, from the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingRow {
    /// Channel.
    pub channel: String,
    /// Owner.
    pub owner: AccountId,
    /// Owner's handle.
    pub owner_handle: String,
    /// Stored score (see [`crate::votes`]).
    pub log2_score: f64,
}

fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidInput {
        field,
        message: message.into(),
    }
}

fn no_channel(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "channel",
        id: name.to_string(),
    }
}

const SETTINGS_SQL: &str = "SELECT c.name, c.owner_account_id, a.handle, COALESCE(s.title, ''),
    COALESCE(s.slow_mode_ms, 0), COALESCE(s.sharer_bps, 0), COALESCE(s.ticket_price_micro, 0), c.id
    FROM channels c JOIN accounts a ON a.id = c.owner_account_id
    LEFT JOIN room_settings s ON s.channel_id = c.id";

fn settings_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RoomSettings, i64)> {
    Ok((
        RoomSettings {
            channel: r.get(0)?,
            owner: r.get(1)?,
            owner_handle: r.get(2)?,
            title: r.get(3)?,
            slow_mode_ms: r.get(4)?,
            sharer_bps: r.get(5)?,
            ticket_price_micro: r.get(6)?,
        },
        r.get(7)?,
    ))
}

/// A room's settings and channel id.
fn settings_with_id(c: &Connection, channel: &str) -> Result<Option<(RoomSettings, i64)>, StoreError> {
    Ok(c.prepare_cached(&format!("{SETTINGS_SQL} WHERE c.name = ?1"))?
        .query_row([channel], settings_row)
        .optional()?)
}

/// A room's settings.
pub(super) fn settings(c: &Connection, channel: &str) -> Result<Option<RoomSettings>, StoreError> {
    Ok(settings_with_id(c, channel)?.map(|s| s.0))
}

/// Every room and its memory state, for start-up.
pub(super) fn snapshot(c: &Connection) -> Result<RoomsSnapshot, StoreError> {
    let settings = c
        .prepare(&format!("{SETTINGS_SQL} ORDER BY c.id"))?
        .query_map([], settings_row)?
        .map(|r| r.map(|s| s.0))
        .collect::<Result<Vec<_>, _>>()?;
    let moderation = c
        .prepare(
            "SELECT c.name, m.account_id, m.banned, m.muted_until_ms FROM room_moderation m
             JOIN channels c ON c.id = m.channel_id ORDER BY m.channel_id, m.account_id",
        )?
        .query_map([], |r| {
            Ok(ModerationRow {
                channel: r.get(0)?,
                account_id: r.get(1)?,
                banned: r.get(2)?,
                muted_until_ms: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let scores = c
        .prepare("SELECT c.name, s.log2_score FROM room_scores s JOIN channels c ON c.id = s.channel_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RoomsSnapshot {
        settings,
        moderation,
        scores,
    })
}

/// Loads a room of the caller's, or refuses.
fn owned(tx: &Connection, caller: &Caller, channel: &str) -> Result<(RoomSettings, i64), StoreError> {
    let (s, id) = settings_with_id(tx, channel)?.ok_or_else(|| no_channel(channel))?;
    if s.owner != caller.account_id {
        return Err(StoreError::Forbidden(format!(
            "only the owner of '{channel}' may change its room"
        )));
    }
    Ok((s, id))
}

/// Applies a settings change (validated by the caller against the config).
pub(super) fn update_settings(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    u: &SettingsUpdate,
    now_ms: i64,
) -> Result<RoomSettings, StoreError> {
    let (mut s, id) = owned(tx, caller, channel)?;
    if let Some(t) = &u.title {
        s.title = t.clone();
    }
    if let Some(v) = u.slow_mode_ms {
        s.slow_mode_ms = v;
    }
    if let Some(v) = u.sharer_bps {
        s.sharer_bps = v;
    }
    if let Some(v) = u.ticket_price_micro {
        s.ticket_price_micro = v;
    }
    let slow = i64::try_from(s.slow_mode_ms).map_err(|_| invalid("slow_mode_ms", "out of range"))?;
    tx.prepare_cached(
        "INSERT INTO room_settings (channel_id, title, slow_mode_ms, sharer_bps, ticket_price_micro, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(channel_id) DO UPDATE SET title = excluded.title,
         slow_mode_ms = excluded.slow_mode_ms, sharer_bps = excluded.sharer_bps,
         ticket_price_micro = excluded.ticket_price_micro, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute((id, &s.title, slow, s.sharer_bps, s.ticket_price_micro, now_ms))?;
    Ok(s)
}

/// Records a mute or ban by the room's owner.
pub(super) fn moderate(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    target: AccountId,
    action: Moderation,
    now_ms: i64,
) -> Result<ModerationRow, StoreError> {
    let (_, id) = owned(tx, caller, channel)?;
    if target == caller.account_id {
        return Err(invalid("account", "the owner cannot mute or ban themselves"));
    }
    let exists = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
        .exists([target])?;
    if !exists {
        return Err(StoreError::NotFound {
            what: "account",
            id: target.to_string(),
        });
    }
    let (banned, muted): (bool, i64) = tx
        .prepare_cached("SELECT banned, muted_until_ms FROM room_moderation WHERE channel_id = ?1 AND account_id = ?2")?
        .query_row((id, target), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((false, 0));
    let (banned, muted) = match action {
        Moderation::Ban => (true, muted),
        Moderation::Unban => (false, muted),
        Moderation::MuteUntil(t) => (banned, t),
    };
    tx.prepare_cached(
        "INSERT INTO room_moderation (channel_id, account_id, banned, muted_until_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(channel_id, account_id) DO UPDATE SET
         banned = excluded.banned, muted_until_ms = excluded.muted_until_ms, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute((id, target, banned, muted, now_ms))?;
    Ok(ModerationRow {
        channel: channel.to_string(),
        account_id: target,
        banned,
        muted_until_ms: muted,
    })
}

/// Counts one activity event (chat message, share link, ticket).
pub(super) fn record_activity(tx: &Connection, account: AccountId, now_ms: i64) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO account_activity (account_id, events, first_at_ms, last_at_ms) VALUES (?1, 1, ?2, ?2)
         ON CONFLICT(account_id) DO UPDATE SET events = events + 1, last_at_ms = excluded.last_at_ms",
    )?
    .execute((account, now_ms))?;
    activity(tx, account)
}

/// An account's activity events.
pub(super) fn activity(c: &Connection, account: AccountId) -> Result<i64, StoreError> {
    Ok(c.prepare_cached("SELECT events FROM account_activity WHERE account_id = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// `paid` split into (fee, sharer, streamer), each floored, summing to `paid`.
pub fn split_payment(paid: i64, fee_bps: u32, sharer_bps: u32) -> (i64, i64, i64) {
    let fee = mul_bps(paid, fee_bps);
    let streamer_part = paid - fee;
    let sharer = mul_bps(streamer_part, sharer_bps);
    (fee, sharer, streamer_part - sharer)
}

fn mul_bps(amount: i64, bps: u32) -> i64 {
    // i128: amount * 10000 may leave i64 for large amounts.
    i64::try_from(i128::from(amount) * i128::from(bps) / 10_000).unwrap_or(i64::MAX)
}

/// One payment: `payer` pays `paid`; `fee` goes to the platform, `others`
/// (account, amount) get their parts.
struct Payment<'a> {
    kind: &'a str,
    memo: &'a str,
    payer: AccountId,
    paid: i64,
    fee: i64,
    others: &'a [(AccountId, i64)],
}

/// Posts a payment as one balanced journal entry; zero legs are left out.
/// Returns the journal id and the payer's balance after.
fn pay(tx: &Connection, p: &Payment<'_>, now_ms: i64) -> Result<(i64, i64), StoreError> {
    let mut legs = vec![(ledger::wallet(tx, p.payer)?.id, -p.paid)];
    if p.fee > 0 {
        legs.push((ledger::system_account(tx, system::PLATFORM_FEES)?.id, p.fee));
    }
    for &(account, amount) in p.others {
        if amount > 0 {
            legs.push((ledger::wallet(tx, account)?.id, amount));
        }
    }
    let (journal, after) = ledger::post(tx, p.kind, Some(p.memo), &legs, now_ms)?;
    // The payer's leg is first; a self-gift's own credit comes later.
    let payer_wallet = legs[0].0;
    let balance = legs
        .iter()
        .zip(&after)
        .rev()
        .find(|(l, _)| l.0 == payer_wallet)
        .map_or(after[0], |(_, b)| *b);
    Ok((journal, balance))
}

/// Sends a gift: one balanced journal entry, the vote and the attribution.
pub(super) fn send_gift(
    tx: &Connection,
    caller: &Caller,
    order: &GiftOrder,
    now_ms: i64,
) -> Result<GiftReceipt, StoreError> {
    let (room, channel_id) = settings_with_id(tx, &order.channel)?.ok_or_else(|| no_channel(&order.channel))?;
    let paid = order
        .unit_price_micro
        .checked_mul(i64::from(order.count))
        .ok_or(StoreError::Overflow)?;
    let share = match &order.share {
        None => None,
        Some(code) => Some(
            tx.prepare_cached("SELECT id, account_id FROM shares WHERE code = ?1 AND channel_id = ?2")?
                .query_row((code, channel_id), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, AccountId>(1)?)))
                .optional()?
                .ok_or_else(|| invalid("share", "no share link with this code for this channel"))?,
        ),
    };
    // A sharer earns only from others' gifts to someone else's room.
    let paying_sharer = share.filter(|s| s.1 != caller.account_id && s.1 != room.owner);
    let sharer_bps = if paying_sharer.is_some() { room.sharer_bps } else { 0 };
    let (fee, sharer_micro, streamer_micro) = split_payment(paid, order.platform_fee_bps, sharer_bps);
    let mut others = vec![(room.owner, streamer_micro)];
    if let Some((_, sharer)) = paying_sharer {
        others.insert(0, (sharer, sharer_micro));
    }
    let memo = format!("{}x{} to {}", order.count, order.gift_id, order.channel);
    let payment = Payment {
        kind: "gift",
        memo: &memo,
        payer: caller.account_id,
        paid,
        fee,
        others: &others,
    };
    let (journal_id, balance) = pay(tx, &payment, now_ms)?;

    // The vote.
    let created: i64 = tx
        .prepare_cached("SELECT created_at_ms FROM accounts WHERE id = ?1")?
        .query_row([caller.account_id], |r| r.get(0))?;
    let eligibility = Eligibility {
        self_gift: caller.account_id == room.owner,
        account_age_ms: now_ms - created,
        activity_events: activity(tx, caller.account_id)?,
    };
    let trust = order.rules.trust(&eligibility);
    let day = votes::utc_day(now_ms);
    let before: i64 = tx
        .prepare_cached(
            "SELECT total_micro FROM vote_day_totals WHERE sender_account_id = ?1 AND owner_account_id = ?2 AND day = ?3",
        )?
        .query_row((caller.account_id, room.owner, day), |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let after = before.checked_add(paid).ok_or(StoreError::Overflow)?;
    tx.prepare_cached(
        "INSERT INTO vote_day_totals (sender_account_id, owner_account_id, day, total_micro) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(sender_account_id, owner_account_id, day) DO UPDATE SET total_micro = excluded.total_micro",
    )?
    .execute((caller.account_id, room.owner, day, after))?;
    let vote_weight = votes::gift_weight(trust, before, after, order.rules.cap);
    let old: Option<f64> = tx
        .prepare_cached("SELECT log2_score FROM room_scores WHERE channel_id = ?1")?
        .query_row([channel_id], |r| r.get(0))
        .optional()?;
    let log2_score = if vote_weight > 0.0 {
        let new = order.rules.add_vote(old.unwrap_or(EMPTY_LOG2), vote_weight, now_ms);
        tx.prepare_cached(
            "INSERT INTO room_scores (channel_id, log2_score, votes, updated_at_ms) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT(channel_id) DO UPDATE SET log2_score = excluded.log2_score, votes = votes + 1,
             updated_at_ms = excluded.updated_at_ms",
        )?
        .execute((channel_id, new, now_ms))?;
        Some(new)
    } else {
        old
    };

    let share_id = share.map(|s| s.0);
    tx.prepare_cached(
        "INSERT INTO gifts (channel_id, sender_account_id, gift_id, count, paid_micro, fee_micro, sharer_micro,
         streamer_micro, share_id, vote_weight, journal_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(rusqlite::params![
        channel_id,
        caller.account_id,
        order.gift_id,
        order.count,
        paid,
        fee,
        sharer_micro,
        streamer_micro,
        share_id,
        vote_weight,
        journal_id,
        now_ms
    ])?;
    let gift_row = tx.last_insert_rowid();
    if let Some(id) = share_id {
        tx.prepare_cached("UPDATE shares SET gifts = gifts + 1, earned_micro = earned_micro + ?1 WHERE id = ?2")?
            .execute((sharer_micro, id))?;
    }
    Ok(GiftReceipt {
        gift_id: gift_row,
        tx_id: journal_id,
        channel: order.channel.clone(),
        gift: order.gift_id.clone(),
        name: order.gift_name.clone(),
        count: order.count,
        paid_micro: paid,
        streamer_micro,
        fee_micro: fee,
        sharer_micro,
        sharer: paying_sharer.map(|s| s.1),
        vote_weight,
        balance_micro: balance,
        account: caller.account_id,
        handle: caller.handle.clone(),
        ts_ms: now_ms,
        log2_score,
    })
}

/// Rooms by stored score, best first, from the `room_scores_rank` index.
pub(super) fn rankings(c: &Connection, limit: u32) -> Result<Vec<RankingRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT c.name, c.owner_account_id, a.handle, s.log2_score FROM room_scores s
         JOIN channels c ON c.id = s.channel_id JOIN accounts a ON a.id = c.owner_account_id
         ORDER BY s.log2_score DESC, c.id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(RankingRow {
            channel: r.get(0)?,
            owner: r.get(1)?,
            owner_handle: r.get(2)?,
            log2_score: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn share_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Share> {
    Ok(Share {
        code: r.get(0)?,
        channel: r.get(1)?,
        account: r.get(2)?,
        plays: r.get(3)?,
        gifts: r.get(4)?,
        earned_micro: r.get(5)?,
    })
}

const SHARE_SQL: &str = "SELECT s.code, c.name, s.account_id, s.plays, s.gifts, s.earned_micro
    FROM shares s JOIN channels c ON c.id = s.channel_id";

/// The caller's share link for a channel, created on first use.
pub(super) fn create_share(tx: &Connection, caller: &Caller, channel: &str, now_ms: i64) -> Result<Share, StoreError> {
    let (_, channel_id) = settings_with_id(tx, channel)?.ok_or_else(|| no_channel(channel))?;
    let existing = tx
        .prepare_cached(&format!("{SHARE_SQL} WHERE s.channel_id = ?1 AND s.account_id = ?2"))?
        .query_row((channel_id, caller.account_id), share_row)
        .optional()?;
    if let Some(s) = existing {
        return Ok(s);
    }
    // 64 random bits: short enough for a URL, far beyond guessing.
    let code = random_secret("")[..16].to_string();
    tx.prepare_cached("INSERT INTO shares (code, channel_id, account_id, created_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute((&code, channel_id, caller.account_id, now_ms))?;
    record_activity(tx, caller.account_id, now_ms)?;
    Ok(Share {
        code,
        channel: channel.to_string(),
        account: caller.account_id,
        plays: 0,
        gifts: 0,
        earned_micro: 0,
    })
}

/// A share link by code.
pub(super) fn share(c: &Connection, code: &str) -> Result<Option<Share>, StoreError> {
    Ok(c.prepare_cached(&format!("{SHARE_SQL} WHERE s.code = ?1"))?
        .query_row([code], share_row)
        .optional()?)
}

/// Counts a play (visit) through a share link; unknown codes count nothing.
pub(super) fn record_share_play(tx: &Connection, code: &str, channel: &str) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "UPDATE shares SET plays = plays + 1 WHERE code = ?1 AND channel_id = (SELECT id FROM channels WHERE name = ?2)",
        )?
        .execute((code, channel))?;
    Ok(n > 0)
}

fn ticket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    Ok(Ticket {
        ticket_id: r.get(0)?,
        channel: r.get(1)?,
        account: r.get(2)?,
        paid_micro: r.get(3)?,
        expires_ms: r.get(4)?,
    })
}

/// The caller's newest unexpired ticket for a channel.
pub(super) fn current_ticket(
    c: &Connection,
    account: AccountId,
    channel: &str,
    now_ms: i64,
) -> Result<Option<Ticket>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT t.id, c.name, t.account_id, t.paid_micro, t.expires_at_ms FROM tickets t
         JOIN channels c ON c.id = t.channel_id
         WHERE c.name = ?1 AND t.account_id = ?2 AND t.expires_at_ms > ?3 ORDER BY t.expires_at_ms DESC LIMIT 1",
    )?
    .query_row((channel, account, now_ms), ticket_row)
    .optional()?)
}

/// Buys a ticket at the room's current price (one balanced journal entry),
/// or returns the caller's unexpired one. The owner's own ticket is free.
pub(super) fn buy_ticket(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    fee_bps: u32,
    validity_ms: i64,
    now_ms: i64,
) -> Result<Ticket, StoreError> {
    let (room, channel_id) = settings_with_id(tx, channel)?.ok_or_else(|| no_channel(channel))?;
    if room.ticket_price_micro <= 0 {
        return Err(StoreError::Conflict {
            code: "not_ticketed",
            message: format!("channel '{channel}' is free to watch"),
        });
    }
    if let Some(t) = current_ticket(tx, caller.account_id, channel, now_ms)? {
        return Ok(t);
    }
    let (paid, journal_id) = if caller.account_id == room.owner {
        (0, None)
    } else {
        let paid = room.ticket_price_micro;
        let (fee, _, streamer) = split_payment(paid, fee_bps, 0);
        let memo = format!("ticket for {channel}");
        let payment = Payment {
            kind: "ticket",
            memo: &memo,
            payer: caller.account_id,
            paid,
            fee,
            others: &[(room.owner, streamer)],
        };
        let (journal, _) = pay(tx, &payment, now_ms)?;
        (paid, Some(journal))
    };
    let expires_ms = now_ms.saturating_add(validity_ms);
    tx.prepare_cached(
        "INSERT INTO tickets (channel_id, account_id, paid_micro, journal_id, expires_at_ms, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((channel_id, caller.account_id, paid, journal_id, expires_ms, now_ms))?;
    let ticket_id = tx.last_insert_rowid();
    record_activity(tx, caller.account_id, now_ms)?;
    Ok(Ticket {
        ticket_id,
        channel: channel.to_string(),
        account: caller.account_id,
        paid_micro: paid,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::split_payment;

    #[test]
    fn payments_split_exactly_to_the_micro_we() {
        // (paid, fee bps, sharer bps) -> (fee, sharer, streamer)
        let table = [
            ((1_000_000, 1_000, 0), (100_000, 0, 900_000)),
            ((1_000_000, 1_000, 2_500), (100_000, 225_000, 675_000)),
            ((999_999, 1_000, 3_333), (99_999, 299_970, 600_030)),
            ((1, 1_000, 5_000), (0, 0, 1)),
            ((7, 0, 10_000), (0, 7, 0)),
            ((10_000, 10_000, 5_000), (10_000, 0, 0)),
        ];
        for ((paid, f, s), want) in table {
            let got = split_payment(paid, f, s);
            assert_eq!(got, want, "{paid} {f} {s}");
            assert_eq!(got.0 + got.1 + got.2, paid);
        }
    }
}
