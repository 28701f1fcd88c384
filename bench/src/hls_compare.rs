//! The `hls` and `compare-hls` commands: an ffmpeg publisher of the
//! generated clip, the HLS viewers of [`crate::hls`], and for `compare-hls`
//! nginx-rtmp with `hls on` (served by nginx's http module) and a WeStream
//! server, one after the other in the same run with the same clip and the
//! same viewers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use crate::compare::NginxGuard;
use crate::hls::{self, HlsReport, HlsRunConfig};
use crate::procs::{ensure_clip, fresh_dir, spawn_publisher, tcp_port, udp_port, ClipSpec};
use crate::target::{HttpTarget, RtmpTarget};
use crate::ShapeArgs;
use crate::westream::{default_binary, repo_root, WestreamNode};

/// The viewers, the clip and the timing, shared by both commands.
#[derive(Args, Debug, Clone)]
pub(crate) struct HlsScenarioArgs {
    /// Simulated HLS viewers.
    #[arg(long, default_value_t = 500)]
    viewers: u32,
    /// Measured window, from the first viewer's start.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Viewers started per second.
    #[arg(long, default_value_t = 200)]
    ramp_per_sec: u32,
    /// Server CPU measured with the publisher and no viewers, just before.
    #[arg(long, default_value_t = 4)]
    idle_secs: u64,
    /// Socket read buffer per viewer, KiB.
    #[arg(long, default_value_t = 64)]
    read_buf_kb: usize,
    /// Reload the playlist every this many ms instead of hls.js's rule
    /// (target duration after an update, half of it otherwise), so servers
    /// with different target durations get the same request mix.
    #[arg(long)]
    fixed_reload_ms: Option<u64>,
    /// Segments the playlist must list before viewers start.
    #[arg(long, default_value_t = 3)]
    min_segments: usize,
    /// The clip (its audio is 128 kb/s AAC).
    #[command(flatten)]
    shape: ShapeArgs,
    /// Clip width and height.
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// ffmpeg binary (encodes the clip once, publishes it with -re -c copy).
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: PathBuf,
}

impl HlsScenarioArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.viewers == 0 || self.viewers > 10_000 {
            anyhow::bail!("--viewers must be 1..=10000 (one socket each)");
        }
        if self.duration_secs == 0 || self.duration_secs > 1800 || self.idle_secs > 60 {
            anyhow::bail!("--duration-secs must be 1..=1800 and --idle-secs at most 60");
        }
        if !(16..=4096).contains(&self.read_buf_kb) {
            anyhow::bail!("--read-buf-kb must be 16..=4096");
        }
        Ok(())
    }

    fn clip(&self) -> anyhow::Result<ClipSpec> {
        let (w, h) = self
            .size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .ok_or_else(|| anyhow!("--size must be WIDTHxHEIGHT"))?;
        Ok(ClipSpec {
            width: w,
            height: h,
            fps: self.shape.fps,
            gop_frames: self.shape.gop_frames,
            bitrate_kbps: self.shape.bitrate_kbps,
            seconds: 20,
        })
    }

    /// Time to wait for a first playable playlist.
    fn ready_timeout(&self) -> Duration {
        Duration::from_secs(40)
    }

    /// Upper bound on one server's round.
    fn hard_timeout(&self) -> Duration {
        self.ready_timeout() + Duration::from_secs(self.idle_secs + self.duration_secs + 60)
    }

    fn run_config(&self, label: &str, url: HttpTarget, server_pid: Option<u32>) -> HlsRunConfig {
        HlsRunConfig {
            label: label.to_string(),
            url,
            viewers: self.viewers,
            duration_secs: self.duration_secs,
            ramp_per_sec: self.ramp_per_sec,
            idle_secs: self.idle_secs,
            read_buf_bytes: self.read_buf_kb * 1024,
            fixed_reload: self.fixed_reload_ms.map(|ms| Duration::from_millis(ms.clamp(100, 30_000))),
            server_pid,
        }
    }
}

/// `hls`: one server by URL.
#[derive(Args, Debug)]
pub(crate) struct HlsArgs {
    /// Playlist URL, master or media (loopback only).
    #[arg(long)]
    url: String,
    /// When given, the bench publishes the clip here with ffmpeg; otherwise
    /// something else must be publishing.
    #[arg(long)]
    publish_url: Option<String>,
    /// The server's PID, for its CPU and memory (children included).
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "server")]
    label: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[command(flatten)]
    scenario: HlsScenarioArgs,
}

/// `compare-hls`: nginx-rtmp's HLS served by nginx, then WeStream.
#[derive(Args, Debug)]
pub(crate) struct CompareHlsArgs {
    /// nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx_bin: PathBuf,
    /// nginx config template with `hls on`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/nginx-rtmp-hls.conf"))]
    nginx_conf: PathBuf,
    /// Default: a free port.
    #[arg(long)]
    nginx_rtmp_port: Option<u16>,
    /// Default: a free port.
    #[arg(long)]
    nginx_http_port: Option<u16>,
    /// A running WeStream's playlist URL; without it the bench starts
    /// `westream serve` itself (see --westream-bin).
    #[arg(long)]
    westream_url: Option<String>,
    /// Where to publish on that running WeStream.
    #[arg(long, default_value = "rtmp://127.0.0.1:1935/live/demo-key")]
    westream_publish_url: String,
    /// That running WeStream's PID.
    #[arg(long)]
    westream_pid: Option<u32>,
    /// The binary the bench starts (default: `westream` next to this binary).
    #[arg(long)]
    westream_bin: Option<PathBuf>,
    /// Its config (publishes with key demo-key, plays channel demo).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/dev.toml"))]
    westream_config: PathBuf,
    /// Default: a free port.
    #[arg(long)]
    westream_rtmp_port: Option<u16>,
    /// Default: a free port.
    #[arg(long)]
    westream_http_port: Option<u16>,
    /// UDP port of the started server's relay. Default: a free port.
    #[arg(long)]
    westream_relay_port: Option<u16>,
    /// Run WeStream first in the first pair (to see whether order matters).
    #[arg(long)]
    westream_first: bool,
    /// Pairs of runs; the order alternates from pair to pair (ABBA), and the
    /// ratios are summarised over the pairs.
    #[arg(long, default_value_t = 1)]
    pairs: u32,
    /// Seconds between the two rounds.
    #[arg(long, default_value_t = 3)]
    pause_secs: u64,
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[command(flatten)]
    scenario: HlsScenarioArgs,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One round: publish the clip, wait for a playlist, run the viewers.
async fn round(
    s: &HlsScenarioArgs,
    clip: &std::path::Path,
    label: &str,
    playlist_url: &str,
    publish_url: Option<&str>,
    server_pid: Option<u32>,
) -> anyhow::Result<HlsReport> {
    let url = HttpTarget::parse(playlist_url).map_err(|e| anyhow!(e))?;
    let mut publisher = match publish_url {
        Some(p) => {
            RtmpTarget::parse(p).map_err(|e| anyhow!(e))?;
            let seconds = s.hard_timeout().as_secs() + 10;
            let dir = fresh_dir(&format!("publisher-{label}"))?;
            Some(spawn_publisher(&s.ffmpeg, clip, p, seconds, &dir)?)
        }
        None => None,
    };
    eprintln!("[{label}] waiting for {} to list {} segments", url.path, s.min_segments);
    let listed = hls::wait_ready(&url, s.min_segments, s.ready_timeout()).await;
    if let Some(p) = publisher.as_mut() {
        p.check_running()?;
    }
    listed?;
    let cfg = s.run_config(label, url, server_pid);
    let report = tokio::time::timeout(s.hard_timeout(), hls::run(cfg))
        .await
        .map_err(|_| anyhow!("{label}: run exceeded its hard timeout"))??;
    if let Some(p) = publisher.as_mut() {
        p.check_running()?;
    }
    Ok(report)
}

pub(crate) async fn hls_command(args: HlsArgs) -> anyhow::Result<()> {
    let s = &args.scenario;
    s.validate()?;
    let clip = ensure_clip(&s.clip()?, &s.ffmpeg)?;
    let report = round(s, &clip, &args.label, &args.url, args.publish_url.as_deref(), args.server_pid).await?;
    hls::print_report(&report);
    if let Some(path) = &args.json_out {
        crate::write_json(path, &report)?;
    }
    Ok(())
}

async fn nginx_round(args: &CompareHlsArgs, clip: &std::path::Path) -> anyhow::Result<HlsReport> {
    let (rtmp_port, http_port) = (tcp_port(args.nginx_rtmp_port)?, tcp_port(args.nginx_http_port)?);
    let nginx = NginxGuard::start(&args.nginx_bin, &args.nginx_conf, rtmp_port, http_port)?;
    eprintln!("[nginx-rtmp] started pid {} in {}", nginx.pid(), nginx.dir().display());
    let url = format!("http://127.0.0.1:{http_port}/hls/demo.m3u8");
    let publish = format!("rtmp://127.0.0.1:{rtmp_port}/live/demo");
    round(&args.scenario, clip, "nginx-rtmp", &url, Some(&publish), Some(nginx.pid())).await
}

async fn westream_round(args: &CompareHlsArgs, clip: &std::path::Path) -> anyhow::Result<HlsReport> {
    if let Some(url) = &args.westream_url {
        return round(&args.scenario, clip, "westream", url, Some(&args.westream_publish_url), args.westream_pid).await;
    }
    let binary = args.westream_bin.clone().unwrap_or_else(default_binary);
    let config = if args.westream_config.is_absolute() {
        args.westream_config.clone()
    } else {
        repo_root().join(&args.westream_config)
    };
    let http_port = tcp_port(args.westream_http_port)?;
    let node = WestreamNode::serve(
        &binary,
        &config,
        &format!("westream-{http_port}"),
        loopback(tcp_port(args.westream_rtmp_port)?),
        loopback(http_port),
        Some(loopback(udp_port(args.westream_relay_port)?)),
    )?;
    eprintln!("[westream] started pid {} in {}", node.pid(), node.dir.display());
    let url = format!("http://{}/live/demo/index.m3u8", node.http);
    let publish = format!("rtmp://{}/live/demo-key", node.rtmp);
    round(&args.scenario, clip, "westream", &url, Some(&publish), Some(node.pid())).await
}

pub(crate) async fn compare_hls_command(args: CompareHlsArgs) -> anyhow::Result<()> {
    let s = &args.scenario;
    s.validate()?;
    if !(1..=10).contains(&args.pairs) {
        anyhow::bail!("--pairs must be 1..=10");
    }
    let clip = ensure_clip(&s.clip()?, &s.ffmpeg)?;
    let pause = Duration::from_secs(args.pause_secs.min(60));
    let mut pairs: Vec<[HlsReport; 2]> = Vec::new();
    for i in 0..args.pairs {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let westream_first = args.westream_first != (i % 2 == 1);
        let (nginx, westream) = if westream_first {
            let w = westream_round(&args, &clip).await?;
            tokio::time::sleep(pause).await;
            (nginx_round(&args, &clip).await?, w)
        } else {
            let n = nginx_round(&args, &clip).await?;
            tokio::time::sleep(pause).await;
            (n, westream_round(&args, &clip).await?)
        };
        let pair = [nginx, westream];
        println!();
        println!(
            "### pair {} of {} ({} first)",
            i + 1,
            args.pairs,
            if westream_first { "westream" } else { "nginx-rtmp" }
        );
        for r in &pair {
            hls::print_report(r);
        }
        println!();
        hls::print_side_by_side(&pair);
        pairs.push(pair);
    }
    if pairs.len() > 1 {
        hls::print_pair_summary(&pairs);
    }
    if let Some(path) = &args.json_out {
        crate::write_json(path, &pairs)?;
    }
    Ok(())
}
