//! The edge role (`westream edge`, DESIGN.md §5): the same [`Server`] (hub,
//! HLS, HTTP-FLV, RTMP play) without RTMP publish, whose channels are fed
//! from origins over QUIC on demand.
//!
//! Contract: the first viewer of a channel (any protocol) makes the hub call
//! the on-demand hook, which starts one upstream task for the channel; the
//! viewer waits up to `edge.upstream_wait_ms` for it. The task pulls through
//! [`UpstreamClient::pull`] and pushes frames into a local publisher; when an
//! origin is lost the publisher is dropped, the hub's grace period keeps the
//! viewers, and the next origin's stream resumes the same channel. The task
//! ends once the channel has had no viewer and no request for
//! `edge.upstream_idle_timeout_ms`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use prometheus::{Gauge, IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;
use westream_control::hooks::{
    Denied, MediaHooks, PlayRequest, PublishGrant, PublishRequest, ReportError, StopOrder, UsageBatch, UsageReceipt,
};
use westream_control::edges::{EdgeHeartbeat, EdgeRegistration, EdgeUrls};
use westream_control::HttpHooks;
use westream_edge::registration::RegistrationClient;
use westream_edge::framing::RelayFrameKind;
use westream_edge::upstream::{PullEvent, UpstreamClient, UpstreamStats};
use westream_edge::EdgeConfig;

use crate::config::{ConfigError, Config};
use crate::hub::{Hub, HubError, Publisher};
use crate::media::FrameKind;
use crate::server::{Server, StartError};

/// Play authorization and usage reports of an edge: the control plane's
/// over HTTP when `--control` is given, else every play is allowed. Publish
/// is always refused: encoders publish to an origin.
pub struct EdgeHooks {
    control: Option<HttpHooks>,
}

#[async_trait::async_trait]
impl MediaHooks for EdgeHooks {
    async fn authorize_publish(&self, _req: &PublishRequest) -> Result<PublishGrant, Denied> {
        Err(Denied::Forbidden("this is an edge node: publish to an origin".into()))
    }

    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied> {
        match &self.control {
            Some(c) => c.authorize_play(req).await,
            None => Ok(()),
        }
    }

    async fn report_usage(&self, batch: &UsageBatch) -> Result<UsageReceipt, ReportError> {
        match &self.control {
            Some(c) => c.report_usage(batch).await,
            None => Ok(UsageReceipt::default()),
        }
    }

    async fn stop_orders(&self) -> Result<Vec<StopOrder>, ReportError> {
        match &self.control {
            Some(c) => c.stop_orders().await,
            None => Ok(Vec::new()),
        }
    }
}

struct ActiveUpstream {
    last_demand: Mutex<Instant>,
    cancel: CancellationToken,
}

/// The channels being pulled from origins.
pub struct Upstreams {
    client: UpstreamClient,
    hub: Arc<Hub>,
    active: DashMap<String, Arc<ActiveUpstream>>,
    idle_timeout: Duration,
    /// Hub subscriptions that are not viewers (the HLS packager's).
    internal_subscribers: usize,
    shutdown: CancellationToken,
    pulls_started: AtomicU64,
}

impl Upstreams {
    /// Channels with an upstream task now.
    pub fn active(&self) -> Vec<String> {
        let mut v: Vec<String> = self.active.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// Upstream tasks started since boot.
    pub fn pulls_started(&self) -> u64 {
        self.pulls_started.load(Ordering::Relaxed)
    }

    /// Counters of the QUIC client.
    pub fn stats(&self) -> &Arc<UpstreamStats> {
        &self.client.stats
    }

    fn demand(self: &Arc<Self>, channel: &str) {
        if self.shutdown.is_cancelled() || !crate::config::valid_channel_name(channel) {
            return;
        }
        if let Some(a) = self.active.get(channel) {
            if !a.cancel.is_cancelled() {
                *a.last_demand.lock() = Instant::now();
                return;
            }
        }
        let active = Arc::new(ActiveUpstream { last_demand: Mutex::new(Instant::now()), cancel: self.shutdown.child_token() });
        let fresh = match self.active.entry(channel.to_string()) {
            // An upstream being released as this viewer arrived: start anew.
            dashmap::Entry::Occupied(mut o) if o.get().cancel.is_cancelled() => {
                o.insert(Arc::clone(&active));
                true
            }
            dashmap::Entry::Occupied(o) => {
                *o.get().last_demand.lock() = Instant::now();
                false
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::clone(&active));
                true
            }
        };
        if !fresh {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.active.remove(channel);
            return;
        };
        self.pulls_started.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let channel = channel.to_string();
        let span = tracing::info_span!("edge_upstream", channel = %channel);
        rt.spawn(tracing::Instrument::instrument(this.run(channel, active), span));
    }

    fn viewers(&self, channel: &str) -> usize {
        let subs = self.hub.subscribers(channel);
        let internal = if self.hub.live(channel).is_some() { self.internal_subscribers } else { 0 };
        subs.saturating_sub(internal)
    }

    async fn run(self: Arc<Self>, channel: String, active: Arc<ActiveUpstream>) {
        tracing::info!("pulling from an origin on demand");
        let hub = Arc::clone(&self.hub);
        let mut publisher: Option<Publisher> = None;
        let pull = self.client.pull(&channel, active.cancel.clone(), |event| match event {
            PullEvent::Connected { .. } => {
                // A new origin stream resumes the channel within the grace period.
                publisher = None;
                match hub.publish(&channel) {
                    Ok(p) => publisher = Some(p),
                    Err(e) => tracing::warn!(error = %e, "cannot publish the pulled channel locally"),
                }
            }
            PullEvent::Frame(f) => {
                if publisher.is_none() {
                    // The previous upstream of this channel may still hold
                    // the local publisher for a moment while it winds down.
                    publisher = hub.publish(&channel).ok();
                }
                let Some(p) = &publisher else { return };
                let kind = match f.kind {
                    RelayFrameKind::Audio => FrameKind::Audio,
                    RelayFrameKind::Video => FrameKind::Video,
                    RelayFrameKind::Metadata => FrameKind::Metadata,
                };
                // The hub's timeline unwraps the 32-bit timestamp again.
                match p.push(kind, f.dts as u32, f.payload) {
                    Ok(_) => {}
                    Err(HubError::Frame(e)) => tracing::debug!(error = %e, "unparsable frame from origin skipped"),
                    Err(e) => {
                        tracing::warn!(error = %e, "local publisher gone");
                        publisher = None;
                    }
                }
            }
            // The origin's batch is all here: send it on now, not after this
            // edge's own merge_write_ms.
            PullEvent::CaughtUp => {
                if let Some(p) = &publisher {
                    p.flush();
                }
            }
            PullEvent::Lost { .. } => publisher = None,
        });
        let watchdog = async {
            loop {
                tokio::select! {
                    _ = active.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                let quiet = active.last_demand.lock().elapsed() >= self.idle_timeout;
                if quiet && self.viewers(&channel) == 0 {
                    tracing::info!("no viewers: releasing the upstream");
                    active.cancel.cancel();
                    return;
                }
            }
        };
        tokio::join!(pull, watchdog);
        self.active.remove_if(&channel, |_, v| Arc::ptr_eq(v, &active));
    }
}

/// A running edge.
pub struct EdgeNode {
    /// The media server (hub, packagers, listeners).
    pub server: Server,
    /// The upstream pulls.
    pub upstreams: Arc<Upstreams>,
    /// The validated `[edge]` table.
    pub config: EdgeConfig,
}

impl EdgeNode {
    /// Starts an edge from a config with an `[edge]` table. `control_url`
    /// is the control plane (play authorization, usage reports).
    pub async fn start(mut config: Config, control_url: Option<String>) -> Result<EdgeNode, StartError> {
        config.validate()?;
        let edge = config.edge.clone().ok_or_else(|| ConfigError::Invalid {
            key: "edge".into(),
            reason: "`westream edge` needs an [edge] table (id, origins, node_token)".into(),
        })?;
        // An edge serves viewers only: no relay, its own id in usage reports.
        config.relay.enabled = false;
        config.server.node_id = edge.id.clone();
        config.control = None;
        let control = match &control_url {
            Some(url) => Some(HttpHooks::new(url.clone(), edge.node_token.clone()).map_err(|e| StartError::Control(e.to_string()))?),
            None => None,
        };
        let hooks: Arc<dyn MediaHooks> = Arc::new(EdgeHooks { control });
        let client = UpstreamClient::new(&edge)?;
        let server = Server::start_with(config, hooks, axum::Router::new()).await?;
        let upstreams = Arc::new(Upstreams {
            client,
            hub: Arc::clone(&server.hub),
            active: DashMap::new(),
            idle_timeout: Duration::from_millis(edge.upstream_idle_timeout_ms),
            internal_subscribers: usize::from(server.hls.is_some()),
            shutdown: server.shutdown_token(),
            pulls_started: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&upstreams);
        server.hub.set_on_demand(
            Duration::from_millis(edge.upstream_wait_ms),
            Arc::new(move |channel: &str| {
                if let Some(u) = weak.upgrade() {
                    u.demand(channel);
                }
            }),
        );
        tokio::spawn(export_metrics(Arc::clone(&upstreams), server.shutdown_token()));
        tracing::info!(id = %edge.id, origins = edge.origins.len(), "edge serving");
        let node = EdgeNode { server, upstreams, config: edge };
        if let Some(url) = &control_url {
            node.start_heartbeats(url);
        }
        Ok(node)
    }

    /// What this edge registers with the control plane.
    pub fn registration(&self) -> EdgeRegistration {
        let urls = self.public_urls();
        EdgeRegistration {
            id: self.config.id.clone(),
            region: self.config.region.clone(),
            latitude: self.config.latitude,
            longitude: self.config.longitude,
            capacity_viewers: self.config.capacity_viewers,
            capacity_mbps: self.config.capacity_mbps,
            urls: EdgeUrls { rtmp: urls.rtmp, flv: urls.flv, hls: urls.hls },
        }
    }

    fn start_heartbeats(&self, control_url: &str) {
        let client = RegistrationClient::new(
            control_url,
            &self.config.node_token,
            self.registration(),
            Duration::from_millis(self.config.heartbeat_interval_ms),
        );
        let hub = Arc::clone(&self.server.hub);
        let upstreams = Arc::clone(&self.upstreams);
        let last = Mutex::new((Instant::now(), total_bytes_out(&hub)));
        let load = move || {
            let m = hub.metrics();
            let viewers: i64 = ["rtmp", "flv"].iter().map(|p| m.viewers.with_label_values(&[*p]).get()).sum();
            let now_bytes = total_bytes_out(&hub);
            let mut last = last.lock();
            let secs = last.0.elapsed().as_secs_f64().max(0.001);
            let mbps = now_bytes.saturating_sub(last.1) as f64 * 8.0 / 1e6 / secs;
            *last = (Instant::now(), now_bytes);
            EdgeHeartbeat { viewers: viewers.max(0) as u64, mbps, rtt_ms: 0.0, channels: upstreams.active() }
        };
        tokio::spawn(client.run(load, self.server.shutdown_token()));
    }

    /// The URL viewers use per protocol: the configured public URL, else
    /// derived from the listen addresses.
    pub fn public_urls(&self) -> westream_edge::PublicUrls {
        let u = &self.config.public_urls;
        let or = |s: &str, d: String| if s.is_empty() { d } else { s.to_string() };
        westream_edge::PublicUrls {
            rtmp: or(&u.rtmp, format!("rtmp://{}/live", self.server.rtmp_addr)),
            flv: or(&u.flv, format!("http://{}", self.server.http_addr)),
            hls: or(&u.hls, format!("http://{}", self.server.http_addr)),
        }
    }

    /// Stops pulling and serving.
    pub async fn shutdown(self) {
        self.server.shutdown_token().cancel();
        self.upstreams.client.close();
        self.server.shutdown().await;
    }
}

fn total_bytes_out(hub: &Hub) -> u64 {
    let m = hub.metrics();
    ["rtmp", "flv", "hls"].iter().map(|p| m.bytes_out.with_label_values(&[*p]).get()).sum()
}

/// Copies the upstream counters into `/metrics` once a second.
async fn export_metrics(upstreams: Arc<Upstreams>, shutdown: CancellationToken) {
    let registry = &upstreams.hub.metrics().registry;
    let rtt = Gauge::new("westream_edge_upstream_rtt_seconds", "Newest QUIC RTT estimate to an origin").expect("valid metric");
    let reconnects = IntCounter::new("westream_edge_upstream_reconnects_total", "Upstream streams lost (each followed by a reconnect)").expect("valid metric");
    let failed = IntCounter::new("westream_edge_upstream_failed_attempts_total", "Upstream attempts that failed before a header").expect("valid metric");
    let bytes = IntCounter::new("westream_edge_upstream_bytes_total", "Bytes received from origins").expect("valid metric");
    let active = IntGauge::new("westream_edge_upstreams", "Channels being pulled from origins").expect("valid metric");
    for c in [
        Box::new(rtt.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(reconnects.clone()),
        Box::new(failed.clone()),
        Box::new(bytes.clone()),
        Box::new(active.clone()),
    ] {
        if let Err(e) = registry.register(c) {
            tracing::debug!(error = %e, "edge metric already registered");
        }
    }
    loop {
        let s = upstreams.stats();
        rtt.set(s.rtt_us.load(Ordering::Relaxed) as f64 / 1e6);
        for (counter, value) in [(&reconnects, &s.reconnects), (&failed, &s.failed_attempts), (&bytes, &s.bytes_in)] {
            let v = value.load(Ordering::Relaxed);
            counter.inc_by(v.saturating_sub(counter.get()));
        }
        active.set(upstreams.active.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
