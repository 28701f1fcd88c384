//! Rooms: one per channel. Live state and viewer counts from the media
//! server, the WebSocket chat with its limits, gift events, and the ticket
//! prices the play hooks read.
//!
//! Contract for the media server ([`Rooms::stream_started`],
//! [`Rooms::stream_ended`], [`Rooms::set_viewers`]): cheap, non-blocking, no
//! database, callable from any task. A room emits `stream` and `viewers`
//! events only when something changed, `viewers` at most once per
//! `viewers_interval_ms`.
//!
//! Fan-out: an event is serialized once, into the room's log of the last
//! [`ROOM_LOG_EVENTS`] events (`Utf8Bytes`, shared, never copied per
//! client), and chat and gifts into its history for `hello`. A few shard
//! tasks per room ([`fanout`]) write the log to the clients: each round
//! takes what was published since the last one as one frame, and gives each
//! client everything it lacks in one write, so a busy room costs a client
//! one frame per round (at most one per `batch_window_ms`), not one per
//! event, and a quiet room adds no delay. A client that falls further
//! behind than `client_queue_events` frames, or whose socket does not take
//! a write within `send_timeout_ms`, is dropped with a close reason: memory
//! never grows with a slow reader.
//!
//! Memory bound (checked by `tests/ws_memory.rs`): an idle client costs at
//! most **64 KiB** of server memory (its reader task, a 4 KiB read buffer,
//! the socket and connection state; measured well below that).

mod chat;
mod config;
mod events;
pub(crate) mod fanout;
pub(crate) mod ws;

pub use chat::{ChatPolicy, ChatRefusal, RateLimiter};
pub use config::{default_gifts, validate_gifts, GiftConfig, RoomsConfig};
pub use events::ViewerCounts;
pub(crate) use events::ViewersBody;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::metrics::ControlMetrics;
use crate::store::{AccountId, GiftReceipt, ModerationRow, RoomsSnapshot};
use crate::tickets::TicketGate;
use crate::votes::{VoteRules, EMPTY_LOG2};
use events::{Event, Hello};
use fanout::Shard;

/// An account may like a channel once per this interval; likes count as
/// activity for the daily rewards.
pub const LIKE_INTERVAL_MS: u64 = 10_000;

/// The documented per-idle-client memory bound, bytes.
pub const IDLE_CLIENT_BOUND_BYTES: u64 = 64 * 1024;

/// Events a room keeps for its fan-out shards: far more than one round
/// takes (chat is rate limited per account), so a shard never misses one.
pub const ROOM_LOG_EVENTS: usize = 4096;

/// One room's shared state.
pub struct Room {
    channel: String,
    state: Mutex<RoomState>,
    clients: AtomicUsize,
    history_len: usize,
    /// A shard's ring of frames (`client_queue_events`).
    ring_len: usize,
    /// Shortest time between two frames of a shard (`batch_window_ms`).
    min_gap: Duration,
    /// Fan-out shards (`fanout_shards`; 0: one per two runtime workers).
    shards: usize,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("channel", &self.channel).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct RoomState {
    live: bool,
    viewers: ViewerCounts,
    viewers_sent: ViewerCounts,
    viewers_sent_at: Option<Instant>,
    log2_score: f64,
    policy: ChatPolicy,
    /// Chat and gift events, for `hello`.
    history: VecDeque<Utf8Bytes>,
    /// The last [`ROOM_LOG_EVENTS`] events, the first being `log_first_seq`.
    log: VecDeque<Utf8Bytes>,
    log_first_seq: u64,
    /// The fan-out shards, started with the first client.
    shards: Vec<Arc<Shard>>,
    next_shard: usize,
}

/// What `hello` says of a room, taken under its lock and serialized
/// after (a burst of joins does not hold up chat and gifts).
#[derive(Debug)]
struct HelloState {
    live: bool,
    viewers: ViewerCounts,
    log2_score: f64,
    history: Vec<Utf8Bytes>,
}

impl HelloState {
    fn of(st: &RoomState) -> Self {
        HelloState {
            live: st.live,
            viewers: st.viewers,
            log2_score: st.log2_score,
            history: st.history.iter().cloned().collect(),
        }
    }
}

impl Room {
    fn new(channel: &str, config: &RoomsConfig) -> Arc<Self> {
        Arc::new(Room {
            channel: channel.to_string(),
            state: Mutex::new(RoomState {
                live: false,
                viewers: ViewerCounts::default(),
                viewers_sent: ViewerCounts::default(),
                viewers_sent_at: None,
                log2_score: EMPTY_LOG2,
                policy: ChatPolicy::default(),
                history: VecDeque::new(),
                log: VecDeque::new(),
                log_first_seq: 0,
                shards: Vec::new(),
                next_shard: 0,
            }),
            clients: AtomicUsize::new(0),
            history_len: config.history_len,
            ring_len: config.client_queue_events.max(1),
            min_gap: Duration::from_millis(config.batch_window_ms),
            shards: config.fanout_shards,
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Connected WebSocket clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Whether the stream is live.
    pub fn live(&self) -> bool {
        self.state.lock().live
    }

    /// The last reported viewer counts.
    pub fn viewers(&self) -> ViewerCounts {
        self.state.lock().viewers
    }

    /// The stored score (see [`crate::votes`]).
    pub fn log2_score(&self) -> f64 {
        self.state.lock().log2_score
    }

    /// Sends a serialized event to every client, in order; `history` ones
    /// (chat, gifts) are also kept for `hello`.
    fn publish(&self, st: &mut RoomState, bytes: Utf8Bytes, history: bool) {
        if history && self.history_len > 0 {
            if st.history.len() >= self.history_len {
                st.history.pop_front();
            }
            st.history.push_back(bytes.clone());
        }
        if st.log.len() >= ROOM_LOG_EVENTS {
            st.log.pop_front();
            st.log_first_seq += 1;
        }
        st.log.push_back(bytes);
        for shard in &st.shards {
            shard.notify();
        }
    }

    /// The shard a new client joins (round robin); the shards start with
    /// the first client, `fanout_shards` of them (needs a runtime).
    pub(crate) fn shard_for_new_client(self: &Arc<Self>, metrics: &Arc<ControlMetrics>) -> Arc<Shard> {
        let mut st = self.state.lock();
        if st.shards.is_empty() {
            let shards = match self.shards {
                0 => tokio::runtime::Handle::current().metrics().num_workers() / 2,
                n => n,
            };
            let next = st.log_first_seq + st.log.len() as u64;
            st.shards = (0..shards.clamp(1, fanout::MAX_SHARDS))
                .map(|_| Shard::spawn(self, next, self.ring_len, self.min_gap, Arc::clone(metrics)))
                .collect();
        }
        let i = st.next_shard % st.shards.len();
        st.next_shard = st.next_shard.wrapping_add(1);
        Arc::clone(&st.shards[i])
    }
}

/// Every room of this control plane. See the module doc for the contract.
pub struct Rooms {
    config: RoomsConfig,
    rules: VoteRules,
    clock: Arc<dyn Clock>,
    metrics: Arc<ControlMetrics>,
    tickets: Arc<TicketGate>,
    rooms: DashMap<String, Arc<Room>>,
    chat_rate: Mutex<RateLimiter<AccountId>>,
    gift_rate: Mutex<RateLimiter<AccountId>>,
    /// One like per account and channel per [`LIKE_INTERVAL_MS`].
    like_rate: Mutex<RateLimiter<(AccountId, u64)>>,
    /// Accounts whose activity already reached `min_activity_events`, so
    /// their chat no longer needs a write.
    active: DashMap<AccountId, ()>,
    next_chat_id: AtomicU64,
    /// Activity indicators for the daily rewards, tallied in memory.
    activity: crate::rewards::activity::ActivityLog,
    ticker: AtomicBool,
    me: Weak<Rooms>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").field("rooms", &self.rooms.len()).finish_non_exhaustive()
    }
}

impl Rooms {
    pub(crate) fn new(
        config: RoomsConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<ControlMetrics>,
        tickets: Arc<TicketGate>,
        snapshot: RoomsSnapshot,
    ) -> Arc<Rooms> {
        let rules = vote_rules(&config);
        let rooms = Arc::new_cyclic(|me| Rooms {
            chat_rate: Mutex::new(RateLimiter::new(config.chat_rate_messages, config.chat_rate_window_ms)),
            gift_rate: Mutex::new(RateLimiter::new(config.gift_rate_requests, config.gift_rate_window_ms)),
            like_rate: Mutex::new(RateLimiter::new(1, LIKE_INTERVAL_MS)),
            config,
            rules,
            clock,
            metrics,
            tickets,
            rooms: DashMap::new(),
            active: DashMap::new(),
            next_chat_id: AtomicU64::new(1),
            activity: crate::rewards::activity::ActivityLog::default(),
            ticker: AtomicBool::new(false),
            me: me.clone(),
        });
        for s in &snapshot.settings {
            rooms.tickets.set_price(&s.channel, s.ticket_price_micro);
            if s.slow_mode_ms > 0 {
                rooms.room(&s.channel).state.lock().policy.slow_mode_ms = s.slow_mode_ms;
            }
        }
        for m in &snapshot.moderation {
            rooms.apply_moderation(m);
        }
        for (channel, l) in &snapshot.scores {
            rooms.room(channel).state.lock().log2_score = *l;
        }
        rooms
    }

    /// The room of a channel, created empty on first use. Callers make sure
    /// the channel exists (the media server only reports authorized ones).
    pub fn room(&self, channel: &str) -> Arc<Room> {
        if let Some(r) = self.rooms.get(channel) {
            return Arc::clone(&r);
        }
        Arc::clone(
            &self
                .rooms
                .entry(channel.to_string())
                .or_insert_with(|| Room::new(channel, &self.config)),
        )
    }

    /// The room if it exists in memory.
    pub fn get(&self, channel: &str) -> Option<Arc<Room>> {
        self.rooms.get(channel).map(|r| Arc::clone(&r))
    }

    /// Channels live now.
    pub fn live_channels(&self) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|r| r.live())
            .map(|r| r.key().clone())
            .collect()
    }

    /// The vote rules in force.
    pub fn rules(&self) -> VoteRules {
        self.rules
    }

    /// The rooms configuration.
    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// The activity tally of the daily rewards.
    /// A like of `channel` by `account`: counted (true) unless the account
    /// liked it less than [`LIKE_INTERVAL_MS`] ago.
    pub fn like(&self, account: AccountId, channel: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        let now = self.clock.now_ms();
        if !self.like_rate.lock().allow((account, h.finish()), now) {
            return false;
        }
        self.activity.account(account, now, |i| i.likes += 1);
        true
    }

    pub fn activity(&self) -> &crate::rewards::activity::ActivityLog {
        &self.activity
    }

    /// The ticket gate (prices and token secret).
    pub fn tickets(&self) -> &Arc<TicketGate> {
        &self.tickets
    }

    /// The current score of a room (decayed to now).
    pub fn score(&self, channel: &str) -> f64 {
        let l = self.get(channel).map_or(EMPTY_LOG2, |r| r.log2_score());
        self.rules.score_at(l, self.clock.now_ms())
    }

    /// The media server: a stream went live.
    pub fn stream_started(&self, channel: &str) {
        self.set_live(channel, true);
    }

    /// The media server: a stream ended.
    pub fn stream_ended(&self, channel: &str) {
        self.set_live(channel, false);
    }

    fn set_live(&self, channel: &str, live: bool) {
        let room = self.room(channel);
        let mut st = room.state.lock();
        if st.live == live {
            return;
        }
        st.live = live;
        let now = self.clock.now_ms();
        if live {
            self.activity.stream_started(channel, now);
        } else {
            self.activity.stream_ended(channel, now);
        }
        let bytes = Event::Stream { live, ts_ms: now }.to_bytes();
        room.publish(&mut st, bytes, false);
    }

    /// The media server: current viewer counts of a channel (call it about
    /// once a second). Emits a `viewers` event when they changed, at most
    /// once per `viewers_interval_ms`; a change inside the interval is sent
    /// when it ends.
    pub fn set_viewers(&self, channel: &str, v: ViewerCounts) {
        self.activity.viewers(channel, self.clock.now_ms(), v.rtmp + v.flv + v.hls);
        let room = self.room(channel);
        {
            let mut st = room.state.lock();
            if st.viewers == v {
                return;
            }
            st.viewers = v;
        }
        self.flush_viewers(&room);
        self.start_ticker();
    }

    fn flush_viewers(&self, room: &Room) {
        let interval = Duration::from_millis(self.config.viewers_interval_ms);
        let mut st = room.state.lock();
        let due = st.viewers_sent_at.is_none_or(|t| t.elapsed() >= interval);
        if st.viewers != st.viewers_sent && due {
            st.viewers_sent = st.viewers;
            st.viewers_sent_at = Some(Instant::now());
            let bytes = Event::Viewers(st.viewers.into()).to_bytes();
            room.publish(&mut st, bytes, false);
        }
    }

    /// One task per `Rooms` sends viewer changes held back by the interval.
    /// Started on first use from inside a runtime; ends with the `Rooms`.
    fn start_ticker(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.ticker.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let every = Duration::from_millis(self.config.viewers_interval_ms);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(rooms) = me.upgrade() else { break };
                let all: Vec<Arc<Room>> = rooms.rooms.iter().map(|r| Arc::clone(&r)).collect();
                for room in all {
                    rooms.flush_viewers(&room);
                }
            }
        });
    }

    /// Applies a settings change to memory (after it was stored).
    pub(crate) fn apply_settings(&self, s: &crate::store::RoomSettings) {
        self.tickets.set_price(&s.channel, s.ticket_price_micro);
        self.room(&s.channel).state.lock().policy.slow_mode_ms = s.slow_mode_ms;
    }

    /// Applies a mute or ban to memory (after it was stored).
    pub(crate) fn apply_moderation(&self, m: &ModerationRow) {
        let room = self.room(&m.channel);
        let mut st = room.state.lock();
        if m.banned {
            st.policy.banned.insert(m.account_id);
        } else {
            st.policy.banned.remove(&m.account_id);
        }
        if m.muted_until_ms > 0 {
            st.policy.muted.insert(m.account_id, m.muted_until_ms);
        } else {
            st.policy.muted.remove(&m.account_id);
        }
    }

    /// Takes a gift request token for a sender; false: rate limited.
    pub(crate) fn allow_gift(&self, sender: AccountId) -> bool {
        self.gift_rate.lock().allow(sender, self.clock.now_ms())
    }

    /// Announces a posted gift in its room and updates the room's score.
    pub(crate) fn gift_posted(&self, g: &GiftReceipt) {
        let paid = u64::try_from(g.paid_micro).unwrap_or(0);
        self.activity.account(g.account, g.ts_ms, |i| i.gifts_sent_micro += paid);
        let received = u64::try_from(g.streamer_micro).unwrap_or(0);
        self.activity.channel_gift(&g.channel, g.ts_ms, received);
        let room = self.room(&g.channel);
        let bytes = Event::Gift {
            id: g.gift_id,
            account: g.account,
            handle: &g.handle,
            gift: &g.gift,
            name: &g.name,
            count: g.count,
            paid_micro: g.paid_micro,
            vote_weight: g.vote_weight,
            ts_ms: g.ts_ms,
        }
        .to_bytes();
        let mut st = room.state.lock();
        if let Some(l) = g.log2_score {
            st.log2_score = l;
        }
        room.publish(&mut st, bytes, true);
    }

    /// Runs a chat message through every limit and, if it passes, sends it
    /// to the room. Returns whether the account's activity should be
    /// recorded (it has not reached `min_activity_events` yet).
    pub(crate) fn handle_chat(
        &self,
        room: &Room,
        caller: Option<&crate::store::Caller>,
        text: &str,
    ) -> Result<bool, ChatRefusal> {
        let caller = caller.ok_or(ChatRefusal::Unauthenticated)?;
        let now = self.clock.now_ms();
        let mut st = room.state.lock();
        let text = st
            .policy
            .check(caller.account_id, text, self.config.max_message_chars, now)?;
        if !self.chat_rate.lock().allow(caller.account_id, now) {
            return Err(ChatRefusal::RateLimited {
                messages: self.config.chat_rate_messages,
                window_ms: self.config.chat_rate_window_ms,
            });
        }
        let bytes = Event::Chat {
            id: self.next_chat_id.fetch_add(1, Ordering::Relaxed),
            account: caller.account_id,
            handle: &caller.handle,
            text,
            ts_ms: now,
        }
        .to_bytes();
        room.publish(&mut st, bytes, true);
        drop(st);
        self.metrics.chat_messages.inc();
        Ok(!self.active.contains_key(&caller.account_id))
    }

    /// Remembers that an account is active enough (no more writes needed).
    pub(crate) fn mark_active(&self, account: AccountId, events: i64) {
        if events >= i64::from(self.config.min_activity_events) {
            self.active.insert(account, ());
        }
    }

    /// The `hello` message of a client joining now, from the room's state
    /// as taken under its lock (the fan-out shard takes the events
    /// published so far in the same breath: see [`fanout`]).
    fn hello(&self, room: &Room, st: &HelloState, you: Option<AccountId>) -> Utf8Bytes {
        Hello {
            kind: "hello",
            channel: &room.channel,
            live: st.live,
            viewers: st.viewers.into(),
            score: self.rules.score_at(st.log2_score, self.clock.now_ms()),
            you,
        }
        .to_bytes(st.history.iter())
    }

    pub(crate) fn metrics(&self) -> &Arc<ControlMetrics> {
        &self.metrics
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The vote rules of a rooms config.
pub fn vote_rules(c: &RoomsConfig) -> VoteRules {
    VoteRules {
        min_account_age_ms: i64::try_from(c.min_account_age_ms).unwrap_or(i64::MAX),
        min_activity_events: i64::from(c.min_activity_events),
        cap: c.vote_cap,
        half_life_ms: i64::try_from(c.vote_half_life_ms).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn rooms() -> (Arc<Rooms>, Arc<ManualClock>) {
        rooms_with(RoomsConfig::default())
    }

    fn rooms_with(config: RoomsConfig) -> (Arc<Rooms>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let metrics = Arc::new(ControlMetrics::new(10).expect("metrics"));
        let gate = Arc::new(TicketGate::new(b"0123456789abcdef".to_vec()));
        let r = Rooms::new(config, clock.clone(), metrics, gate, RoomsSnapshot::default());
        (r, clock)
    }

    /// The room's log from event `from` on, parsed.
    fn log_since(room: &Room, from: u64) -> Vec<serde_json::Value> {
        let st = room.state.lock();
        let skip = from.saturating_sub(st.log_first_seq) as usize;
        st.log.iter().skip(skip).map(|e| serde_json::from_str(e.as_str()).expect("json event")).collect()
    }

    #[tokio::test]
    async fn stream_and_viewer_events_only_on_change() {
        let (rooms, _) = rooms();
        let room = rooms.room("show");
        rooms.stream_started("show");
        rooms.stream_started("show");
        let v = ViewerCounts { rtmp: 1, flv: 2, hls: 3 };
        rooms.set_viewers("show", v);
        rooms.set_viewers("show", v);
        rooms.stream_ended("show");
        let got = log_since(&room, 0);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["live"], true);
        assert_eq!(got[1]["total"], 6);
        assert_eq!(got[2]["live"], false);
        // A second change inside the interval waits for the ticker.
        rooms.set_viewers("show", ViewerCounts { rtmp: 9, ..v });
        assert_eq!(log_since(&room, 3).len(), 0, "held back");
        let deadline = Instant::now() + Duration::from_secs(5);
        while log_since(&room, 3).is_empty() {
            assert!(Instant::now() < deadline, "the ticker sends the held change");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log_since(&room, 3)[0]["rtmp"], 9);
    }

    #[test]
    fn the_log_keeps_the_last_events_in_order_and_counts_the_ones_it_let_go() {
        let (rooms, _) = rooms();
        let room = rooms.room("show");
        let ann = crate::store::Caller { account_id: 7, handle: "ann".into() };
        let extra = 10;
        for i in 0..ROOM_LOG_EVENTS + extra {
            // Around the chat limits: the log is what is tested here.
            let mut st = room.state.lock();
            let bytes = Event::Chat { id: i as u64, account: ann.account_id, handle: &ann.handle, text: "x", ts_ms: 0 }.to_bytes();
            room.publish(&mut st, bytes, true);
        }
        let st = room.state.lock();
        assert_eq!(st.log.len(), ROOM_LOG_EVENTS);
        assert_eq!(st.log_first_seq, extra as u64);
        let first: serde_json::Value = serde_json::from_str(st.log[0].as_str()).expect("json");
        assert_eq!(first["id"], extra, "the oldest kept is the one after those let go");
        assert_eq!(st.history.len(), RoomsConfig::default().history_len);
    }

    #[test]
    fn chat_goes_to_history_and_hello() {
        let (rooms, _) = rooms();
        let room = rooms.room("show");
        let ann = crate::store::Caller { account_id: 7, handle: "ann".into() };
        assert_eq!(rooms.handle_chat(&room, None, "hi"), Err(ChatRefusal::Unauthenticated));
        assert_eq!(rooms.handle_chat(&room, Some(&ann), "hi"), Ok(true));
        rooms.mark_active(7, 1);
        assert_eq!(rooms.handle_chat(&room, Some(&ann), "again"), Ok(false));
        let state = HelloState::of(&room.state.lock());
        let hello = rooms.hello(&room, &state, Some(7));
        let v: serde_json::Value = serde_json::from_str(hello.as_str()).expect("json");
        assert_eq!(v["you"], 7);
        assert_eq!(v["recent"][1]["text"], "again");
    }
}
