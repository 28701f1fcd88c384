//! Control-plane metrics. Created unregistered; the process that owns
//! `/metrics` registers them with [`ControlMetrics::register`]. Label sets
//! are bounded: routes are axum's matched templates, the per-channel gauge
//! keeps only the most recently reported `metrics_max_channels` channels.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::collections::HashMap;
use std::sync::Mutex;

/// Every collector of the control plane.
#[derive(Debug)]
pub struct ControlMetrics {
    /// `westream_control_http_requests_total{route,method,status}`.
    pub http_requests: IntCounterVec,
    /// `westream_control_http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
    /// `westream_control_ledger_entries_total{kind}`: journal entries posted.
    pub ledger_entries: IntCounterVec,
    /// `westream_control_ledger_postings_total{kind}`: postings (legs) written.
    pub ledger_postings: IntCounterVec,
    /// `westream_control_usage_batches_total{outcome}`: counted or duplicate.
    pub usage_batches: IntCounterVec,
    /// `westream_control_metered_bytes_total{direction}`: out (viewers) or in.
    pub metered_bytes: IntCounterVec,
    /// `westream_control_publish_checks_total{result}`.
    pub publish_checks: IntCounterVec,
    /// `westream_control_play_checks_total{result}`.
    pub play_checks: IntCounterVec,
    /// `westream_control_hook_cache_total{outcome}`: hit or miss.
    pub hook_cache: IntCounterVec,
    /// `westream_control_package_bytes_remaining{channel}`.
    pub package_bytes_remaining: IntGaugeVec,
    /// `westream_control_ws_clients`: room WebSocket clients connected now.
    pub ws_clients: IntGauge,
    /// `westream_control_ws_drops_total{reason}`: clients dropped by the
    /// server (`lagged`, `send_timeout`, `protocol`).
    pub ws_drops: IntCounterVec,
    /// `westream_control_ws_socket_waits_total`: times a client's write could
    /// not finish at once (its socket was full, or its reader was using the
    /// connection that moment), so it left its room's fan-out round to wait.
    pub ws_socket_waits: IntCounter,
    /// `westream_control_ws_fanout_round_seconds`: how long one fan-out
    /// round over a shard's clients took. An event waits at most about one
    /// round for its client's next write, so this bounds room latency.
    pub ws_fanout_rounds: Histogram,
    /// `westream_control_ws_fanout_writes_total`: socket writes (`sendmsg`
    /// calls) by the fan-out rounds.
    pub ws_fanout_writes: IntCounter,
    /// `westream_control_chat_messages_total`: chat messages sent to rooms.
    pub chat_messages: IntCounter,
    /// `westream_control_chat_refused_total{code}`: chat messages refused.
    pub chat_refused: IntCounterVec,
    /// `westream_control_gifts_total`: gift requests posted (not replays).
    pub gifts: IntCounter,
    /// `westream_control_gift_micro_we_total`: WE paid for gifts, micro-WE.
    pub gift_volume: IntCounter,
    channel_lru: Mutex<(u64, HashMap<String, u64>)>,
    max_channels: usize,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl ControlMetrics {
    /// Builds the collectors; `max_channels` bounds the per-channel gauge.
    pub fn new(max_channels: usize) -> Result<Self, prometheus::Error> {
        Ok(ControlMetrics {
            http_requests: counter(
                "westream_control_http_requests_total",
                "Control API requests by route template, method and status",
                &["route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "westream_control_http_request_duration_seconds",
                    "Control API request latency by route template",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                &["route"],
            )?,
            ledger_entries: counter("westream_control_ledger_entries_total", "Journal entries posted", &["kind"])?,
            ledger_postings: counter("westream_control_ledger_postings_total", "Ledger postings written", &["kind"])?,
            usage_batches: counter("westream_control_usage_batches_total", "Usage batches received", &["outcome"])?,
            metered_bytes: counter("westream_control_metered_bytes_total", "Bytes metered from usage batches", &["direction"])?,
            publish_checks: counter("westream_control_publish_checks_total", "Publish authorizations by result", &["result"])?,
            play_checks: counter("westream_control_play_checks_total", "Play authorizations by result", &["result"])?,
            hook_cache: counter("westream_control_hook_cache_total", "Hook answers from cache or store", &["outcome"])?,
            package_bytes_remaining: IntGaugeVec::new(
                Opts::new(
                    "westream_control_package_bytes_remaining",
                    "Unexpired package bytes left for a channel's owner (most recently reported channels only)",
                ),
                &["channel"],
            )?,
            ws_clients: IntGauge::new("westream_control_ws_clients", "Room WebSocket clients connected")?,
            ws_drops: counter("westream_control_ws_drops_total", "Room WebSocket clients dropped by the server", &["reason"])?,
            ws_socket_waits: IntCounter::new(
                "westream_control_ws_socket_waits_total",
                "Times a room WebSocket client's socket was full and it waited off the fan-out round",
            )?,
            ws_fanout_rounds: Histogram::with_opts(
                HistogramOpts::new("westream_control_ws_fanout_round_seconds", "Room fan-out rounds: time to visit a shard's clients once")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0]),
            )?,
            ws_fanout_writes: IntCounter::new("westream_control_ws_fanout_writes_total", "Socket writes by room fan-out rounds")?,
            chat_messages: IntCounter::new("westream_control_chat_messages_total", "Chat messages sent to rooms")?,
            chat_refused: counter("westream_control_chat_refused_total", "Chat messages refused, by error code", &["code"])?,
            gifts: IntCounter::new("westream_control_gifts_total", "Gift requests posted")?,
            gift_volume: IntCounter::new("westream_control_gift_micro_we_total", "Micro-WE paid for gifts")?,
            channel_lru: Mutex::new((0, HashMap::new())),
            max_channels,
        })
    }

    /// Registers every collector.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.http_requests.clone()))?;
        registry.register(Box::new(self.http_duration.clone()))?;
        registry.register(Box::new(self.ledger_entries.clone()))?;
        registry.register(Box::new(self.ledger_postings.clone()))?;
        registry.register(Box::new(self.usage_batches.clone()))?;
        registry.register(Box::new(self.metered_bytes.clone()))?;
        registry.register(Box::new(self.publish_checks.clone()))?;
        registry.register(Box::new(self.play_checks.clone()))?;
        registry.register(Box::new(self.hook_cache.clone()))?;
        registry.register(Box::new(self.package_bytes_remaining.clone()))?;
        registry.register(Box::new(self.ws_clients.clone()))?;
        registry.register(Box::new(self.ws_drops.clone()))?;
        registry.register(Box::new(self.ws_socket_waits.clone()))?;
        registry.register(Box::new(self.ws_fanout_rounds.clone()))?;
        registry.register(Box::new(self.ws_fanout_writes.clone()))?;
        registry.register(Box::new(self.chat_messages.clone()))?;
        registry.register(Box::new(self.chat_refused.clone()))?;
        registry.register(Box::new(self.gifts.clone()))?;
        registry.register(Box::new(self.gift_volume.clone()))?;
        Ok(())
    }

    /// Counts one posted journal entry of `legs` postings.
    pub fn record_entry(&self, kind: &str, legs: u64) {
        self.ledger_entries.with_label_values(&[kind]).inc();
        self.ledger_postings.with_label_values(&[kind]).inc_by(legs);
    }

    /// Sets a channel's bytes-remaining gauge, evicting the least recently
    /// reported channel beyond the bound.
    pub fn set_channel_remaining(&self, channel: &str, bytes: i64) {
        if self.max_channels == 0 {
            return;
        }
        let mut guard = self.channel_lru.lock().unwrap_or_else(|e| e.into_inner());
        let (clock, seen) = &mut *guard;
        *clock += 1;
        seen.insert(channel.to_string(), *clock);
        if seen.len() > self.max_channels {
            if let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                seen.remove(&oldest);
                // Absent label values are fine: removal is best effort.
                let _ = self.package_bytes_remaining.remove_label_values(&[&oldest]);
            }
        }
        self.package_bytes_remaining
            .with_label_values(&[channel])
            .set(bytes);
    }
}
