//! The HLS viewer scenario: N simulated viewers that behave like hls.js on a
//! live stream, against one server's playlist URL, with the server's CPU and
//! memory alongside.
//!
//! A viewer keeps one HTTP/1.1 keep-alive connection ([`crate::http1`]). It
//! loads the playlist (following a master playlist's first variant), starts
//! three segments from the live edge (hls.js's `liveSyncDurationCount`),
//! fetches every new segment once, in order, and reloads the media playlist
//! one target duration after a load that brought a new segment, half of one
//! after a load that did not (hls.js's reload rule). A segment that left
//! the playlist before it was fetched is a miss.
//!
//! Timeline: the caller has a publisher running and the playlist ready
//! ([`wait_ready`]); the server's idle CPU is measured for `idle_secs`; then
//! viewers are ramped at `ramp_per_sec` and the measured window runs for
//! `duration_secs` from the first viewer's start; at its end the server is
//! sampled and the viewers are stopped (requests in flight are abandoned).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::http1::Http1Conn;
use crate::m3u8::{self, MediaPlaylist, Playlist};
use crate::procstat::{clock_ticks_per_sec, cpu_seconds_between, sample_tree, ServerMeter};
use crate::stats::Percentiles;
use crate::target::HttpTarget;

/// Bytes of a playlist body kept (a live playlist is well under this).
const PLAYLIST_KEEP: usize = 64 * 1024;
/// One TS packet: enough to check the sync byte.
const SEGMENT_KEEP: usize = 188;
/// Pause after a failed request before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Everything one HLS run needs.
#[derive(Debug, Clone)]
pub(crate) struct HlsRunConfig {
    pub(crate) label: String,
    /// Master or media playlist.
    pub(crate) url: HttpTarget,
    pub(crate) viewers: u32,
    pub(crate) duration_secs: u64,
    pub(crate) ramp_per_sec: u32,
    /// Server idle measurement before the viewers start.
    pub(crate) idle_secs: u64,
    /// Socket read buffer per viewer.
    pub(crate) read_buf_bytes: usize,
    /// Reload the playlist at this fixed interval instead of hls.js's rule,
    /// so that servers whose target durations differ get the same requests.
    pub(crate) fixed_reload: Option<Duration>,
    pub(crate) server_pid: Option<u32>,
}

/// What one viewer saw.
#[derive(Debug, Clone, Default)]
struct HlsProbe {
    playlists: u64,
    segments: u64,
    /// Segments that left the playlist (or answered 404) before being fetched.
    missed: u64,
    /// Segments whose body is not MPEG-TS (length or sync byte).
    bad_segments: u64,
    status_4xx: u64,
    status_5xx: u64,
    io_errors: u64,
    connects: u64,
    bytes: u64,
    segment_bytes: u64,
    playlist_fetch_us: Vec<u32>,
    segment_fetch_us: Vec<u32>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    error: Option<String>,
}

impl HlsProbe {
    fn fail(&mut self, e: &anyhow::Error) {
        self.io_errors += 1;
        if self.error.is_none() {
            self.error = Some(format!("{e:#}"));
        }
    }

    fn status(&mut self, status: u16, what: &str) {
        match status {
            400..=499 => self.status_4xx += 1,
            500..=599 => self.status_5xx += 1,
            _ => {}
        }
        if self.error.is_none() {
            self.error = Some(format!("{what}: HTTP {status}"));
        }
    }
}

/// The server's cost over the window, idle baseline taken out.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HlsServerReport {
    pub(crate) pid: u32,
    pub(crate) processes: usize,
    pub(crate) cpu_seconds: f64,
    pub(crate) cpu_percent_of_core: f64,
    /// CPU with the publisher and no viewers, measured just before.
    pub(crate) idle_cpu_percent_of_core: f64,
    /// (window CPU - idle CPU) per 1000 viewers, % of one core.
    pub(crate) net_cpu_percent_per_1000_viewers: f64,
    /// The same in CPU seconds per 1000 viewers per minute.
    pub(crate) net_cpu_seconds_per_1000_viewers_per_min: f64,
    /// Window CPU (gross) per 10^9 body bytes served.
    pub(crate) cpu_seconds_per_gb: f64,
    /// Net CPU per 1000 requests.
    pub(crate) net_cpu_ms_per_request: f64,
    pub(crate) rss_before_kb: u64,
    pub(crate) rss_peak_kb: u64,
    pub(crate) kb_per_viewer: f64,
}

/// What one HLS run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HlsReport {
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) viewers_requested: u32,
    pub(crate) viewers_started: u32,
    /// Viewers that fetched at least one segment.
    pub(crate) viewers_playing: u32,
    /// Viewers that fetched segments, missed none and saw no error.
    pub(crate) viewers_complete: u32,
    pub(crate) playlist_requests: u64,
    pub(crate) segment_requests: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) segments_missed: u64,
    pub(crate) bad_segments: u64,
    pub(crate) status_4xx: u64,
    pub(crate) status_5xx: u64,
    pub(crate) io_errors: u64,
    pub(crate) connects: u64,
    pub(crate) error_samples: Vec<String>,
    /// Distinct segment sequence numbers fetched by anyone.
    pub(crate) distinct_segments: u64,
    /// Segments per viewer per minute (30 for 2 s segments).
    pub(crate) segments_per_viewer_per_min: f64,
    pub(crate) mean_segment_kb: f64,
    pub(crate) bytes_received: u64,
    pub(crate) mbit_per_sec: f64,
    pub(crate) window_seconds: f64,
    pub(crate) playlist_fetch_ms: Percentiles,
    pub(crate) segment_fetch_ms: Percentiles,
    pub(crate) bench_cpu_seconds: f64,
    pub(crate) bench_cpu_percent_of_core: f64,
    pub(crate) server: Option<HlsServerReport>,
}

/// The playlist at `url` as a media playlist, following a master
/// playlist's first variant; returns its path too.
async fn load_media(
    conn: &mut Http1Conn,
    url: &HttpTarget,
    path: &str,
) -> anyhow::Result<Result<(String, MediaPlaylist), u16>> {
    let mut path = path.to_string();
    for _ in 0..3 {
        let resp = conn.get(&url.authority, &path, PLAYLIST_KEEP).await?;
        if resp.status != 200 {
            return Ok(Err(resp.status));
        }
        let text = String::from_utf8_lossy(&resp.kept);
        match m3u8::parse(&text).map_err(|e| anyhow!("{path}: {e}"))? {
            Playlist::Media(media) => return Ok(Ok((path, media))),
            Playlist::Master(variants) => {
                let first = variants.first().ok_or_else(|| anyhow!("{path}: no variant"))?;
                path = m3u8::resolve(&path, first, &url.authority).map_err(anyhow::Error::msg)?;
            }
        }
    }
    bail!("{}: master playlists nested too deep", url.path)
}

/// Waits (bounded) until the playlist lists at least `min_segments`.
pub(crate) async fn wait_ready(url: &HttpTarget, min_segments: usize, within: Duration) -> anyhow::Result<MediaPlaylist> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt = async {
            let mut conn = Http1Conn::connect(url.addr, 16 * 1024).await?;
            load_media(&mut conn, url, &url.path).await
        };
        let last = match attempt.await {
            Ok(Ok((_, media))) if media.segments.len() >= min_segments => return Ok(media),
            Ok(Ok((_, media))) => format!("{} segments listed", media.segments.len()),
            Ok(Err(status)) => format!("HTTP {status}"),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() > deadline {
            bail!("{}: playlist not ready within {within:?} ({last})", url.path);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// One viewer until `stop`.
async fn run_viewer(
    url: Arc<HttpTarget>,
    read_buf: usize,
    fixed_reload: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> HlsProbe {
    let mut probe = HlsProbe::default();
    tokio::select! {
        () = view(&url, read_buf, fixed_reload, &mut probe) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    probe
}

async fn view(url: &HttpTarget, read_buf: usize, fixed_reload: Option<Duration>, probe: &mut HlsProbe) {
    let mut conn: Option<Http1Conn> = None;
    let mut media_path: Option<String> = None;
    // The next segment to fetch; None until the first playlist.
    let mut next_seq: Option<u64> = None;
    let mut previous_last: Option<u64> = None;
    loop {
        let c = match conn.take().filter(Http1Conn::is_reusable) {
            Some(c) => c,
            None => match Http1Conn::connect(url.addr, read_buf).await {
                Ok(c) => {
                    probe.connects += 1;
                    c
                }
                Err(e) => {
                    probe.fail(&e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let c = conn.insert(c);
        let loaded_at = tokio::time::Instant::now();
        let path = media_path.clone().unwrap_or_else(|| url.path.clone());
        let before = c.bytes_read;
        let loaded = load_media(c, url, &path).await;
        probe.bytes += c.bytes_read - before;
        let playlist = match loaded {
            Ok(Ok((path, playlist))) => {
                probe.playlists += 1;
                probe.playlist_fetch_us.push(micros(loaded_at.elapsed()));
                media_path = Some(path);
                playlist
            }
            Ok(Err(status)) => {
                probe.status(status, "playlist");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => {
                probe.fail(&e);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let Some(last) = playlist.last_seq() else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let from = *next_seq.get_or_insert(last.saturating_sub(2));
        let updated = previous_last != Some(last);
        previous_last = Some(last);
        let base = media_path.clone().unwrap_or_default();
        for seg in playlist.segments.iter().filter(|s| s.seq >= from) {
            let want = next_seq.unwrap_or(seg.seq);
            probe.missed += seg.seq.saturating_sub(want);
            let Ok(seg_path) = m3u8::resolve(&base, &seg.uri, &url.authority) else {
                probe.fail(&anyhow!("segment URI {} is not on this server", seg.uri));
                next_seq = Some(seg.seq + 1);
                continue;
            };
            let started = tokio::time::Instant::now();
            let before = c.bytes_read;
            let got = c.get(&url.authority, &seg_path, SEGMENT_KEEP).await;
            probe.bytes += c.bytes_read - before;
            match got {
                Ok(resp) if resp.status == 200 => {
                    probe.segments += 1;
                    probe.segment_bytes += resp.body_len;
                    probe.segment_fetch_us.push(micros(started.elapsed()));
                    if resp.body_len % 188 != 0 || resp.kept.first() != Some(&0x47) {
                        probe.bad_segments += 1;
                    }
                    probe.first_seq.get_or_insert(seg.seq);
                    probe.last_seq = Some(seg.seq);
                }
                Ok(resp) => {
                    probe.status(resp.status, "segment");
                    if resp.status == 404 {
                        probe.missed += 1;
                    }
                }
                Err(e) => {
                    // Retried from the next playlist on a new connection.
                    probe.fail(&e);
                    break;
                }
            }
            next_seq = Some(seg.seq + 1);
        }
        if !c.is_reusable() {
            continue;
        }
        let target = Duration::from_secs_f64(playlist.target_duration_s.clamp(0.5, 30.0));
        let wait = fixed_reload.unwrap_or(if updated { target } else { target / 2 });
        tokio::time::sleep_until(loaded_at + wait.max(Duration::from_millis(100))).await;
    }
}

/// Runs the scenario; the caller bounds it with a timeout too.
pub(crate) async fn run(cfg: HlsRunConfig) -> anyhow::Result<HlsReport> {
    let clock = Clock::new();
    let ticks = clock_ticks_per_sec();
    let idle_cpu_percent = match cfg.server_pid {
        Some(pid) if cfg.idle_secs > 0 => {
            let before = sample_tree(pid);
            let started = clock.now_us();
            tokio::time::sleep(Duration::from_secs(cfg.idle_secs)).await;
            let secs = (clock.now_us() - started) as f64 / 1e6;
            100.0 * cpu_seconds_between(before, sample_tree(pid), ticks) / secs
        }
        _ => 0.0,
    };
    let bench_before = sample_tree(std::process::id());
    let meter = cfg.server_pid.and_then(ServerMeter::start);
    let window_start = clock.now_us();
    let window_end = window_start + cfg.duration_secs * 1_000_000;
    let url = Arc::new(cfg.url.clone());
    let (stop_tx, stop) = watch::channel(false);
    let ramp = u64::from(cfg.ramp_per_sec.max(1));
    eprintln!(
        "[{}] ramping {} HLS viewers at {ramp}/s on {}, window {} s (idle server: {idle_cpu_percent:.1}% of a core)",
        cfg.label, cfg.viewers, cfg.url.path, cfg.duration_secs
    );
    let mut viewers: Vec<JoinHandle<HlsProbe>> = Vec::with_capacity(cfg.viewers as usize);
    for i in 0..cfg.viewers {
        let at = window_start + u64::from(i) * 1_000_000 / ramp;
        if at >= window_end {
            eprintln!("[{}] ramp ran past the window; {i} viewers started", cfg.label);
            break;
        }
        tokio::time::sleep_until(clock.instant_at(at)).await;
        viewers.push(tokio::spawn(run_viewer(
            url.clone(),
            cfg.read_buf_bytes,
            cfg.fixed_reload,
            stop.clone(),
        )));
    }
    let started = viewers.len() as u32;
    tokio::time::sleep_until(clock.instant_at(window_end)).await;
    let usage = match meter {
        Some(m) => m.finish().await,
        None => None,
    };
    let window_seconds = (clock.now_us() - window_start) as f64 / 1e6;
    let _ = stop_tx.send(true);
    let mut probes = Vec::with_capacity(viewers.len());
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for handle in viewers {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(join_deadline, handle).await {
            Ok(Ok(probe)) => probes.push(probe),
            Ok(Err(e)) => eprintln!("[{}] viewer task failed: {e}", cfg.label),
            Err(_) => abort.abort(),
        }
    }
    let bench_cpu = cpu_seconds_between(bench_before, sample_tree(std::process::id()), ticks);
    Ok(summarize(&cfg, probes, started, window_seconds, idle_cpu_percent, usage, bench_cpu))
}

fn summarize(
    cfg: &HlsRunConfig,
    mut probes: Vec<HlsProbe>,
    started: u32,
    window_seconds: f64,
    idle_cpu_percent: f64,
    usage: Option<crate::procstat::ServerUsage>,
    bench_cpu_seconds: f64,
) -> HlsReport {
    let mut playlist_us: Vec<u32> = probes.iter_mut().flat_map(|p| std::mem::take(&mut p.playlist_fetch_us)).collect();
    let mut segment_us: Vec<u32> = probes.iter_mut().flat_map(|p| std::mem::take(&mut p.segment_fetch_us)).collect();
    let sum = |f: fn(&HlsProbe) -> u64| -> u64 { probes.iter().map(f).sum() };
    let playlist_requests = sum(|p| p.playlists);
    let segment_requests = sum(|p| p.segments);
    let segment_bytes = sum(|p| p.segment_bytes);
    let bytes = sum(|p| p.bytes);
    let mut seen = std::collections::BTreeSet::new();
    for p in &probes {
        if let (Some(a), Some(b)) = (p.first_seq, p.last_seq) {
            seen.extend(a..=b);
        }
    }
    let mut error_samples: Vec<String> = Vec::new();
    for e in probes.iter().filter_map(|p| p.error.as_ref()) {
        if error_samples.len() < 5 && !error_samples.contains(e) {
            error_samples.push(e.clone());
        }
    }
    let requests = playlist_requests + segment_requests;
    let window = window_seconds.max(1e-9);
    let viewers = f64::from(started.max(1));
    let server = usage.map(|u| {
        let percent = 100.0 * u.cpu_seconds / window;
        let net_percent = (percent - idle_cpu_percent).max(0.0);
        let net_seconds = net_percent / 100.0 * window;
        HlsServerReport {
            pid: u.pid,
            processes: u.processes,
            cpu_seconds: u.cpu_seconds,
            cpu_percent_of_core: percent,
            idle_cpu_percent_of_core: idle_cpu_percent,
            net_cpu_percent_per_1000_viewers: net_percent * 1000.0 / viewers,
            net_cpu_seconds_per_1000_viewers_per_min: net_seconds * 1000.0 / viewers * 60.0 / window,
            cpu_seconds_per_gb: u.cpu_seconds / (segment_bytes as f64 / 1e9).max(1e-9),
            net_cpu_ms_per_request: 1000.0 * net_seconds / (requests.max(1)) as f64,
            rss_before_kb: u.rss_before_kb,
            rss_peak_kb: u.rss_peak_kb,
            kb_per_viewer: u.rss_peak_kb.saturating_sub(u.rss_before_kb) as f64 / viewers,
        }
    });
    HlsReport {
        label: cfg.label.clone(),
        url: format!("http://{}{}", cfg.url.authority, cfg.url.path),
        viewers_requested: cfg.viewers,
        viewers_started: started,
        viewers_playing: probes.iter().filter(|p| p.segments > 0).count() as u32,
        viewers_complete: probes
            .iter()
            .filter(|p| p.segments > 0 && p.missed == 0 && p.error.is_none() && p.bad_segments == 0)
            .count() as u32,
        playlist_requests,
        segment_requests,
        requests_per_sec: requests as f64 / window,
        segments_missed: sum(|p| p.missed),
        bad_segments: sum(|p| p.bad_segments),
        status_4xx: sum(|p| p.status_4xx),
        status_5xx: sum(|p| p.status_5xx),
        io_errors: sum(|p| p.io_errors),
        connects: sum(|p| p.connects),
        error_samples,
        distinct_segments: seen.len() as u64,
        segments_per_viewer_per_min: segment_requests as f64 / viewers * 60.0 / window,
        mean_segment_kb: segment_bytes as f64 / 1000.0 / (segment_requests.max(1)) as f64,
        bytes_received: bytes,
        mbit_per_sec: bytes as f64 * 8.0 / 1e6 / window,
        window_seconds,
        playlist_fetch_ms: Percentiles::from_samples(&mut playlist_us, 1000.0),
        segment_fetch_ms: Percentiles::from_samples(&mut segment_us, 1000.0),
        bench_cpu_seconds,
        bench_cpu_percent_of_core: 100.0 * bench_cpu_seconds / window,
        server,
    }
}

/// The rows printed for a report.
pub(crate) fn rows(r: &HlsReport) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("url", r.url.clone()),
        (
            "viewers started/playing/complete",
            format!("{} / {} / {}", r.viewers_started, r.viewers_playing, r.viewers_complete),
        ),
        (
            "requests playlist/segment",
            format!("{} / {}", r.playlist_requests, r.segment_requests),
        ),
        ("requests per s", format!("{:.1}", r.requests_per_sec)),
        (
            "segments missed / bad",
            format!("{} / {}", r.segments_missed, r.bad_segments),
        ),
        (
            "http 4xx / 5xx / io errors",
            format!("{} / {} / {}", r.status_4xx, r.status_5xx, r.io_errors),
        ),
        ("connections opened", r.connects.to_string()),
        (
            "segments per viewer-minute",
            format!("{:.1} ({} distinct, {:.0} KB mean)", r.segments_per_viewer_per_min, r.distinct_segments, r.mean_segment_kb),
        ),
        (
            "received",
            format!("{:.3} GB, {:.1} Mb/s over {:.1} s", r.bytes_received as f64 / 1e9, r.mbit_per_sec, r.window_seconds),
        ),
        (
            "playlist fetch ms p50/p99/max",
            format!("{:.2} / {:.2} / {:.1}", r.playlist_fetch_ms.p50, r.playlist_fetch_ms.p99, r.playlist_fetch_ms.max),
        ),
        (
            "segment fetch ms p50/p99/max",
            format!("{:.2} / {:.2} / {:.1}", r.segment_fetch_ms.p50, r.segment_fetch_ms.p99, r.segment_fetch_ms.max),
        ),
        (
            "bench cpu s (% core)",
            format!("{:.2} ({:.1}%)", r.bench_cpu_seconds, r.bench_cpu_percent_of_core),
        ),
    ];
    if let Some(s) = &r.server {
        rows.extend([
            ("server pid (procs)", format!("{} ({})", s.pid, s.processes)),
            (
                "server cpu s (% core)",
                format!("{:.2} ({:.1}%, idle {:.1}%)", s.cpu_seconds, s.cpu_percent_of_core, s.idle_cpu_percent_of_core),
            ),
            (
                "net cpu % core per 1000 v",
                format!("{:.2}", s.net_cpu_percent_per_1000_viewers),
            ),
            (
                "net cpu s per 1000 v-min",
                format!("{:.2}", s.net_cpu_seconds_per_1000_viewers_per_min),
            ),
            ("net cpu ms per request", format!("{:.3}", s.net_cpu_ms_per_request)),
            ("server cpu s per GB", format!("{:.3}", s.cpu_seconds_per_gb)),
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

/// Prints one report.
pub(crate) fn print_report(r: &HlsReport) {
    println!("== {} ==", r.label);
    for (name, value) in rows(r) {
        println!("  {name:<32} {value}");
    }
}

/// The `(name, other, base)` figures compared between two reports.
fn ratio_pairs<'a>(base: &'a HlsReport, other: &'a HlsReport) -> Vec<(&'static str, f64, f64)> {
    let mut pairs: Vec<(&str, f64, f64)> = vec![
            ("playlist fetch p99", other.playlist_fetch_ms.p99, base.playlist_fetch_ms.p99),
            ("segment fetch p50", other.segment_fetch_ms.p50, base.segment_fetch_ms.p50),
        ("segment fetch p99", other.segment_fetch_ms.p99, base.segment_fetch_ms.p99),
    ];
    if let (Some(a), Some(b)) = (&other.server, &base.server) {
        pairs.extend([
            ("net cpu per 1000 viewers", a.net_cpu_percent_per_1000_viewers, b.net_cpu_percent_per_1000_viewers),
            ("gross cpu s per GB", a.cpu_seconds_per_gb, b.cpu_seconds_per_gb),
            ("net cpu per request", a.net_cpu_ms_per_request, b.net_cpu_ms_per_request),
            ("peak rss", a.rss_peak_kb as f64, b.rss_peak_kb as f64),
        ]);
    }
    pairs
}

/// Two reports side by side with `other / base` ratios.
pub(crate) fn print_side_by_side(reports: &[HlsReport]) {
    let labels: Vec<&str> = reports.iter().map(|r| r.label.as_str()).collect();
    let columns: Vec<Vec<(&'static str, String)>> = reports.iter().map(rows).collect();
    crate::compare::print_columns(&labels, &columns, &["url", "error samples"]);
    if let [base, other] = reports {
        crate::compare::print_ratios(&other.label, &base.label, &ratio_pairs(base, other));
        println!(
            "  {:<28} {:.2}x (higher is better)",
            "requests per s",
            other.requests_per_sec / base.requests_per_sec.max(1e-9)
        );
    }
}

/// The ratios of every `[base, other]` pair and their geometric mean.
pub(crate) fn print_pair_summary(pairs: &[[HlsReport; 2]]) {
    let Some([b0, o0]) = pairs.first() else {
        return;
    };
    println!();
    println!("### {} / {} over {} pairs (per pair, then geometric mean)", o0.label, b0.label, pairs.len());
    let per_pair: Vec<Vec<(&str, f64, f64)>> = pairs.iter().map(|[b, o]| ratio_pairs(b, o)).collect();
    for (i, (name, _, _)) in per_pair[0].iter().enumerate() {
        let ratios: Vec<f64> = per_pair
            .iter()
            .filter_map(|p| p.get(i))
            .filter(|(_, _, b)| *b > 0.0)
            .map(|(_, a, b)| a / b)
            .collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        let mean = geometric_mean(&ratios);
        println!("  {name:<28} {:<40} mean {}", shown.join(" "), mean.map_or("-".into(), |m| format!("{m:.2}x")));
    }
}

/// Geometric mean of positive ratios; `None` when there are none.
pub(crate) fn geometric_mean(ratios: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = ratios.iter().filter(|r| **r > 0.0).map(|r| r.ln()).collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_average_geometrically() {
        let m = geometric_mean(&[0.5, 2.0]).expect("two ratios");
        assert!((m - 1.0).abs() < 1e-12);
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[0.0]), None);
    }
}
