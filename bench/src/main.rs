//! `westream-bench`: load generation and measurement for WeStream and any
//! other RTMP server on this machine.
//!
//! `fanout` runs one stamped publisher and N RTMP / HTTP-FLV players against
//! given URLs and prints what the viewers saw and what the server cost;
//! `compare` runs the same scenario against nginx-rtmp (started here from
//! `bench/nginx/nginx-rtmp.conf`) and a WeStream server, side by side.
//! `hls` and `compare-hls` do the same for HLS viewers (nginx-rtmp's HLS
//! served by nginx against WeStream's).
//!
//! Every process the bench starts (nginx, westream, ffmpeg) is stopped by
//! its PID when the command ends, fails, or is interrupted with Ctrl-C.

mod clock;
mod compare;
mod edge;
mod fanout;
mod flv;
mod hls;
mod hls_compare;
mod http1;
mod http_flv;
mod m3u8;
mod media;
mod probe;
mod procs;
mod procstat;
mod read_loop;
mod room;
mod room_client;
mod rtmp;
mod rtmp_play;
mod stamp;
mod stats;
mod target;
mod westream;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};

use crate::fanout::{FanoutConfig, FanoutReport};
use crate::target::{HttpTarget, RtmpTarget};

#[derive(Parser, Debug)]
#[command(name = "westream-bench", version, about)]
struct Cli {
    /// Tokio worker threads for publisher and players. The server shares
    /// the machine, so keep this small.
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One publisher, many players, against one server given by URL.
    Fanout(FanoutArgs),
    /// The same scenario against nginx-rtmp (started here) and WeStream.
    Compare(CompareArgs),
    /// HLS viewers (hls.js-like) against one server's playlist URL.
    Hls(hls_compare::HlsArgs),
    /// HLS viewers against nginx-rtmp's HLS served by nginx, then against
    /// WeStream, in the same run (both started here unless given).
    CompareHls(hls_compare::CompareHlsArgs),
    /// An origin and an edge started here: cold time-to-first-frame at the
    /// edge, added latency origin -> edge, viewers per edge core.
    Edge(edge::EdgeArgs),
    /// Thousands of WebSocket clients in one room with chat and gifts.
    Room(room::RoomArgs),
}

/// A stream's shape: the stamped publisher's, or the HLS clip's.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct ShapeArgs {
    /// Total stream bitrate, video plus audio.
    #[arg(long, default_value_t = 2500)]
    pub(crate) bitrate_kbps: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub(crate) fps: u32,
    /// Video frames per GOP (a keyframe every this many frames; 60 at 30 fps
    /// is one per 2 s HLS segment).
    #[arg(long, default_value_t = 60)]
    pub(crate) gop_frames: u32,
}

/// The scenario's shape, shared by both commands.
#[derive(Args, Debug, Clone)]
struct ScenarioArgs {
    /// RTMP players.
    #[arg(long, default_value_t = 100)]
    viewers: u32,
    /// HTTP-FLV players (need an FLV URL).
    #[arg(long, default_value_t = 0)]
    flv_viewers: u32,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Measured window: from the first viewer's start to the end of publishing.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Publishing before viewers start, so a GOP cache has a GOP.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Viewer connections started per second.
    #[arg(long, default_value_t = 200)]
    ramp_per_sec: u32,
    /// Time after the publisher stops for the last frames to arrive.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Read the RTMP players on one epoll thread that, once it has read
    /// every ready socket, sleeps this long before waiting again (0: it
    /// waits at once). On loopback a send to a socket whose reader sleeps in
    /// `epoll_wait` also pays that reader's wake-up, a cost a server sending
    /// to remote viewers does not have; a short pause lets one wake-up cover
    /// many sends, and counts in the measured latency. Without this flag
    /// each player is a tokio task.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=read_loop::MAX_PAUSE_US))]
    listen_pause_us: Option<u64>,
}

impl ScenarioArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.viewers + self.flv_viewers > 20_000 {
            anyhow::bail!(
                "--viewers plus --flv-viewers above 20000 exceeds this machine's fd limit"
            );
        }
        if self.duration_secs == 0 || self.duration_secs > 3600 {
            anyhow::bail!("--duration-secs must be 1..=3600");
        }
        if self.warmup_secs > 60 || self.drain_ms > 30_000 {
            anyhow::bail!("--warmup-secs is at most 60 and --drain-ms at most 30000");
        }
        Ok(())
    }

    /// Upper bound on a whole run, past which it is abandoned.
    fn hard_timeout(&self) -> Duration {
        Duration::from_secs(self.warmup_secs + self.duration_secs + 60)
            + Duration::from_millis(self.drain_ms)
    }

    fn config(
        &self,
        label: String,
        publish: RtmpTarget,
        play: RtmpTarget,
        flv: Option<HttpTarget>,
        server_pid: Option<u32>,
    ) -> FanoutConfig {
        FanoutConfig {
            label,
            publish,
            play,
            flv,
            viewers: self.viewers,
            flv_viewers: self.flv_viewers,
            bitrate_kbps: self.shape.bitrate_kbps,
            fps: self.shape.fps,
            gop_frames: self.shape.gop_frames,
            duration_secs: self.duration_secs,
            warmup_secs: self.warmup_secs,
            ramp_per_sec: self.ramp_per_sec,
            drain_ms: self.drain_ms,
            server_pid,
            listen_pause: self.listen_pause_us.map(Duration::from_micros),
        }
    }
}

#[derive(Args, Debug)]
struct FanoutArgs {
    /// Where the publisher publishes: rtmp://HOST:PORT/APP/STREAM (loopback only).
    #[arg(long)]
    publish_url: String,
    /// Where RTMP players play: rtmp://HOST:PORT/APP/STREAM.
    #[arg(long)]
    play_url: String,
    /// Where HTTP-FLV players play: http://HOST:PORT/PATH.
    #[arg(long)]
    flv_url: Option<String>,
    /// The server's PID, for its CPU time and memory (children included).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of this run in the report.
    #[arg(long, default_value = "server")]
    label: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[command(flatten)]
    scenario: ScenarioArgs,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// WeStream publish URL; without it only nginx-rtmp runs.
    #[arg(long)]
    westream_publish_url: Option<String>,
    /// WeStream RTMP play URL.
    #[arg(long)]
    westream_play_url: Option<String>,
    /// WeStream HTTP-FLV URL (for --flv-viewers; nginx-rtmp has no HTTP-FLV,
    /// so its run uses RTMP players only).
    #[arg(long)]
    westream_flv_url: Option<String>,
    /// WeStream server PID.
    #[arg(long)]
    westream_pid: Option<u32>,
    /// nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx_bin: PathBuf,
    /// nginx config template.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/nginx-rtmp.conf"))]
    nginx_conf: PathBuf,
    /// nginx RTMP port (loopback).
    #[arg(long, default_value_t = 19350)]
    nginx_rtmp_port: u16,
    /// nginx HTTP port (loopback, stats only).
    #[arg(long, default_value_t = 18080)]
    nginx_http_port: u16,
    /// Stream name on nginx (published and played under the same name).
    #[arg(long, default_value = "demo")]
    nginx_stream: String,
    /// Seconds between the two runs, for the machine to settle.
    #[arg(long, default_value_t = 3)]
    pause_secs: u64,
    /// Also write both reports as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    #[command(flatten)]
    scenario: ScenarioArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 16))
        .enable_all()
        .build()?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    println!("command: {command_line}");
    runtime.block_on(async {
        let command = async {
            match cli.command {
                Command::Fanout(args) => fanout_command(args).await,
                Command::Compare(args) => compare_command(args).await,
                Command::Hls(args) => hls_compare::hls_command(args).await,
                Command::CompareHls(args) => hls_compare::compare_hls_command(args).await,
                Command::Edge(args) => edge::edge_command(args).await,
                Command::Room(args) => room::room_command(args).await,
            }
        };
        // Ctrl-C drops the command's future, and with it the guards of
        // every process it started.
        tokio::select! {
            result = command => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; stopped the processes this run started")),
        }
    })
}

fn parse_rtmp(url: &str) -> anyhow::Result<RtmpTarget> {
    RtmpTarget::parse(url).map_err(|e| anyhow!(e))
}

fn parse_http(url: Option<&str>) -> anyhow::Result<Option<HttpTarget>> {
    url.map(|u| HttpTarget::parse(u).map_err(|e| anyhow!(e)))
        .transpose()
}

async fn run_bounded(cfg: FanoutConfig, limit: Duration) -> anyhow::Result<FanoutReport> {
    let label = cfg.label.clone();
    tokio::time::timeout(limit, fanout::run(cfg))
        .await
        .map_err(|_| anyhow!("{label}: run exceeded its hard timeout of {limit:?}"))?
}

pub(crate) fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

async fn fanout_command(args: FanoutArgs) -> anyhow::Result<()> {
    args.scenario.validate()?;
    let cfg = args.scenario.config(
        args.label.clone(),
        parse_rtmp(&args.publish_url)?,
        parse_rtmp(&args.play_url)?,
        parse_http(args.flv_url.as_deref())?,
        args.server_pid,
    );
    let report = run_bounded(cfg, args.scenario.hard_timeout()).await?;
    fanout::print_report(&report);
    if let Some(path) = &args.json_out {
        write_json(path, &report)?;
    }
    Ok(())
}

async fn compare_command(args: CompareArgs) -> anyhow::Result<()> {
    args.scenario.validate()?;
    let mut reports = Vec::new();

    let nginx_url = format!(
        "rtmp://127.0.0.1:{}/live/{}",
        args.nginx_rtmp_port, args.nginx_stream
    );
    let nginx_scenario = ScenarioArgs {
        flv_viewers: 0,
        ..args.scenario.clone()
    };
    {
        let nginx = compare::NginxGuard::start(
            &args.nginx_bin,
            &args.nginx_conf,
            args.nginx_rtmp_port,
            args.nginx_http_port,
        )?;
        eprintln!(
            "[nginx-rtmp] started pid {} in {}",
            nginx.pid(),
            nginx.dir().display()
        );
        let cfg = nginx_scenario.config(
            "nginx-rtmp".to_string(),
            parse_rtmp(&nginx_url)?,
            parse_rtmp(&nginx_url)?,
            None,
            Some(nginx.pid()),
        );
        let report = run_bounded(cfg, args.scenario.hard_timeout()).await;
        drop(nginx);
        reports.push(report?);
    }

    if let (Some(publish), Some(play)) = (&args.westream_publish_url, &args.westream_play_url) {
        tokio::time::sleep(Duration::from_secs(args.pause_secs.min(60))).await;
        let cfg = args.scenario.config(
            "westream".to_string(),
            parse_rtmp(publish)?,
            parse_rtmp(play)?,
            parse_http(args.westream_flv_url.as_deref())?,
            args.westream_pid,
        );
        reports.push(run_bounded(cfg, args.scenario.hard_timeout()).await?);
    } else {
        eprintln!("no --westream-publish-url/--westream-play-url: ran nginx-rtmp only");
    }

    for report in &reports {
        fanout::print_report(report);
    }
    println!();
    compare::print_side_by_side(&reports);
    if let Some(path) = &args.json_out {
        write_json(path, &reports)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fanout` and `room` bound `--listen-pause-us` alike; `fanout` reads
    /// players on tokio tasks unless it is given.
    #[test]
    fn the_listeners_pause_has_one_bound_for_every_command() {
        let fanout = |extra: &[&str]| {
            let base = ["westream-bench", "fanout", "--publish-url", "rtmp://127.0.0.1/live/k", "--play-url", "rtmp://127.0.0.1/live/c"];
            Cli::try_parse_from(base.iter().chain(extra)).map(|cli| match cli.command {
                Command::Fanout(a) => a.scenario.listen_pause_us,
                other => panic!("parsed as {other:?}"),
            })
        };
        assert_eq!(fanout(&[]).expect("parses"), None);
        let cap = read_loop::MAX_PAUSE_US.to_string();
        assert_eq!(fanout(&["--listen-pause-us", &cap]).expect("the cap parses"), Some(read_loop::MAX_PAUSE_US));
        let over = (read_loop::MAX_PAUSE_US + 1).to_string();
        assert!(fanout(&["--listen-pause-us", &over]).is_err());
        let room = Cli::try_parse_from(["westream-bench", "room", "--listen-pause-us", &over]);
        assert!(room.is_err(), "room has the same bound");
    }
}
