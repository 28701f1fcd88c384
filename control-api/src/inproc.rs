//! The in-process [`MediaHooks`]: answers publish and play checks from a
//! short-lived cache and goes to the store (off the async workers) only on
//! a miss, so a burst of viewers costs one lookup per channel per TTL.
//!
//! Freshness: writes in this process that change an answer (key revoked or
//! rotated, package bought, package run dry) clear the cache at once; other
//! processes (through [`crate::HttpHooks`]) see a change within the TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::clock::Clock;
use crate::config::ControlConfig;
use crate::hooks::{
    Denied, MediaHooks, PlayRequest, PublishGrant, PublishRequest, ReportError, StopOrder,
    UsageBatch, UsageReceipt,
};
use crate::metrics::ControlMetrics;
use crate::plane::{blocking, now_ms};
use crate::store::{Store, StoreError};
use crate::tickets::TicketGate;

/// Entries beyond which a cache map is simply emptied: a crude bound that
/// keeps a key-guessing flood from growing memory.
const MAX_CACHE_ENTRIES: usize = 50_000;

/// A TTL map of hook answers. `Unavailable` answers are never cached.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    map: RwLock<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            _ => None,
        }
    }

    pub(crate) fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }

    pub(crate) fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Maps a store failure to the denial a client sees.
fn unavailable(e: StoreError) -> Denied {
    tracing::error!(error = %e, "control store failed during a hook");
    Denied::Unavailable("control store error".to_string())
}

/// The hooks of a control plane running in this process.
pub struct InProcessHooks {
    store: Arc<dyn Store>,
    metrics: Arc<ControlMetrics>,
    apps: Vec<String>,
    charge_ingest: bool,
    grace_ms: u64,
    publish_cache: TtlCache<String, Result<PublishGrant, Denied>>,
    /// Requested name -> the channel it plays (itself, or the source of a
    /// rendition `{channel}_{rendition}`). Tickets are checked after it.
    play_cache: TtlCache<String, Result<String, Denied>>,
    tickets: Arc<TicketGate>,
    clock: Arc<dyn Clock>,
    /// Where watch sessions of counted batches are tallied (rewards).
    rooms: Arc<crate::rooms::Rooms>,
    min_watch_session_ms: u64,
}

impl std::fmt::Debug for InProcessHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessHooks")
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

impl InProcessHooks {
    pub(crate) fn new(
        config: &ControlConfig,
        store: Arc<dyn Store>,
        metrics: Arc<ControlMetrics>,
        tickets: Arc<TicketGate>,
        clock: Arc<dyn Clock>,
        rooms: Arc<crate::rooms::Rooms>,
    ) -> Self {
        let ttl = Duration::from_millis(config.hook_cache_ttl_ms);
        InProcessHooks {
            store,
            metrics,
            apps: config.apps.clone(),
            charge_ingest: config.charge_ingest_bytes,
            grace_ms: config.stop_grace_ms,
            publish_cache: TtlCache::new(ttl),
            play_cache: TtlCache::new(ttl),
            tickets,
            clock,
            rooms,
            min_watch_session_ms: config.rewards.min_watch_session_ms,
        }
    }

    /// The play- and viewer-token signer.
    pub(crate) fn tickets(&self) -> &TicketGate {
        &self.tickets
    }

    /// Tallies the watch sessions of a batch counted for the first time.
    /// Valid sessions only: a genuine, unexpired viewer token, a session
    /// at least `control.rewards.min_watch_session_ms` long (the media node
    /// reports only sessions that received media).
    fn tally_watch(&self, batch: &UsageBatch) {
        let now = self.clock.now_ms();
        let activity = self.rooms.activity();
        for w in batch.watch.iter().take(crate::hooks::MAX_BATCH_WATCH_SESSIONS) {
            if w.watched_ms < self.min_watch_session_ms {
                continue;
            }
            let Some(account) = self.tickets.verify_viewer(&w.viewer, now) else { continue };
            let slot = match w.protocol.as_str() {
                "rtmp" => 0,
                "flv" => 1,
                "hls" => 2,
                _ => continue,
            };
            activity.account(account, now, |i| {
                i.watch_seconds[slot] += w.watched_ms / 1000;
                i.plays += 1;
            });
        }
    }

    /// Forgets every cached answer (after a write that changes them).
    pub fn invalidate(&self) {
        self.publish_cache.clear();
        self.play_cache.clear();
    }

    fn check_app(&self, app: &str) -> Result<(), Denied> {
        if self.apps.iter().any(|a| a == app) {
            Ok(())
        } else {
            Err(Denied::UnknownApp {
                app: app.to_string(),
            })
        }
    }

    async fn publish_uncached(&self, req: &PublishRequest) -> Result<PublishGrant, Denied> {
        self.check_app(&req.app)?;
        if let Some(answer) = self.publish_cache.get(req.stream_key.as_str()) {
            self.metrics.hook_cache.with_label_values(&["hit"]).inc();
            return answer;
        }
        self.metrics.hook_cache.with_label_values(&["miss"]).inc();
        let key = req.stream_key.clone();
        let now = now_ms();
        let lookup = blocking(&self.store, move |s| s.publish_lookup(&key, now))
            .await
            .map_err(unavailable)?;
        let answer = match lookup {
            None => Err(Denied::UnknownKey),
            Some(l) if l.bytes_remaining <= 0 => Err(Denied::NoBandwidth { channel: l.channel }),
            Some(l) => Ok(PublishGrant { channel: l.channel }),
        };
        self.publish_cache
            .put(req.stream_key.clone(), answer.clone());
        answer
    }

    /// The channel a play of `name` needs rights to: the channel itself,
    /// or, for a name that is no channel, the source of the rendition
    /// `{channel}_{rendition}` (split at the last `_`).
    async fn resolve_play(&self, name: &str) -> Result<String, Denied> {
        if let Some(answer) = self.play_cache.get(name) {
            self.metrics.hook_cache.with_label_values(&["hit"]).inc();
            return answer;
        }
        self.metrics.hook_cache.with_label_values(&["miss"]).inc();
        let lookup = name.to_string();
        let found = blocking(&self.store, move |s| {
            if s.channel(&lookup)?.is_some() {
                return Ok(Some(lookup));
            }
            match lookup.rsplit_once('_') {
                Some((base, r)) if !base.is_empty() && !r.is_empty() => {
                    Ok(s.channel(base)?.map(|_| base.to_string()))
                }
                _ => Ok(None),
            }
        })
        .await
        .map_err(unavailable)?;
        let answer = found.ok_or_else(|| Denied::UnknownChannel {
            channel: name.to_string(),
        });
        self.play_cache.put(name.to_string(), answer.clone());
        answer
    }

    async fn play_uncached(&self, req: &PlayRequest) -> Result<(), Denied> {
        self.check_app(&req.app)?;
        let channel = self.resolve_play(&req.channel).await?;
        // From memory: prices and the secret; never the database.
        self.tickets
            .check(&channel, req.token.as_deref(), self.clock.now_ms())
    }
}

fn result_label<T>(r: &Result<T, Denied>) -> &'static str {
    match r {
        Ok(_) => "allowed",
        Err(d) => d.label(),
    }
}

#[async_trait::async_trait]
impl MediaHooks for InProcessHooks {
    async fn authorize_publish(&self, req: &PublishRequest) -> Result<PublishGrant, Denied> {
        let out = self.publish_uncached(req).await;
        self.metrics
            .publish_checks
            .with_label_values(&[result_label(&out)])
            .inc();
        if let Err(d) = &out {
            tracing::info!(app = %req.app, reason = d.label(), client = ?req.client_addr, "publish refused");
        }
        out
    }

    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied> {
        let out = self.play_uncached(req).await;
        self.metrics
            .play_checks
            .with_label_values(&[result_label(&out)])
            .inc();
        out
    }

    async fn report_usage(&self, batch: &UsageBatch) -> Result<UsageReceipt, ReportError> {
        let span = tracing::info_span!("usage_batch", node = %batch.node_id, seq = batch.batch_seq);
        self.record(batch).instrument(span).await
    }

    async fn stop_orders(&self) -> Result<Vec<StopOrder>, ReportError> {
        blocking(&self.store, |s| s.stop_orders())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "stop order poll failed");
                ReportError::Unavailable("control store error".to_string())
            })
    }
}

impl InProcessHooks {
    async fn record(&self, batch: &UsageBatch) -> Result<UsageReceipt, ReportError> {
        let owned = batch.clone();
        let (charge, grace) = (self.charge_ingest, self.grace_ms);
        let now = now_ms();
        let receipt = blocking(&self.store, move |s| {
            s.record_usage(&owned, charge, grace, now)
        })
        .await
        .map_err(|e| match e {
            StoreError::InvalidInput { .. } | StoreError::Conflict { .. } => {
                ReportError::Rejected(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "usage batch failed");
                ReportError::Unavailable("control store error".to_string())
            }
        })?;
        if !receipt.duplicate {
            self.tally_watch(batch);
        }
        if receipt.duplicate {
            self.metrics
                .usage_batches
                .with_label_values(&["duplicate"])
                .inc();
        } else {
            self.metrics
                .usage_batches
                .with_label_values(&["counted"])
                .inc();
            let out: u64 = batch
                .channels
                .iter()
                .map(|c| c.bytes_out)
                .fold(0, u64::saturating_add);
            let inb: u64 = batch
                .channels
                .iter()
                .map(|c| c.bytes_in)
                .fold(0, u64::saturating_add);
            self.metrics
                .metered_bytes
                .with_label_values(&["out"])
                .inc_by(out);
            self.metrics
                .metered_bytes
                .with_label_values(&["in"])
                .inc_by(inb);
        }
        for (channel, bytes) in &receipt.bytes_remaining {
            self.metrics.set_channel_remaining(channel, *bytes);
        }
        if receipt.bytes_remaining.values().any(|b| *b <= 0) {
            // An owner ran dry: the next publish must see it now, not after the TTL.
            self.invalidate();
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_answers_expire_and_clear() {
        let c: TtlCache<String, u32> = TtlCache::new(Duration::from_millis(30));
        c.put("a".into(), 1);
        assert_eq!(c.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("a"), None, "expired");
        c.put("b".into(), 2);
        c.clear();
        assert_eq!(c.get("b"), None);
        let off: TtlCache<String, u32> = TtlCache::new(Duration::ZERO);
        off.put("a".into(), 1);
        assert_eq!(off.get("a"), None, "a zero TTL caches nothing");
    }
}
