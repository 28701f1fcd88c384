//! The worker pool: a fixed number of slots, a FIFO queue behind them, and
//! one supervisor task per running job that spawns ffmpeg, reads its
//! progress, restarts it with backoff when it dies, and stops it with
//! SIGTERM then SIGKILL.
//!
//! Must be used inside a tokio runtime. Lock discipline: the state mutex is
//! never held across an await.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, warn, Instrument};

use crate::args::{ffmpeg_args, EncodeOptions, RenditionOutput};
use crate::config::PoolConfig;
use crate::errors::{PoolError, ProbeError};
use crate::events::{FinishReason, PoolEvent};
use crate::metrics::PoolMetrics;
use crate::progress::{Backoff, ProgressParser, ProgressReport, RealtimeTracker, SpeedTransition, StderrRing};

/// Work for one source stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeJob {
    /// The source channel (the job's identity in the pool).
    pub channel: String,
    /// Where ffmpeg reads the source, e.g. `rtmp://127.0.0.1:1935/live/demo`.
    pub input_url: String,
    /// The renditions and where each is pushed, highest first.
    pub outputs: Vec<RenditionOutput>,
    /// Keyframes, B-frames, input pacing.
    pub options: EncodeOptions,
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// An ffmpeg process is up.
    Running {
        /// Its PID.
        pid: u32,
        /// ffmpeg's own speed (since process start).
        speed: f64,
        /// Speed over the pool's speed window, once a full window was seen.
        window_speed: Option<f64>,
        /// Encoding frame rate.
        fps: f64,
        /// Media time written, in milliseconds.
        out_time_ms: u64,
        /// Wall minus media time since the first frame, in milliseconds.
        lag_ms: u64,
        /// Reported slow and not yet recovered.
        slow: bool,
    },
    /// Waiting for a slot; 1 is next.
    Queued {
        /// 1-based queue position.
        position: usize,
    },
    /// The process died (or could not start); the next spawn is pending.
    Restarting {
        /// Restarts since the worker was last healthy.
        attempt: u32,
    },
}

/// One job in [`TranscoderPool::status`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// The source channel.
    pub channel: String,
    /// The slot it holds (None while queued).
    pub slot: Option<usize>,
    /// Renditions it produces (or will), highest first.
    pub renditions: Vec<String>,
    /// Where it stands.
    pub state: JobState,
}

/// A handle on a started job; cheap to clone, holds no resources (dropping
/// it does not stop the job: call [`TranscoderPool::stop`]).
#[derive(Debug, Clone)]
pub struct JobHandle {
    channel: String,
    pool: TranscoderPool,
}

impl JobHandle {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The job's status, or None once it is over.
    pub fn status(&self) -> Option<JobStatus> {
        self.pool.job_status(&self.channel)
    }

    /// The ffmpeg PID while a process is up.
    pub fn pid(&self) -> Option<u32> {
        match self.status()?.state {
            JobState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

/// The pool. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct TranscoderPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PoolConfig,
    metrics: PoolMetrics,
    events: broadcast::Sender<PoolEvent>,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    running: HashMap<String, RunningJob>,
    queue: VecDeque<TranscodeJob>,
    free_slots: BTreeSet<usize>,
}

#[derive(Debug)]
struct RunningJob {
    slot: usize,
    job: TranscodeJob,
    phase: Phase,
    progress: ProgressReport,
    window_speed: Option<f64>,
    lag_ms: u64,
    slow: bool,
    cancel: CancellationToken,
    reload: Arc<Notify>,
    done: watch::Receiver<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Starting,
    Running { pid: u32 },
    Restarting { attempt: u32 },
}

impl TranscoderPool {
    /// A pool with `config.effective_slots()` slots whose metrics are
    /// registered into `registry`. Fails only if the metrics are already
    /// registered there.
    pub fn new(config: PoolConfig, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let slots = config.effective_slots();
        let metrics = PoolMetrics::new(registry, slots)?;
        let (events, _) = broadcast::channel(256);
        let state = PoolState { free_slots: (0..slots).collect(), ..PoolState::default() };
        Ok(Self { inner: Arc::new(Inner { config, metrics, events, state: Mutex::new(state) }) })
    }

    /// Checks that `path` runs, is ffmpeg, and has the libx264 and aac
    /// encoders; returns its version. Call once at startup: on error, log it
    /// once and serve passthrough.
    pub async fn probe_ffmpeg(path: &str) -> Result<String, ProbeError> {
        crate::probe::probe_ffmpeg(path).await
    }

    /// The slot count in force.
    pub fn slots(&self) -> usize {
        self.inner.metrics.slots.get().try_into().unwrap_or(0)
    }

    /// Events of every job from now on (a lagging receiver loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.inner.events.subscribe()
    }

    /// Starts `job` in a free slot, or queues it (FIFO) when all are busy.
    pub fn start(&self, job: TranscodeJob) -> Result<JobHandle, PoolError> {
        if job.outputs.is_empty() {
            return Err(PoolError::NoOutputs { channel: job.channel });
        }
        let channel = job.channel.clone();
        let mut state = self.inner.lock();
        if state.running.contains_key(&channel) || state.queue.iter().any(|j| j.channel == channel) {
            return Err(PoolError::AlreadyActive { channel });
        }
        match state.free_slots.pop_first() {
            Some(slot) => self.inner.launch(&mut state, slot, job),
            None => {
                state.queue.push_back(job);
                let position = state.queue.len();
                self.inner.update_queue_gauge(&state);
                drop(state);
                self.inner.emit(PoolEvent::Queued { channel: channel.clone(), position });
            }
        }
        Ok(JobHandle { channel, pool: self.clone() })
    }

    /// Stops the channel's job: removes it from the queue, or SIGTERMs its
    /// worker (SIGKILL after `stop_timeout_ms`) and waits until the process
    /// is gone and its slot went to the next queued job. False if the
    /// channel had no job.
    pub async fn stop(&self, channel: &str) -> bool {
        let done = {
            let mut state = self.inner.lock();
            if let Some(i) = state.queue.iter().position(|j| j.channel == channel) {
                state.queue.remove(i);
                self.inner.update_queue_gauge(&state);
                drop(state);
                self.inner.emit(PoolEvent::Finished { channel: channel.to_owned(), reason: FinishReason::Stopped });
                return true;
            }
            let Some(job) = state.running.get(channel) else { return false };
            job.cancel.cancel();
            job.done.clone()
        };
        wait_done(done).await;
        true
    }

    /// Stops every job (queued ones first, so none starts meanwhile).
    pub async fn shutdown(&self) {
        let queued: Vec<String> = {
            let mut state = self.inner.lock();
            let q = state.queue.drain(..).map(|j| j.channel).collect();
            self.inner.update_queue_gauge(&state);
            q
        };
        for channel in queued {
            self.inner.emit(PoolEvent::Finished { channel, reason: FinishReason::Stopped });
        }
        let running: Vec<String> = self.inner.lock().running.keys().cloned().collect();
        for channel in running {
            self.stop(&channel).await;
        }
    }

    /// Drops the job's top rendition and restarts its worker with the rest
    /// (at once, no backoff, same slot). Returns the dropped rendition's
    /// name, so the owner can end `{channel}_{name}` and update the master
    /// playlist.
    pub fn downgrade(&self, channel: &str) -> Result<String, PoolError> {
        let mut state = self.inner.lock();
        let unknown = || PoolError::UnknownChannel { channel: channel.to_owned() };
        let (outputs, reload) = if let Some(job) = state.running.get_mut(channel) {
            (&mut job.job.outputs, Some(job.reload.clone()))
        } else {
            let job = state.queue.iter_mut().find(|j| j.channel == channel).ok_or_else(unknown)?;
            (&mut job.outputs, None)
        };
        if outputs.len() <= 1 {
            return Err(PoolError::CannotDowngrade { channel: channel.to_owned() });
        }
        let dropped = outputs.remove(0).rendition.rendition.name;
        let remaining = outputs.iter().map(|o| o.rendition.rendition.name.clone()).collect();
        drop(state);
        if let Some(reload) = reload {
            reload.notify_one();
        }
        self.inner.emit(PoolEvent::Downgraded { channel: channel.to_owned(), dropped: dropped.clone(), remaining });
        Ok(dropped)
    }

    /// Every job: running (by slot), then queued (by position).
    pub fn status(&self) -> Vec<JobStatus> {
        let state = self.inner.lock();
        let mut out: Vec<JobStatus> = state.running.iter().map(|(c, j)| running_status(c, j)).collect();
        out.sort_by_key(|s| s.slot);
        out.extend(state.queue.iter().enumerate().map(|(i, j)| queued_status(j, i + 1)));
        out
    }

    /// One job's status.
    pub fn job_status(&self, channel: &str) -> Option<JobStatus> {
        let state = self.inner.lock();
        if let Some(j) = state.running.get(channel) {
            return Some(running_status(channel, j));
        }
        state.queue.iter().position(|j| j.channel == channel).map(|i| queued_status(&state.queue[i], i + 1))
    }
}

fn rendition_names(outputs: &[RenditionOutput]) -> Vec<String> {
    outputs.iter().map(|o| o.rendition.rendition.name.clone()).collect()
}

fn running_status(channel: &str, j: &RunningJob) -> JobStatus {
    let state = match j.phase {
        Phase::Running { pid } => JobState::Running {
            pid,
            speed: j.progress.speed,
            window_speed: j.window_speed,
            fps: j.progress.fps,
            out_time_ms: j.progress.out_time_us / 1000,
            lag_ms: j.lag_ms,
            slow: j.slow,
        },
        Phase::Starting => JobState::Restarting { attempt: 0 },
        Phase::Restarting { attempt } => JobState::Restarting { attempt },
    };
    JobStatus { channel: channel.to_owned(), slot: Some(j.slot), renditions: rendition_names(&j.job.outputs), state }
}

fn queued_status(job: &TranscodeJob, position: usize) -> JobStatus {
    JobStatus {
        channel: job.channel.clone(),
        slot: None,
        renditions: rendition_names(&job.outputs),
        state: JobState::Queued { position },
    }
}

async fn wait_done(mut done: watch::Receiver<bool>) {
    // The supervisor sends true, or drops the sender, when the job is over.
    let _ = done.wait_for(|d| *d).await;
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: PoolEvent) {
        event.record(&self.metrics);
        let _ = self.events.send(event);
    }

    fn update_queue_gauge(&self, state: &PoolState) {
        self.metrics.jobs_queued.set(i64::try_from(state.queue.len()).unwrap_or(i64::MAX));
    }

    fn update_running_gauge(&self, state: &PoolState) {
        let n = state.running.values().filter(|j| matches!(j.phase, Phase::Running { .. })).count();
        self.metrics.workers_running.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Puts `job` in `slot` and spawns its supervisor. Called with the lock held.
    fn launch(self: &Arc<Self>, state: &mut PoolState, slot: usize, job: TranscodeJob) {
        let channel = job.channel.clone();
        let cancel = CancellationToken::new();
        let reload = Arc::new(Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        state.running.insert(
            channel.clone(),
            RunningJob {
                slot,
                job,
                phase: Phase::Starting,
                progress: ProgressReport::default(),
                window_speed: None,
                lag_ms: 0,
                slow: false,
                cancel: cancel.clone(),
                reload: reload.clone(),
                done: done_rx,
            },
        );
        let inner = Arc::clone(self);
        let span = info_span!("transcode", channel = %channel, slot);
        tokio::spawn(
            async move {
                let reason = inner.supervise(&channel, slot, &cancel, &reload).await;
                inner.finish(&channel, slot, reason);
                let _ = done_tx.send(true);
            }
            .instrument(span),
        );
    }

    /// Frees the slot and hands it to the next queued job.
    fn finish(self: &Arc<Self>, channel: &str, slot: usize, reason: FinishReason) {
        {
            let mut state = self.lock();
            state.running.remove(channel);
            self.metrics.clear_slot(slot);
            self.update_running_gauge(&state);
            match state.queue.pop_front() {
                Some(next) => {
                    self.update_queue_gauge(&state);
                    self.launch(&mut state, slot, next);
                }
                None => {
                    state.free_slots.insert(slot);
                }
            }
        }
        self.emit(PoolEvent::Finished { channel: channel.to_owned(), reason });
    }

    fn with_job<R>(&self, channel: &str, f: impl FnOnce(&mut RunningJob) -> R) -> Option<R> {
        self.lock().running.get_mut(channel).map(f)
    }

    fn set_phase(&self, channel: &str, phase: Phase) {
        let mut state = self.lock();
        if let Some(j) = state.running.get_mut(channel) {
            j.phase = phase;
            if !matches!(phase, Phase::Running { .. }) {
                j.progress = ProgressReport::default();
                j.window_speed = None;
                j.lag_ms = 0;
                j.slow = false;
            }
        }
        self.update_running_gauge(&state);
    }

    /// Runs the job until it is stopped or its source ends.
    async fn supervise(&self, channel: &str, slot: usize, cancel: &CancellationToken, reload: &Notify) -> FinishReason {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.restart_backoff_min_ms, cfg.restart_backoff_max_ms);
        loop {
            if cancel.is_cancelled() {
                return FinishReason::Stopped;
            }
            let Some(job) = self.with_job(channel, |j| j.job.clone()) else { return FinishReason::Stopped };
            let args = ffmpeg_args(&job.input_url, &job.outputs, &job.options);
            let mut command = Command::new(&cfg.ffmpeg_path);
            command.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
            let spawned = command.spawn().and_then(|child| match child.id() {
                Some(pid) => Ok((child, pid)),
                None => Err(std::io::Error::other("child exited before its pid was read")),
            });
            let outcome = match spawned {
                Err(e) => {
                    self.emit(PoolEvent::SpawnFailed { channel: channel.to_owned(), error: e.to_string() });
                    Outcome::Failed
                }
                Ok((child, pid)) => self.run_process(channel, slot, &job, child, pid, cancel, reload).await,
            };
            match outcome {
                Outcome::Stopped => return FinishReason::Stopped,
                Outcome::SourceEnded => return FinishReason::SourceEnded,
                Outcome::Reload => {
                    backoff.reset();
                    continue;
                }
                Outcome::Healthy => backoff.reset(),
                Outcome::Failed => {}
            }
            let delay_ms = backoff.next_delay_ms();
            let attempt = backoff.attempt();
            self.set_phase(channel, Phase::Restarting { attempt });
            self.emit(PoolEvent::Restarting { channel: channel.to_owned(), attempt, delay_ms });
            tokio::select! {
                () = cancel.cancelled() => return FinishReason::Stopped,
                () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            }
        }
    }

    /// One ffmpeg process, from spawn to exit.
    #[allow(clippy::too_many_arguments)]
    async fn run_process(
        &self,
        channel: &str,
        slot: usize,
        job: &TranscodeJob,
        mut child: Child,
        pid: u32,
        cancel: &CancellationToken,
        reload: &Notify,
    ) -> Outcome {
        let cfg = &self.config;
        let started = Instant::now();
        self.set_phase(channel, Phase::Running { pid });
        self.emit(PoolEvent::Started { channel: channel.to_owned(), slot, pid, renditions: rendition_names(&job.outputs) });

        let ring = Arc::new(Mutex::new(StderrRing::new(cfg.stderr_tail_lines)));
        let stderr_task = child.stderr.take().map(|stderr| {
            let ring = Arc::clone(&ring);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    ring.lock().unwrap_or_else(PoisonError::into_inner).push(&line);
                }
            })
        });
        let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        let mut parser = ProgressParser::default();
        let mut tracker = RealtimeTracker::new(cfg.slow_speed_threshold, cfg.slow_period_ms, cfg.speed_window_ms);

        enum Step {
            Stop,
            Reload,
            Exited(std::io::Result<ExitStatus>),
        }
        let step = loop {
            tokio::select! {
                () = cancel.cancelled() => break Step::Stop,
                () = reload.notified() => break Step::Reload,
                line = next_line(&mut stdout) => match line {
                    Some(line) => {
                        if let Some(report) = parser.handle_line(&line) {
                            let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                            self.handle_report(channel, slot, job.outputs.len(), report, now_ms, &mut tracker);
                        }
                    }
                    None => stdout = None,
                },
                status = child.wait() => break Step::Exited(status),
            }
        };
        let outcome = match step {
            Step::Stop | Step::Reload => {
                terminate(&mut child, pid, Duration::from_millis(cfg.stop_timeout_ms)).await;
                if matches!(step, Step::Stop) {
                    Outcome::Stopped
                } else {
                    Outcome::Reload
                }
            }
            Step::Exited(Ok(status)) if status.success() => Outcome::SourceEnded,
            Step::Exited(status) => {
                if let Some(task) = stderr_task {
                    // The pipe closes when the process is gone; read what is left.
                    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                }
                let stderr_tail = ring.lock().unwrap_or_else(PoisonError::into_inner).lines().map(str::to_owned).collect();
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                self.emit(PoolEvent::Died { channel: channel.to_owned(), pid, status, stderr_tail });
                if started.elapsed() >= Duration::from_millis(cfg.healthy_after_ms) {
                    Outcome::Healthy
                } else {
                    Outcome::Failed
                }
            }
        };
        self.set_phase(channel, Phase::Starting);
        self.metrics.clear_slot(slot);
        outcome
    }

    fn handle_report(&self, channel: &str, slot: usize, renditions: usize, report: ProgressReport, now_ms: u64, tracker: &mut RealtimeTracker) {
        let transition = tracker.handle_progress(now_ms, report.out_time_us);
        let window_speed = tracker.window_speed();
        self.metrics.set_progress(slot, window_speed.unwrap_or(report.speed), report.fps, tracker.lag_ms() as f64 / 1000.0);
        self.with_job(channel, |j| {
            j.progress = report;
            j.window_speed = window_speed;
            j.lag_ms = tracker.lag_ms();
            j.slow = tracker.is_slow();
        });
        match transition {
            Some(SpeedTransition::BecameSlow { speed }) => {
                self.emit(PoolEvent::Slow { channel: channel.to_owned(), slot, speed, renditions });
            }
            Some(SpeedTransition::Recovered { speed }) => {
                self.metrics.set_slow(slot, false);
                self.emit(PoolEvent::Recovered { channel: channel.to_owned(), speed });
            }
            None => {}
        }
    }
}

enum Outcome {
    Stopped,
    Reload,
    SourceEnded,
    /// Died after running long enough to count as healthy.
    Healthy,
    /// Died young, or never started.
    Failed,
}

async fn next_line(lines: &mut Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// SIGTERM (ffmpeg flushes and closes its outputs), then SIGKILL after `timeout`.
async fn terminate(child: &mut Child, pid: u32, timeout: Duration) {
    send_sigterm(pid);
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        warn!(pid, timeout_ms = timeout.as_millis() as u64, "ffmpeg ignored SIGTERM; killing it");
        if let Err(e) = child.kill().await {
            warn!(pid, error = %e, "cannot kill ffmpeg");
        }
    }
}

#[cfg(unix)]
fn send_sigterm(pid: u32) {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (already gone) is fine: wait() reaps it.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

#[cfg(not(unix))]
fn send_sigterm(_pid: u32) {
    // No SIGTERM: the timeout path kills it.
}

#[cfg(test)]
mod tests;
