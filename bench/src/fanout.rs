//! The fan-out scenario: one stamped publisher, N RTMP and M HTTP-FLV
//! players in this process, the server's CPU and memory alongside.
//!
//! Timeline: publish, warm up (so a server with a GOP cache has one), take
//! the server's "before" sample, ramp viewers at `ramp_per_sec` while the
//! stream runs, stop publishing `duration_secs` after the ramp started, let
//! the last frames drain, stop the viewers, report. Every wait is bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::http_flv;
use crate::media::{FrameFactory, StreamShape};
use crate::probe::ViewerProbe;
use crate::procstat::{clock_ticks_per_sec, cpu_seconds_between, sample_tree, ServerMeter};
use crate::rtmp;
use crate::stats::Percentiles;
use crate::target::{HttpTarget, RtmpTarget};

/// Everything one fan-out run needs.
#[derive(Debug, Clone)]
pub(crate) struct FanoutConfig {
    pub(crate) label: String,
    pub(crate) publish: RtmpTarget,
    pub(crate) play: RtmpTarget,
    pub(crate) flv: Option<HttpTarget>,
    pub(crate) viewers: u32,
    pub(crate) flv_viewers: u32,
    pub(crate) bitrate_kbps: u64,
    pub(crate) fps: u32,
    pub(crate) gop_frames: u32,
    pub(crate) duration_secs: u64,
    pub(crate) warmup_secs: u64,
    pub(crate) ramp_per_sec: u32,
    pub(crate) drain_ms: u64,
    pub(crate) server_pid: Option<u32>,
    /// RTMP players on one epoll thread that sleeps this long once caught
    /// up ([`rtmp::PlayerLoop`]); `None`: a tokio task per player.
    pub(crate) listen_pause: Option<Duration>,
}

/// The server's cost over the measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerReport {
    pub(crate) pid: u32,
    pub(crate) processes: usize,
    pub(crate) cpu_seconds: f64,
    /// CPU seconds per wall second, in percent of one core.
    pub(crate) cpu_percent_of_core: f64,
    pub(crate) rss_before_kb: u64,
    /// Highest RSS sampled during the window (every 250 ms).
    pub(crate) rss_peak_kb: u64,
    /// Sum of VmHWM at the end (peak since the process started).
    pub(crate) hwm_end_kb: u64,
    /// (peak - before) / viewers receiving.
    pub(crate) kb_per_viewer: f64,
    /// CPU seconds per 10^9 bytes delivered to viewers.
    pub(crate) cpu_seconds_per_gb: f64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutReport {
    pub(crate) label: String,
    pub(crate) publish_url: String,
    pub(crate) play_url: String,
    pub(crate) viewers_requested: u32,
    pub(crate) flv_viewers_requested: u32,
    /// Viewers whose play request the server accepted.
    pub(crate) viewers_playing: u32,
    /// Viewers that received at least one stamped video frame.
    pub(crate) viewers_receiving: u32,
    /// Viewers that received every frame from their first keyframe on.
    pub(crate) viewers_complete: u32,
    pub(crate) viewer_errors: u32,
    pub(crate) error_samples: Vec<String>,
    pub(crate) video_frames_sent: u32,
    pub(crate) audio_frames_sent: u32,
    pub(crate) publisher_bytes: u64,
    pub(crate) publisher_max_lag_ms: f64,
    /// Sum over viewers of video frames received from their first keyframe.
    pub(crate) video_frames_received: u64,
    /// Sum over viewers of video frames sent from their first keyframe.
    pub(crate) video_frames_expected: u64,
    pub(crate) video_frames_disordered: u64,
    pub(crate) audio_frames_received: u64,
    pub(crate) startup_ms: Percentiles,
    pub(crate) latency_ms: Percentiles,
    pub(crate) bytes_delivered: u64,
    pub(crate) window_seconds: f64,
    pub(crate) delivered_mbit_per_sec: f64,
    pub(crate) bench_cpu_seconds: f64,
    pub(crate) server: Option<ServerReport>,
}

/// Runs the scenario; the caller bounds it with a timeout as well.
pub(crate) async fn run(cfg: FanoutConfig) -> anyhow::Result<FanoutReport> {
    let shape =
        StreamShape::new(cfg.bitrate_kbps, cfg.fps, cfg.gop_frames).map_err(|e| anyhow!(e))?;
    if cfg.flv_viewers > 0 && cfg.flv.is_none() {
        anyhow::bail!("--flv-viewers needs --flv-url");
    }
    let clock = Clock::new();
    let ticks = clock_ticks_per_sec();
    let bench_before = sample_tree(std::process::id());

    eprintln!(
        "[{}] publishing to {} ({} kb/s, {} fps, GOP {})",
        cfg.label, cfg.publish.tc_url, cfg.bitrate_kbps, cfg.fps, cfg.gop_frames
    );
    let (publisher_stop_tx, publisher_stop) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let video_sent = Arc::new(AtomicU32::new(0));
    let publisher = tokio::spawn(rtmp::run_publisher(
        cfg.publish.clone(),
        FrameFactory::new(shape),
        clock,
        ready_tx,
        video_sent.clone(),
        publisher_stop,
    ));
    let ready = tokio::time::timeout(Duration::from_secs(15), ready_rx).await;
    if !matches!(ready, Ok(Ok(_))) {
        publisher.abort();
        return match publisher.await {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow!("publisher did not start within 15 s")),
        };
    }
    tokio::time::sleep(Duration::from_secs(cfg.warmup_secs)).await;

    // The measured window starts here.
    let meter = cfg.server_pid.and_then(ServerMeter::start);
    let window_start = clock.now_us();

    let (viewer_stop_tx, viewer_stop) = watch::channel(false);
    let play = Arc::new(cfg.play.clone());
    let flv = cfg.flv.clone().map(Arc::new);
    let total = cfg.viewers + cfg.flv_viewers;
    let mut viewers: Vec<JoinHandle<Option<ViewerProbe>>> = Vec::with_capacity(total as usize);
    let player_loop = cfg.listen_pause.map(|pause| rtmp::PlayerLoop::start(clock, pause)).transpose()?;
    let window_end = window_start + cfg.duration_secs * 1_000_000;
    let ramp = u64::from(cfg.ramp_per_sec.max(1));
    eprintln!(
        "[{}] ramping {} RTMP + {} HTTP-FLV viewers at {}/s, window {} s",
        cfg.label, cfg.viewers, cfg.flv_viewers, ramp, cfg.duration_secs
    );
    for i in 0..total {
        let at = window_start + u64::from(i) * 1_000_000 / ramp;
        if at >= window_end {
            eprintln!(
                "[{}] ramp ran past the window; {i} viewers started",
                cfg.label
            );
            break;
        }
        tokio::time::sleep_until(clock.instant_at(at)).await;
        // Interleave the two kinds so both see the same ramp.
        let flv_turn = match &flv {
            Some(_) if cfg.flv_viewers > 0 => {
                u64::from(i) * u64::from(cfg.flv_viewers) / u64::from(total)
                    != (u64::from(i) + 1) * u64::from(cfg.flv_viewers) / u64::from(total)
            }
            _ => false,
        };
        let handle = match (&flv, flv_turn, &player_loop) {
            (Some(target), true, _) => {
                let player = http_flv::run_player(target.clone(), clock, false, viewer_stop.clone());
                tokio::spawn(async move { Some(player.await) })
            }
            (_, _, Some(lp)) => tokio::spawn(lp.start_player(play.clone(), clock)),
            _ => {
                let player = rtmp::run_player(play.clone(), clock, viewer_stop.clone());
                tokio::spawn(async move { Some(player.await) })
            }
        };
        viewers.push(handle);
    }
    let started = viewers.len();
    tokio::time::sleep_until(clock.instant_at(window_end)).await;

    // End of the measured window.
    let usage = match meter {
        Some(m) => m.finish().await,
        None => None,
    };
    let window_seconds = (clock.now_us() - window_start) as f64 / 1e6;
    let _ = publisher_stop_tx.send(true);
    let publish_stats = match tokio::time::timeout(Duration::from_secs(5), publisher).await {
        Ok(Ok(Ok(stats))) => stats,
        Ok(Ok(Err(e))) => return Err(e.context("publisher failed during the run")),
        Ok(Err(e)) => return Err(anyhow!("publisher task: {e}")),
        Err(_) => return Err(anyhow!("publisher did not stop within 5 s")),
    };
    tokio::time::sleep(Duration::from_millis(cfg.drain_ms)).await;
    let _ = viewer_stop_tx.send(true);
    let mut probes = Vec::with_capacity(started);
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for handle in viewers {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(join_deadline, handle).await {
            Ok(Ok(probe)) => probes.extend(probe),
            Ok(Err(e)) => eprintln!("[{}] viewer task failed: {e}", cfg.label),
            Err(_) => abort.abort(),
        }
    }
    if let Some(lp) = player_loop {
        let ended = lp.ended();
        if ended > 0 {
            eprintln!("[{}] {ended} RTMP players' connections ended before the stop", cfg.label);
        }
        probes.extend(lp.finish()?);
    }
    let bench_after = sample_tree(std::process::id());

    let video_sent_total = publish_stats
        .video_sent
        .max(video_sent.load(Ordering::Relaxed));
    let mut startups: Vec<u32> = probes
        .iter()
        .filter_map(|p| p.startup_us())
        .map(|us| us.min(u64::from(u32::MAX)) as u32)
        .collect();
    let latency_count: usize = probes.iter().map(|p| p.latencies_us.len()).sum();
    let mut latencies = Vec::with_capacity(latency_count);
    for p in &mut probes {
        latencies.append(&mut p.latencies_us);
    }
    let mut error_samples: Vec<String> = Vec::new();
    for e in probes.iter().filter_map(|p| p.error.as_ref()) {
        if error_samples.len() < 5 && !error_samples.contains(e) {
            error_samples.push(e.clone());
        }
    }
    let bytes_delivered: u64 = probes.iter().map(|p| p.bytes).sum();
    let receiving = probes.iter().filter(|p| p.first_video_us.is_some()).count() as u32;
    let server = usage.map(|u| ServerReport {
        pid: u.pid,
        processes: u.processes,
        cpu_seconds: u.cpu_seconds,
        cpu_percent_of_core: 100.0 * u.cpu_seconds / window_seconds.max(1e-9),
        rss_before_kb: u.rss_before_kb,
        rss_peak_kb: u.rss_peak_kb,
        hwm_end_kb: u.hwm_end_kb,
        kb_per_viewer: u.rss_peak_kb.saturating_sub(u.rss_before_kb) as f64
            / f64::from(receiving.max(1)),
        cpu_seconds_per_gb: u.cpu_seconds / (bytes_delivered as f64 / 1e9).max(1e-9),
    });
    Ok(FanoutReport {
        label: cfg.label.clone(),
        publish_url: format!("{}/{}", cfg.publish.tc_url, cfg.publish.stream),
        play_url: format!("{}/{}", cfg.play.tc_url, cfg.play.stream),
        viewers_requested: cfg.viewers,
        flv_viewers_requested: cfg.flv_viewers,
        viewers_playing: probes.iter().filter(|p| p.playing).count() as u32,
        viewers_receiving: receiving,
        viewers_complete: probes
            .iter()
            .filter(|p| {
                p.first_key_seq.is_some() && p.video_frames >= p.video_expected(video_sent_total)
            })
            .count() as u32,
        viewer_errors: probes.iter().filter(|p| p.error.is_some()).count() as u32,
        error_samples,
        video_frames_sent: video_sent_total,
        audio_frames_sent: publish_stats.audio_sent,
        publisher_bytes: publish_stats.bytes_sent,
        publisher_max_lag_ms: publish_stats.max_lag_us as f64 / 1000.0,
        video_frames_received: probes.iter().map(|p| p.video_frames).sum(),
        video_frames_expected: probes
            .iter()
            .map(|p| p.video_expected(video_sent_total))
            .sum(),
        video_frames_disordered: probes.iter().map(|p| p.video_disordered).sum(),
        audio_frames_received: probes.iter().map(|p| p.audio_frames).sum(),
        startup_ms: Percentiles::from_samples(&mut startups, 1000.0),
        latency_ms: Percentiles::from_samples(&mut latencies, 1000.0),
        bytes_delivered,
        window_seconds,
        delivered_mbit_per_sec: bytes_delivered as f64 * 8.0 / 1e6 / window_seconds.max(1e-9),
        bench_cpu_seconds: cpu_seconds_between(bench_before, bench_after, ticks),
        server,
    })
}

/// The rows printed for a report, as (name, value) pairs; shared by the
/// single and the side-by-side printers.
pub(crate) fn rows(r: &FanoutReport) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("publish url", r.publish_url.clone()),
        ("play url", r.play_url.clone()),
        (
            "viewers requested",
            format!(
                "{} rtmp + {} flv",
                r.viewers_requested, r.flv_viewers_requested
            ),
        ),
        ("viewers playing", r.viewers_playing.to_string()),
        ("viewers receiving", r.viewers_receiving.to_string()),
        ("viewers with every frame", r.viewers_complete.to_string()),
        ("viewer errors", r.viewer_errors.to_string()),
        (
            "video frames recv/expected",
            format!(
                "{} / {} ({:.3}%)",
                r.video_frames_received,
                r.video_frames_expected,
                100.0 * r.video_frames_received as f64 / (r.video_frames_expected.max(1)) as f64
            ),
        ),
        (
            "video frames disordered",
            r.video_frames_disordered.to_string(),
        ),
        (
            "frames sent video/audio",
            format!("{} / {}", r.video_frames_sent, r.audio_frames_sent),
        ),
        (
            "publisher max lag ms",
            format!("{:.1}", r.publisher_max_lag_ms),
        ),
        (
            "startup ms p50/p99/max",
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.startup_ms.p50, r.startup_ms.p99, r.startup_ms.max
            ),
        ),
        (
            "latency ms p50/p99/max",
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max
            ),
        ),
        ("latency samples", r.latency_ms.count.to_string()),
        (
            "delivered",
            format!(
                "{:.3} GB, {:.1} Mb/s over {:.1} s",
                r.bytes_delivered as f64 / 1e9,
                r.delivered_mbit_per_sec,
                r.window_seconds
            ),
        ),
        ("bench cpu s", format!("{:.2}", r.bench_cpu_seconds)),
    ];
    if let Some(s) = &r.server {
        rows.extend([
            ("server pid (procs)", format!("{} ({})", s.pid, s.processes)),
            (
                "server cpu s (% core)",
                format!("{:.2} ({:.1}%)", s.cpu_seconds, s.cpu_percent_of_core),
            ),
            (
                "server cpu s per GB",
                format!("{:.3}", s.cpu_seconds_per_gb),
            ),
            (
                "server rss before/peak KB",
                format!("{} / {}", s.rss_before_kb, s.rss_peak_kb),
            ),
            ("server KB per viewer", format!("{:.1}", s.kb_per_viewer)),
        ]);
    }
    if !r.error_samples.is_empty() {
        rows.push(("error samples", r.error_samples.join(" | ")));
    }
    rows
}

/// Prints one report as aligned `name: value` lines.
pub(crate) fn print_report(r: &FanoutReport) {
    println!("== {} ==", r.label);
    for (name, value) in rows(r) {
        println!("  {name:<28} {value}");
    }
}
