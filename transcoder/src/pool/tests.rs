//! Supervision tests with stand-in "ffmpeg" shell scripts: real child
//! processes that sleep, crash, ignore SIGTERM or print progress, at no CPU
//! cost.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::broadcast;

use super::*;
use crate::ladder::{plan_renditions, LaddersConfig};

/// Written once, before any test spawns anything: writing an executable
/// while another thread forks can make exec fail with ETXTBSY.
fn scripts_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("westream-fake-ffmpeg").tempdir().unwrap();
        let scripts = [
            // Records its arguments, then runs until signalled.
            ("sleeper", "echo \"$@\" > \"$0.args.$$\"\nexec sleep 30\n"),
            ("crasher", "echo 'Input #0, flv, from rtmp://127.0.0.1/live/x:' >&2\necho 'rtmp://127.0.0.1/live/x: Connection refused' >&2\nexit 1\n"),
            ("stubborn", "trap '' TERM\nwhile :; do sleep 0.1; done\n"),
            ("ender", "printf 'frame=1\\nout_time_us=1000\\nprogress=end\\n'\nexit 0\n"),
            // Half real time: 50 ms of media every 100 ms.
            (
                "slow",
                "echo \"$@\" > \"$0.args.$$\"\nt=0\nwhile :; do t=$((t+50000)); printf 'frame=1\\nfps=15.0\\nout_time_us=%d\\nspeed=0.5x\\nprogress=continue\\n' $t; sleep 0.1; done\n",
            ),
        ];
        for (name, body) in scripts {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir
    })
    .path()
}

fn fake(name: &str) -> String {
    scripts_dir().join(name).display().to_string()
}

fn config(script: &str, slots: usize) -> PoolConfig {
    PoolConfig {
        slots: Some(slots),
        ffmpeg_path: fake(script),
        restart_backoff_min_ms: 50,
        restart_backoff_max_ms: 200,
        stop_timeout_ms: 300,
        slow_period_ms: 500,
        speed_window_ms: 500,
        ..PoolConfig::default()
    }
}

fn job(channel: &str) -> TranscodeJob {
    let text = include_str!("../../../configs/ladders.toml");
    let ladders = LaddersConfig::from_toml_str(text).unwrap();
    let outputs = plan_renditions(ladders.ladder("default").unwrap(), 1280, 720)
        .into_iter()
        .map(|r| RenditionOutput { url: format!("rtmp://127.0.0.1:1935/internal/{channel}_{}", r.rendition.name), rendition: r })
        .collect();
    TranscodeJob { channel: channel.to_owned(), input_url: format!("rtmp://127.0.0.1:1935/live/{channel}"), outputs, options: EncodeOptions::default() }
}

async fn next_event(rx: &mut broadcast::Receiver<PoolEvent>, what: &str, pred: impl Fn(&PoolEvent) -> bool) -> PoolEvent {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if pred(&ev) => return ev,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("pool gone while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn started(rx: &mut broadcast::Receiver<PoolEvent>, channel: &str) -> u32 {
    match next_event(rx, "Started", |e| matches!(e, PoolEvent::Started { channel: c, .. } if c == channel)).await {
        PoolEvent::Started { pid, .. } => pid,
        _ => unreachable!(),
    }
}

/// The arguments a fake ffmpeg recorded (it writes them just after it starts).
async fn recorded_args(script: &str, pid: u32) -> String {
    let path = format!("{}.args.{pid}", fake(script));
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if !text.is_empty() {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never written")
}

fn process_exists(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// The value of an unlabelled metric, from the text exposition.
fn gauge(registry: &Registry, name: &str) -> f64 {
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

fn states(pool: &TranscoderPool) -> Vec<(String, &'static str, Option<usize>)> {
    pool.status()
        .into_iter()
        .map(|s| {
            let (kind, pos) = match s.state {
                JobState::Running { .. } => ("running", None),
                JobState::Queued { position } => ("queued", Some(position)),
                JobState::Restarting { .. } => ("restarting", None),
            };
            (s.channel, kind, pos)
        })
        .collect()
}

#[tokio::test]
async fn jobs_beyond_the_slots_wait_in_fifo_order_and_take_the_freed_slot() {
    let registry = Registry::new();
    let pool = TranscoderPool::new(config("sleeper", 1), &registry).unwrap();
    let mut rx = pool.subscribe();
    let a = pool.start(job("a")).unwrap();
    let pid_a = started(&mut rx, "a").await;
    pool.start(job("b")).unwrap();
    pool.start(job("c")).unwrap();
    assert_eq!(pool.start(job("b")).unwrap_err(), PoolError::AlreadyActive { channel: "b".into() });

    assert_eq!(a.pid(), Some(pid_a));
    assert!(process_exists(pid_a));
    assert_eq!(
        states(&pool),
        [("a".into(), "running", None), ("b".into(), "queued", Some(1)), ("c".into(), "queued", Some(2))]
    );
    assert_eq!(gauge(&registry, "westream_transcoder_jobs_queued"), 2.0);
    assert_eq!(gauge(&registry, "westream_transcoder_workers_running"), 1.0);

    // Leaving the queue moves the others up.
    assert!(pool.stop("b").await);
    assert_eq!(states(&pool)[1], ("c".into(), "queued", Some(1)));

    // Stopping the running job kills its process and hands the slot on.
    assert!(pool.stop("a").await);
    assert!(!process_exists(pid_a), "ffmpeg {pid_a} still alive after stop");
    assert_eq!(a.status(), None);
    let pid_c = started(&mut rx, "c").await;
    assert_ne!(pid_c, pid_a);
    assert_eq!(states(&pool), [("c".into(), "running", None)]);
    assert_eq!(gauge(&registry, "westream_transcoder_jobs_queued"), 0.0);

    // The worker got the ladder's command line.
    let args = recorded_args("sleeper", pid_c).await;
    assert!(args.contains("-i rtmp://127.0.0.1:1935/live/c"), "{args}");
    assert!(args.contains("rtmp://127.0.0.1:1935/internal/c_360p"), "{args}");

    assert!(!pool.stop("nobody").await);
    pool.shutdown().await;
    assert!(!process_exists(pid_c));
    assert!(pool.status().is_empty());
}

#[tokio::test]
async fn a_worker_that_dies_is_restarted_with_backoff_and_its_stderr_is_reported() {
    let registry = Registry::new();
    let pool = TranscoderPool::new(config("crasher", 1), &registry).unwrap();
    let mut rx = pool.subscribe();
    pool.start(job("a")).unwrap();

    let died = next_event(&mut rx, "Died", |e| matches!(e, PoolEvent::Died { .. })).await;
    let PoolEvent::Died { status, stderr_tail, .. } = died else { unreachable!() };
    assert!(status.contains("exit status: 1"), "{status}");
    assert_eq!(stderr_tail.last().map(String::as_str), Some("rtmp://127.0.0.1/live/x: Connection refused"));

    let mut delays = Vec::new();
    for _ in 0..4 {
        match next_event(&mut rx, "Restarting", |e| matches!(e, PoolEvent::Restarting { .. })).await {
            PoolEvent::Restarting { attempt, delay_ms, .. } => delays.push((attempt, delay_ms)),
            _ => unreachable!(),
        }
    }
    // The first Restarting may have been sent before we looked; the doubling shows either way.
    assert!(delays.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{delays:?}");
    assert_eq!(delays.last().map(|d| d.1), Some(200), "capped at max: {delays:?}");
    assert!(gauge(&registry, "westream_transcoder_restarts_total") >= 4.0);
    assert!(matches!(pool.job_status("a").unwrap().state, JobState::Restarting { .. } | JobState::Running { .. }));

    assert!(pool.stop("a").await);
    assert!(pool.status().is_empty());
}

#[tokio::test]
async fn a_worker_that_ignores_sigterm_is_killed_after_the_timeout() {
    let pool = TranscoderPool::new(config("stubborn", 1), &Registry::new()).unwrap();
    let mut rx = pool.subscribe();
    let handle = pool.start(job("a")).unwrap();
    let pid = started(&mut rx, "a").await;
    assert_eq!(handle.pid(), Some(pid));
    // Let the shell install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t0 = std::time::Instant::now();
    assert!(pool.stop("a").await);
    assert!(t0.elapsed() >= Duration::from_millis(300), "SIGTERM was ignored, so stop waited for the timeout");
    assert!(!process_exists(pid));
    let finished = next_event(&mut rx, "Finished", |e| matches!(e, PoolEvent::Finished { .. })).await;
    assert_eq!(finished, PoolEvent::Finished { channel: "a".into(), reason: FinishReason::Stopped });
}

#[tokio::test]
async fn a_clean_exit_means_the_source_ended_and_frees_the_slot() {
    let pool = TranscoderPool::new(config("ender", 1), &Registry::new()).unwrap();
    let mut rx = pool.subscribe();
    pool.start(job("a")).unwrap();
    pool.start(job("b")).unwrap();
    let first = next_event(&mut rx, "Finished a", |e| matches!(e, PoolEvent::Finished { channel, .. } if channel == "a")).await;
    assert_eq!(first, PoolEvent::Finished { channel: "a".into(), reason: FinishReason::SourceEnded });
    next_event(&mut rx, "Finished b", |e| matches!(e, PoolEvent::Finished { channel, .. } if channel == "b")).await;
    assert!(pool.status().is_empty());
}

#[tokio::test]
async fn a_slow_worker_is_reported_and_can_be_downgraded() {
    let registry = Registry::new();
    let pool = TranscoderPool::new(config("slow", 1), &registry).unwrap();
    let mut rx = pool.subscribe();
    pool.start(job("a")).unwrap();
    let first_pid = started(&mut rx, "a").await;

    let slow = next_event(&mut rx, "Slow", |e| matches!(e, PoolEvent::Slow { .. })).await;
    let PoolEvent::Slow { speed, renditions, slot, .. } = slow else { unreachable!() };
    assert!((0.3..0.7).contains(&speed), "{speed}");
    assert_eq!((renditions, slot), (3, 0));
    let Some(JobStatus { state: JobState::Running { slow: true, window_speed: Some(ws), lag_ms, .. }, .. }) = pool.job_status("a") else {
        panic!("{:?}", pool.job_status("a"))
    };
    assert!(ws < 0.95 && lag_ms > 0, "{ws} {lag_ms}");
    assert_eq!(gauge(&registry, "westream_transcoder_slow_reports_total"), 1.0);

    assert_eq!(pool.downgrade("a").unwrap(), "720p");
    let second_pid = started(&mut rx, "a").await;
    assert_ne!(first_pid, second_pid);
    assert!(!process_exists(first_pid));
    assert_eq!(pool.job_status("a").unwrap().renditions, ["480p", "360p"]);
    let args = recorded_args("slow", second_pid).await;
    assert!(args.contains("split=2") && !args.contains("a_720p"), "{args}");

    assert_eq!(pool.downgrade("a").unwrap(), "480p");
    assert_eq!(pool.downgrade("a").unwrap_err(), PoolError::CannotDowngrade { channel: "a".into() });
    assert_eq!(pool.downgrade("zz").unwrap_err(), PoolError::UnknownChannel { channel: "zz".into() });
    pool.shutdown().await;
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_failure_and_a_clear_probe_error() {
    let mut cfg = config("sleeper", 1);
    cfg.ffmpeg_path = "/nonexistent/ffmpeg".into();
    let pool = TranscoderPool::new(cfg, &Registry::new()).unwrap();
    let mut rx = pool.subscribe();
    pool.start(job("a")).unwrap();
    next_event(&mut rx, "SpawnFailed", |e| matches!(e, PoolEvent::SpawnFailed { .. })).await;
    next_event(&mut rx, "Restarting", |e| matches!(e, PoolEvent::Restarting { .. })).await;
    pool.shutdown().await;

    let err = TranscoderPool::probe_ffmpeg("/nonexistent/ffmpeg").await.unwrap_err();
    assert!(matches!(err, ProbeError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ffmpeg"));
    let err = TranscoderPool::probe_ffmpeg(&fake("ender")).await.unwrap_err();
    assert!(matches!(err, ProbeError::NotFfmpeg { .. }), "{err}");
}

#[tokio::test]
async fn a_job_with_nothing_to_encode_is_refused() {
    let pool = TranscoderPool::new(config("sleeper", 1), &Registry::new()).unwrap();
    let mut j = job("a");
    j.outputs.clear();
    assert_eq!(pool.start(j).unwrap_err(), PoolError::NoOutputs { channel: "a".into() });
    // Metrics already registered in the same registry: an error, not a panic.
    let registry = Registry::new();
    let _p = TranscoderPool::new(config("sleeper", 2), &registry).unwrap();
    assert!(TranscoderPool::new(config("sleeper", 2), &registry).is_err());
}
