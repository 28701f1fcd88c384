//! The edge scenario (issue #6's speed asks): an origin (`westream serve`
//! with the control plane and the QUIC relay) and an edge (`westream edge`)
//! started here on free loopback ports, and three measurements:
//!
//! 1. cold time-to-first-frame at the edge: an HTTP-FLV request for a
//!    channel the edge is not pulling, until the first video keyframe tag;
//!    between trials the bench waits for the edge to release the upstream
//!    (`westream_edge_upstreams 0` in its `/metrics`). The origin's warm
//!    time-to-first-frame is the baseline;
//! 2. added latency: pairs of HTTP-FLV viewers, one on the origin and one on
//!    the edge; for every video frame both received, edge arrival minus
//!    origin arrival (frames matched by their stamp's sequence number);
//! 3. viewers per edge core: the fan-out scenario with N HTTP-FLV viewers on
//!    the edge (its CPU), then the same N on the origin directly (baseline).
//!
//! One stamped publisher (the fan-out scenario's) publishes to the origin
//! for 1 and 2; each capacity run publishes its own.

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::fanout::{self, FanoutConfig, FanoutReport};
use crate::http1::Http1Conn;
use crate::http_flv;
use crate::media::{FrameFactory, StreamShape};
use crate::probe::ViewerProbe;
use crate::procs::{fresh_dir, render, tcp_port, udp_port};
use crate::rtmp;
use crate::stats::Percentiles;
use crate::target::{HttpTarget, RtmpTarget};
use crate::ShapeArgs;
use crate::westream::{default_binary, WestreamNode};

/// `edge`: origin + edge, cold start, added latency, viewers per core.
#[derive(Args, Debug)]
pub(crate) struct EdgeArgs {
    /// The binary started for both roles (default: `westream` next to this one).
    #[arg(long)]
    westream_bin: Option<PathBuf>,
    /// Origin config (no placeholders; ports and data dir come on the command line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/westream/origin.toml"))]
    origin_config: PathBuf,
    /// Edge config template (@RELAY@, @CERT_SHA256@).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/westream/edge.toml"))]
    edge_config: PathBuf,
    /// Cold time-to-first-frame trials at the edge (and warm ones at the origin).
    #[arg(long, default_value_t = 5)]
    ttff_trials: u32,
    /// Origin/edge viewer pairs for the added latency.
    #[arg(long, default_value_t = 3)]
    latency_pairs: u32,
    /// How long the latency pairs play.
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// HTTP-FLV viewer counts for the capacity runs (comma-separated; 0 skips).
    #[arg(long, value_delimiter = ',', default_value = "500")]
    capacity_viewers: Vec<u32>,
    /// Measured window of each capacity run.
    #[arg(long, default_value_t = 20)]
    capacity_secs: u64,
    #[arg(long, default_value_t = 200)]
    ramp_per_sec: u32,
    /// The stamped publisher's stream.
    #[command(flatten)]
    shape: ShapeArgs,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// Time-to-first-keyframe trials.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TtffReport {
    /// Warm: the origin has the channel and a GOP cache.
    pub(crate) origin_ms: Vec<f64>,
    /// Cold: the edge pulls the channel for this request. The first trial
    /// also opens the edge's QUIC connection to the origin.
    pub(crate) edge_cold_ms: Vec<f64>,
    pub(crate) errors: Vec<String>,
}

/// Origin/edge viewer pairs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LatencyReport {
    pub(crate) pairs: u32,
    /// Video frames received by both viewers of a pair, summed.
    pub(crate) matched_frames: u64,
    /// Frames the origin viewer had and the edge viewer missed.
    pub(crate) edge_missing_frames: u64,
    /// Edge arrival minus origin arrival.
    pub(crate) added_ms: Percentiles,
    /// Publish-to-receive latency of each group.
    pub(crate) origin_latency_ms: Percentiles,
    pub(crate) edge_latency_ms: Percentiles,
}

/// N viewers on the edge, then N on the origin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CapacityReport {
    pub(crate) viewers: u32,
    pub(crate) edge: FanoutReport,
    pub(crate) origin: FanoutReport,
    /// Viewers / (CPU seconds per second): viewers one fully used core serves.
    pub(crate) edge_viewers_per_core: f64,
    pub(crate) origin_viewers_per_core: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EdgeReport {
    pub(crate) ttff: TtffReport,
    pub(crate) latency: LatencyReport,
    pub(crate) capacity: Vec<CapacityReport>,
}

/// Edge arrival minus origin arrival for each frame both received, in µs;
/// both lists are in increasing sequence order (as the probe records them).
pub(crate) fn matched_deltas(origin: &[(u32, u64)], edge: &[(u32, u64)]) -> (Vec<i64>, u64) {
    let mut deltas = Vec::with_capacity(origin.len().min(edge.len()));
    let mut missing = 0;
    let mut e = edge.iter().peekable();
    for &(seq, at_origin) in origin {
        while e.next_if(|(s, _)| *s < seq).is_some() {}
        match e.peek() {
            Some(&&(s, at_edge)) if s == seq => {
                deltas.push(at_edge as i64 - at_origin as i64);
                e.next();
            }
            _ => missing += 1,
        }
    }
    (deltas, missing)
}

/// The value of an unlabelled gauge in Prometheus text.
pub(crate) fn gauge_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

async fn edge_upstreams(edge: &HttpTarget) -> anyhow::Result<f64> {
    let mut conn = Http1Conn::connect(edge.addr, 64 * 1024).await?;
    let resp = conn.get(&edge.authority, "/metrics", 1 << 20).await?;
    let text = String::from_utf8_lossy(&resp.kept);
    Ok(gauge_value(&text, "westream_edge_upstreams").unwrap_or(0.0))
}

/// Waits until the edge has released every upstream: a pause longer than
/// its idle timeout plus the one-second metrics export, then the gauge at 0.
async fn wait_released(edge: &HttpTarget) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for _ in 0..40 {
        if edge_upstreams(edge).await? == 0.0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow!("the edge kept its upstream for over 10 s without viewers"))
}

async fn ttff_ms(target: &HttpTarget, clock: Clock) -> anyhow::Result<f64> {
    let probe = tokio::time::timeout(Duration::from_secs(10), http_flv::first_keyframe(target, clock))
        .await
        .map_err(|_| anyhow!("no keyframe within 10 s"))??;
    probe
        .first_video_us
        .map(|t| t.saturating_sub(probe.connect_start_us) as f64 / 1000.0)
        .ok_or_else(|| anyhow!("no video"))
}

async fn measure_ttff(origin: &HttpTarget, edge: &HttpTarget, trials: u32, clock: Clock) -> anyhow::Result<TtffReport> {
    let mut report = TtffReport { origin_ms: Vec::new(), edge_cold_ms: Vec::new(), errors: Vec::new() };
    for i in 0..trials {
        match ttff_ms(origin, clock).await {
            Ok(ms) => report.origin_ms.push(ms),
            Err(e) => report.errors.push(format!("origin: {e:#}")),
        }
        if i > 0 {
            wait_released(edge).await?;
        }
        match ttff_ms(edge, clock).await {
            Ok(ms) => report.edge_cold_ms.push(ms),
            Err(e) => report.errors.push(format!("edge: {e:#}")),
        }
        eprintln!(
            "[edge] ttff trial {}: origin {:?} ms, edge cold {:?} ms",
            i + 1,
            report.origin_ms.last(),
            report.edge_cold_ms.last()
        );
    }
    Ok(report)
}

async fn measure_latency(
    origin: &HttpTarget,
    edge: &HttpTarget,
    pairs: u32,
    secs: u64,
    clock: Clock,
) -> LatencyReport {
    let (stop_tx, stop) = watch::channel(false);
    let spawn = |t: &HttpTarget| tokio::spawn(http_flv::run_player(Arc::new(t.clone()), clock, true, stop.clone()));
    let handles: Vec<_> = (0..pairs).map(|_| (spawn(origin), spawn(edge))).collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let _ = stop_tx.send(true);
    let mut deltas = Vec::new();
    let mut missing = 0;
    let (mut origin_lat, mut edge_lat) = (Vec::new(), Vec::new());
    for (o, e) in handles {
        let (Ok(Ok(mut o)), Ok(Ok(mut e))) = (
            tokio::time::timeout(Duration::from_secs(5), o).await,
            tokio::time::timeout(Duration::from_secs(5), e).await,
        ) else {
            continue;
        };
        for p in [&o, &e] {
            if let Some(err) = &p.error {
                eprintln!("[edge] latency viewer: {err}");
            }
        }
        let arrivals = |p: &ViewerProbe| p.video_arrivals.clone().unwrap_or_default();
        let (d, m) = matched_deltas(&arrivals(&o), &arrivals(&e));
        deltas.extend(d);
        missing += m;
        origin_lat.append(&mut o.latencies_us);
        edge_lat.append(&mut e.latencies_us);
    }
    LatencyReport {
        pairs,
        matched_frames: deltas.len() as u64,
        edge_missing_frames: missing,
        added_ms: Percentiles::from_signed_samples(&mut deltas, 1000.0),
        origin_latency_ms: Percentiles::from_samples(&mut origin_lat, 1000.0),
        edge_latency_ms: Percentiles::from_samples(&mut edge_lat, 1000.0),
    }
}

fn viewers_per_core(r: &FanoutReport) -> f64 {
    r.server
        .as_ref()
        .map_or(0.0, |s| f64::from(r.viewers_receiving) / (s.cpu_percent_of_core / 100.0).max(1e-9))
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

pub(crate) async fn edge_command(args: EdgeArgs) -> anyhow::Result<()> {
    let binary = args.westream_bin.clone().unwrap_or_else(default_binary);
    let shape = StreamShape::new(args.shape.bitrate_kbps, args.shape.fps, args.shape.gop_frames).map_err(|e| anyhow!(e))?;
    let mut origin = WestreamNode::serve(
        &binary,
        &args.origin_config,
        "origin",
        loopback(tcp_port(None)?),
        loopback(tcp_port(None)?),
        Some(loopback(udp_port(None)?)),
    )?;
    let fingerprint = origin.relay_fingerprint()?;
    let relay = origin.relay.ok_or_else(|| anyhow!("origin started without a relay"))?.to_string();
    let edge_dir = fresh_dir("edge-config")?;
    let edge_config = edge_dir.join("edge.toml");
    let template = std::fs::read_to_string(&args.edge_config)
        .with_context(|| format!("read {}", args.edge_config.display()))?;
    std::fs::write(&edge_config, render(&template, &[("RELAY", relay), ("CERT_SHA256", fingerprint)]))?;
    let control = format!("http://{}", origin.http);
    let edge = WestreamNode::edge(&binary, &edge_config, "edge", loopback(tcp_port(None)?), loopback(tcp_port(None)?), &control)?;
    eprintln!("[edge] origin pid {} http {}, edge pid {} http {}", origin.pid(), origin.http, edge.pid(), edge.http);

    let flv = |node: &WestreamNode| HttpTarget::parse(&format!("http://{}/live/bench.flv", node.http)).map_err(|e| anyhow!(e));
    let (origin_flv, edge_flv) = (flv(&origin)?, flv(&edge)?);
    let publish = RtmpTarget::parse(&format!("rtmp://{}/live/bench-key", origin.rtmp)).map_err(|e| anyhow!(e))?;

    // One publisher for the cold starts and the latency pairs.
    let clock = Clock::new();
    let (stop_publisher, publisher_stop) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let publisher = tokio::spawn(rtmp::run_publisher(
        publish.clone(),
        FrameFactory::new(shape),
        clock,
        ready_tx,
        Arc::new(AtomicU32::new(0)),
        publisher_stop,
    ));
    tokio::time::timeout(Duration::from_secs(15), ready_rx)
        .await
        .map_err(|_| anyhow!("publisher did not start within 15 s"))?
        .map_err(|_| anyhow!("publisher failed to start"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ttff = measure_ttff(&origin_flv, &edge_flv, args.ttff_trials.clamp(1, 50), clock).await?;
    let latency = measure_latency(&origin_flv, &edge_flv, args.latency_pairs.clamp(1, 50), args.latency_secs.clamp(1, 600), clock).await;
    let _ = stop_publisher.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;

    let mut capacity = Vec::new();
    for &n in args.capacity_viewers.iter().filter(|&&n| n > 0) {
        let run = |label: &str, node: &WestreamNode, target: &HttpTarget| FanoutConfig {
            label: label.to_string(),
            publish: publish.clone(),
            play: RtmpTarget::parse(&format!("rtmp://{}/live/bench", node.rtmp)).expect("loopback URL"),
            flv: Some(target.clone()),
            viewers: 0,
            flv_viewers: n.min(10_000),
            bitrate_kbps: args.shape.bitrate_kbps,
            fps: args.shape.fps,
            gop_frames: args.shape.gop_frames,
            duration_secs: args.capacity_secs.clamp(1, 600),
            warmup_secs: 3,
            ramp_per_sec: args.ramp_per_sec,
            drain_ms: 1000,
            server_pid: Some(node.pid()),
            listen_pause: None,
        };
        let limit = Duration::from_secs(args.capacity_secs + 90);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let on_edge = bounded(fanout::run(run(&format!("edge {n} flv"), &edge, &edge_flv)), limit).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let on_origin = bounded(fanout::run(run(&format!("origin {n} flv"), &origin, &origin_flv)), limit).await?;
        capacity.push(CapacityReport {
            viewers: n,
            edge_viewers_per_core: viewers_per_core(&on_edge),
            origin_viewers_per_core: viewers_per_core(&on_origin),
            edge: on_edge,
            origin: on_origin,
        });
    }
    origin.child.check_running()?;
    let report = EdgeReport { ttff, latency, capacity };
    print_report(&report);
    if let Some(path) = &args.json_out {
        crate::write_json(path, &report)?;
    }
    Ok(())
}

async fn bounded(
    run: impl std::future::Future<Output = anyhow::Result<FanoutReport>>,
    limit: Duration,
) -> anyhow::Result<FanoutReport> {
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| anyhow!("capacity run exceeded {limit:?}"))?
}

fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let list: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
    format!("median {:.1}, max {:.1} ms ({})", sorted[sorted.len() / 2], sorted[sorted.len() - 1], list.join(", "))
}

pub(crate) fn print_report(r: &EdgeReport) {
    println!("== edge: cold time to first keyframe (HTTP-FLV) ==");
    println!("  origin (warm)          {}", summary(&r.ttff.origin_ms));
    println!("  edge (cold)            {}", summary(&r.ttff.edge_cold_ms));
    let later = r.ttff.edge_cold_ms.get(1..).unwrap_or_default();
    println!("  edge, channel re-pulled on an open QUIC connection: {}", summary(later));
    if !r.ttff.errors.is_empty() {
        println!("  errors: {}", r.ttff.errors.join(" | "));
    }
    let l = &r.latency;
    println!("== edge: added latency, {} origin/edge HTTP-FLV pairs ==", l.pairs);
    println!("  matched video frames   {} ({} missing at the edge)", l.matched_frames, l.edge_missing_frames);
    println!("  added ms p50/p99/max   {:.2} / {:.2} / {:.2}", l.added_ms.p50, l.added_ms.p99, l.added_ms.max);
    println!(
        "  latency ms p50/p99     origin {:.2} / {:.2}, edge {:.2} / {:.2}",
        l.origin_latency_ms.p50, l.origin_latency_ms.p99, l.edge_latency_ms.p50, l.edge_latency_ms.p99
    );
    for c in &r.capacity {
        println!("== edge: {} HTTP-FLV viewers on the edge, then on the origin ==", c.viewers);
        let labels = [c.edge.label.as_str(), c.origin.label.as_str()];
        let columns = [fanout::rows(&c.edge), fanout::rows(&c.origin)];
        crate::compare::print_columns(&labels, &columns, &["publish url", "play url", "error samples"]);
        println!(
            "  viewers per fully used core: edge {:.0}, origin {:.0} (edge/origin {})",
            c.edge_viewers_per_core,
            c.origin_viewers_per_core,
            crate::compare::ratio(c.edge_viewers_per_core, c.origin_viewers_per_core)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_matched_by_sequence() {
        let origin = [(1, 100), (2, 200), (3, 300), (5, 500)];
        let edge = [(2, 210), (3, 330), (4, 400), (5, 495)];
        let (deltas, missing) = matched_deltas(&origin, &edge);
        assert_eq!(deltas, vec![10, 30, -5]);
        assert_eq!(missing, 1, "frame 1 never reached the edge viewer");
        assert_eq!(matched_deltas(&[], &edge), (vec![], 0));
    }

    #[test]
    fn gauges_are_read_from_prometheus_text() {
        let text = "# HELP westream_edge_upstreams x\n# TYPE westream_edge_upstreams gauge\nwestream_edge_upstreams 1\nwestream_edge_upstreams_other 5\n";
        assert_eq!(gauge_value(text, "westream_edge_upstreams"), Some(1.0));
        assert_eq!(gauge_value(text, "missing"), None);
    }
}
