//! `[control.rooms]` and `[[control.gifts]]`: chat limits, fees, the vote
//! formula's parameters, tickets, and the gift catalogue. Every field has a
//! default; `validate` names the offending key.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Rooms, chat, gifts-as-votes and tickets (`[control.rooms]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Longest chat message, in characters (Unicode scalar values).
    pub max_message_chars: usize,
    /// Largest inbound WebSocket frame or message, bytes; bigger closes the
    /// connection (a client sending that is not a browser chatting).
    pub max_inbound_frame_bytes: usize,
    /// Chat messages one account may send per `chat_rate_window_ms` (all rooms).
    pub chat_rate_messages: u32,
    /// The window of `chat_rate_messages`.
    pub chat_rate_window_ms: u64,
    /// Largest slow mode a streamer may set (ms between one account's messages).
    pub max_slow_mode_ms: u64,
    /// Chat and gift events replayed to a new client in `hello`.
    pub history_len: usize,
    /// Frames a client may be behind before it is dropped ("too slow"); a
    /// frame is one event, or the events of one fan-out round.
    pub client_queue_events: usize,
    /// Shortest time between two frames to a client, ms: events of a busy
    /// room go out together, at most one frame per this window; an event in
    /// a quiet room goes out at once. Midway through a fan-out round that has
    /// run this long (a room of thousands), events go out at once to the
    /// clients still to come, who get one write per round either way.
    /// 0: a frame per round, however short.
    pub batch_window_ms: u64,
    /// Accepted for configs written for the earlier adaptive window; no
    /// effect since the fan-out batches by its own rounds (still checked to
    /// be 0..=1000).
    pub max_batch_window_ms: u64,
    /// Fan-out tasks per room, each writing to its share of the room's
    /// clients; 0: one per two runtime worker threads (at least one, at
    /// most 8), which leaves the other workers to the media path, HTTP and
    /// the rooms' readers. One shard's round over its clients is the
    /// longest an event waits for its write.
    pub fanout_shards: usize,
    /// A client whose socket does not take a write within this time is dropped.
    pub send_timeout_ms: u64,
    /// Viewer-count events are sent at most this often per room.
    pub viewers_interval_ms: u64,
    /// Clients per room beyond which new connections get 503.
    pub max_clients_per_room: usize,
    /// Longest room title, in characters.
    pub max_title_chars: usize,
    /// Platform fee on gifts and tickets, basis points (1/100 %).
    pub platform_fee_bps: u32,
    /// Highest sharer share a streamer may set, basis points.
    pub max_sharer_bps: u32,
    /// Most gifts of one kind in one request (`count`).
    pub max_gift_count: u32,
    /// Gift requests one sender may make per `gift_rate_window_ms` (429 beyond).
    pub gift_rate_requests: u32,
    /// The window of `gift_rate_requests`.
    pub gift_rate_window_ms: u64,
    /// Half-life of a vote, ms.
    pub vote_half_life_ms: u64,
    /// Cap of `sqrt(WE)` per sender, streamer and UTC day.
    pub vote_cap: f64,
    /// Accounts younger than this carry no vote weight (they still pay).
    pub min_account_age_ms: u64,
    /// Chat messages, share links or tickets an account needs before its
    /// gifts carry weight.
    pub min_activity_events: u32,
    /// How long a ticket (and its play token) is valid after purchase.
    pub ticket_validity_ms: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_message_chars: 500,
            max_inbound_frame_bytes: 4_096,
            chat_rate_messages: 5,
            chat_rate_window_ms: 10_000,
            max_slow_mode_ms: 600_000,
            history_len: 50,
            client_queue_events: 256,
            batch_window_ms: 10,
            max_batch_window_ms: 50,
            fanout_shards: 0,
            send_timeout_ms: 10_000,
            viewers_interval_ms: 1_000,
            max_clients_per_room: 50_000,
            max_title_chars: 120,
            platform_fee_bps: 1_000,
            max_sharer_bps: 5_000,
            max_gift_count: 100,
            gift_rate_requests: 10,
            gift_rate_window_ms: 10_000,
            vote_half_life_ms: 86_400_000,
            vote_cap: 100.0,
            min_account_age_ms: 3 * 86_400_000,
            min_activity_events: 1,
            ticket_validity_ms: 86_400_000,
        }
    }
}

/// One gift of the catalogue (`[[control.gifts]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftConfig {
    /// Stable id used in `POST /v1/rooms/{channel}/gifts`, e.g. `flower`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Price of one, micro-WE.
    pub price_micro_we: i64,
    /// Image URL for the page, e.g. `/assets/gifts/flower.svg`.
    #[serde(default)]
    pub image: String,
}

/// The default catalogue.
pub fn default_gifts() -> Vec<GiftConfig> {
    [
        ("kiss", "Kiss", 100_000),
        ("flower", "Flower", 1_000_000),
        ("heart", "Heart", 5_000_000),
        ("sports_car", "Sports car", 100_000_000),
        ("plane", "Plane", 500_000_000),
        ("rocket", "Rocket", 1_000_000_000),
    ]
    .into_iter()
    .map(|(id, name, price)| GiftConfig {
        id: id.to_string(),
        name: name.to_string(),
        price_micro_we: price,
        image: format!("/assets/gifts/{id}.svg"),
    })
    .collect()
}

fn err(key: &str, message: &str) -> ConfigError {
    ConfigError {
        key: format!("control.rooms.{key}"),
        message: message.to_string(),
    }
}

fn in_range<T: PartialOrd + Copy>(key: &str, v: T, lo: T, hi: T, msg: &str) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(err(key, msg));
    }
    Ok(())
}

impl RoomsConfig {
    /// Checks every field; `max_amount` is `control.max_amount_micro_we`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("max_message_chars", self.max_message_chars, 1, 10_000, "must be 1..=10000")?;
        in_range("max_inbound_frame_bytes", self.max_inbound_frame_bytes, 256, 1 << 20, "must be 256..=1048576")?;
        if self.max_inbound_frame_bytes < self.max_message_chars * 4 + 64 {
            return Err(err(
                "max_inbound_frame_bytes",
                "must hold a message of max_message_chars (4 bytes a character, plus 64 for the JSON)",
            ));
        }
        in_range("chat_rate_messages", self.chat_rate_messages, 1, 1_000_000, "must be 1..=1000000")?;
        in_range("chat_rate_window_ms", self.chat_rate_window_ms, 1, 3_600_000, "must be 1..=3600000")?;
        in_range("max_slow_mode_ms", self.max_slow_mode_ms, 0, 86_400_000, "at most one day")?;
        in_range("history_len", self.history_len, 0, 1_000, "must be 0..=1000")?;
        in_range("fanout_shards", self.fanout_shards, 0, super::fanout::MAX_SHARDS, "must be 0..=8 (0: one per two worker threads)")?;
        in_range("client_queue_events", self.client_queue_events, 1, 65_536, "must be 1..=65536")?;
        in_range("batch_window_ms", self.batch_window_ms, 0, 1_000, "must be 0..=1000 (0: no batching)")?;
        in_range("max_batch_window_ms", self.max_batch_window_ms, 0, 1_000, "must be 0..=1000 (no effect)")?;
        in_range("send_timeout_ms", self.send_timeout_ms, 1, 300_000, "must be 1..=300000")?;
        in_range("viewers_interval_ms", self.viewers_interval_ms, 100, 60_000, "must be 100..=60000")?;
        in_range("max_clients_per_room", self.max_clients_per_room, 1, 1_000_000, "must be 1..=1000000")?;
        in_range("max_title_chars", self.max_title_chars, 1, 1_000, "must be 1..=1000")?;
        in_range("platform_fee_bps", self.platform_fee_bps, 0, 10_000, "must be 0..=10000")?;
        in_range("max_sharer_bps", self.max_sharer_bps, 0, 10_000, "must be 0..=10000")?;
        in_range("max_gift_count", self.max_gift_count, 1, 10_000, "must be 1..=10000")?;
        in_range("gift_rate_requests", self.gift_rate_requests, 1, 1_000_000, "must be 1..=1000000")?;
        in_range("gift_rate_window_ms", self.gift_rate_window_ms, 1, 3_600_000, "must be 1..=3600000")?;
        in_range("vote_half_life_ms", self.vote_half_life_ms, 60_000, 365 * 86_400_000, "must be one minute..=one year")?;
        if !(self.vote_cap.is_finite() && self.vote_cap > 0.0) {
            return Err(err("vote_cap", "must be a positive number"));
        }
        in_range("min_account_age_ms", self.min_account_age_ms, 0, 365 * 86_400_000, "at most one year")?;
        in_range("ticket_validity_ms", self.ticket_validity_ms, 60_000, 365 * 86_400_000, "must be one minute..=one year")?;
        Ok(())
    }
}

/// Checks the catalogue: unique URL-safe ids, prices in range.
pub fn validate_gifts(gifts: &[GiftConfig], max_amount: i64) -> Result<(), ConfigError> {
    let mut ids = std::collections::HashSet::new();
    for (i, g) in gifts.iter().enumerate() {
        let key = |f: &str| format!("control.gifts[{i}].{f}");
        let url_safe = g.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if g.id.is_empty() || g.id.len() > 32 || !url_safe || !ids.insert(g.id.as_str()) {
            return Err(ConfigError {
                key: key("id"),
                message: "must be unique, 1..=32 of a-z 0-9 _ -".into(),
            });
        }
        if g.name.is_empty() || g.name.chars().count() > 64 {
            return Err(ConfigError { key: key("name"), message: "must be 1..=64 characters".into() });
        }
        if g.price_micro_we <= 0 || g.price_micro_we > max_amount / 10_000 {
            return Err(ConfigError {
                key: key("price_micro_we"),
                message: "must be positive and at most max_amount_micro_we / 10000 (so count * price stays in range)".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        RoomsConfig::default().validate().expect("defaults are valid");
        validate_gifts(&default_gifts(), 1_000_000_000_000_000).expect("default catalogue");
        let cases: Vec<(RoomsConfig, &str)> = vec![
            (RoomsConfig { platform_fee_bps: 10_001, ..Default::default() }, "control.rooms.platform_fee_bps"),
            (RoomsConfig { vote_cap: f64::NAN, ..Default::default() }, "control.rooms.vote_cap"),
            (RoomsConfig { vote_half_life_ms: 0, ..Default::default() }, "control.rooms.vote_half_life_ms"),
            (RoomsConfig { max_inbound_frame_bytes: 1_000, ..Default::default() }, "control.rooms.max_inbound_frame_bytes"),
            (RoomsConfig { client_queue_events: 0, ..Default::default() }, "control.rooms.client_queue_events"),
            (RoomsConfig { batch_window_ms: 1_001, ..Default::default() }, "control.rooms.batch_window_ms"),
            (RoomsConfig { max_batch_window_ms: 1_001, ..Default::default() }, "control.rooms.max_batch_window_ms"),
        ];
        for (c, key) in cases {
            assert_eq!(c.validate().map_err(|e| e.key), Err(key.to_string()));
        }
        let mut gifts = default_gifts();
        gifts[2].id = "kiss".into();
        assert_eq!(validate_gifts(&gifts, i64::MAX).map_err(|e| e.key), Err("control.gifts[2].id".to_string()));
        let parsed: RoomsConfig = toml::from_str("platform_fee_bps = 500\nvote_cap = 50.0").expect("partial table");
        assert_eq!((parsed.platform_fee_bps, parsed.max_message_chars), (500, 500));
        assert!(toml::from_str::<RoomsConfig>("fee = 1").is_err(), "unknown keys refused");
    }
}
