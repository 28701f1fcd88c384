//! Usage reporting and stop orders: the node side of bandwidth metering.
//!
//! Every `server.usage_report_interval_ms` the reporter takes the bytes each
//! channel moved since the last report from the hub (atomics the media path
//! bumps anyway; nothing here touches the hot loop) and sends them to the
//! control plane as one idempotent batch `(node_id, batch_seq)`. A batch
//! that fails is retried with the same sequence number, so it counts once.
//! Stop orders from the receipt or the poll end the channel's publisher when
//! their time comes; new publishes are refused by the control plane itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use westream_control::hooks::{ChannelUsage, MediaHooks, StopOrder, UsageBatch};

use crate::hub::Hub;

/// Unsent batches kept while the control plane is unreachable.
const MAX_PENDING_BATCHES: usize = 1000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The reporter's state.
pub struct UsageReporter {
    hub: Arc<Hub>,
    hooks: Arc<dyn MediaHooks>,
    node_id: String,
    interval: Duration,
    next_seq: u64,
    /// Maps a rendition channel to its source, whose owner pays for it.
    source_of: Box<dyn Fn(&str) -> String + Send + Sync>,
    pending: VecDeque<UsageBatch>,
    /// Stop orders seen, by channel: (issued_at_ms, stop_at_ms, done).
    orders: HashMap<String, (u64, u64, bool)>,
    /// Ended watch sessions of signed-in viewers ride in the batches.
    audience: Option<Arc<crate::audience::Audience>>,
}

impl UsageReporter {
    /// A reporter; batch numbers start at the boot time in ms, so they never
    /// repeat across restarts.
    pub fn new(hub: Arc<Hub>, hooks: Arc<dyn MediaHooks>, node_id: String, interval: Duration) -> UsageReporter {
        UsageReporter {
            hub,
            hooks,
            node_id,
            interval,
            next_seq: now_ms(),
            source_of: Box::new(|c: &str| c.to_string()),
            pending: VecDeque::new(),
            orders: HashMap::new(),
            audience: None,
        }
    }

    /// Sends the audience's ended watch sessions with the batches.
    pub fn with_audience(mut self, audience: Arc<crate::audience::Audience>) -> Self {
        self.audience = Some(audience);
        self
    }

    /// Bills renditions to their source channel.
    pub fn with_source_of(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.source_of = Box::new(f);
        self
    }

    /// Runs until shutdown, then sends a last batch.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.tick().await;
                    return;
                }
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    /// One metering round: collect, send, act on stop orders.
    pub async fn tick(&mut self) {
        let interval_s = self.interval.as_secs_f64();
        let mut merged: std::collections::BTreeMap<String, ChannelUsage> = std::collections::BTreeMap::new();
        for (channel, bytes_out, bytes_in, subscribers) in self.hub.take_usage() {
            let source = (self.source_of)(&channel);
            let e = merged.entry(source.clone()).or_insert(ChannelUsage {
                channel: source,
                bytes_out: 0,
                bytes_in: 0,
                viewer_seconds: 0,
            });
            e.bytes_out += bytes_out;
            // A rendition's ingest is our own transcoder's output, not the streamer's.
            if channel == e.channel {
                e.bytes_in += bytes_in;
            }
            e.viewer_seconds += (subscribers as f64 * interval_s).round() as u64;
        }
        let mut channels: Vec<ChannelUsage> = merged.into_values().collect();
        let mut watch = self.audience.as_ref().map(|a| a.take_watch_sessions(now_ms())).unwrap_or_default();
        while !channels.is_empty() || !watch.is_empty() {
            let rest = watch.split_off(watch.len().min(westream_control::hooks::MAX_BATCH_WATCH_SESSIONS));
            let batch = UsageBatch {
                node_id: self.node_id.clone(),
                batch_seq: self.next_seq,
                channels: std::mem::take(&mut channels),
                watch: std::mem::replace(&mut watch, rest),
            };
            self.next_seq += 1;
            if self.pending.len() >= MAX_PENDING_BATCHES {
                tracing::error!("control plane unreachable for too long: dropping the oldest usage batch");
                self.pending.pop_front();
            }
            self.pending.push_back(batch);
        }
        let mut orders = Vec::new();
        while let Some(batch) = self.pending.front() {
            match self.hooks.report_usage(batch).await {
                Ok(receipt) => {
                    orders.extend(receipt.stop_orders);
                    self.pending.pop_front();
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = self.pending.len(), "usage report failed; will retry");
                    break;
                }
            }
        }
        match self.hooks.stop_orders().await {
            Ok(o) => orders.extend(o),
            Err(e) => tracing::warn!(error = %e, "cannot read stop orders"),
        }
        self.apply(orders);
    }

    fn apply(&mut self, orders: Vec<StopOrder>) {
        let now = now_ms();
        for o in orders {
            let entry = self.orders.entry(o.channel.clone()).or_insert((0, 0, false));
            if entry.0 != o.issued_at_ms {
                tracing::warn!(channel = %o.channel, reason = %o.reason, stop_in_ms = o.stop_at_ms.saturating_sub(now), "stop order received");
                *entry = (o.issued_at_ms, o.stop_at_ms, false);
            }
        }
        for (channel, (_, stop_at, done)) in self.orders.iter_mut() {
            if !*done && *stop_at <= now {
                *done = true;
                if self.hub.stop_publisher(channel) {
                    tracing::warn!(%channel, "publisher stopped: bandwidth package used up");
                }
            }
        }
        // Forget orders long past, so a channel that buys more can be stopped again later.
        self.orders.retain(|_, (_, stop_at, done)| !*done || now.saturating_sub(*stop_at) < 3_600_000);
    }
}
