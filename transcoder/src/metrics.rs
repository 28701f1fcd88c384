//! Prometheus metrics of the pool. Per-worker series are labelled by slot
//! index (`slot="0"` .. `slots-1`), never by channel, so the label set is
//! bounded by the config.

use prometheus::{Gauge, GaugeVec, IntCounter, IntGauge, Opts, Registry};

/// The pool's metrics, registered into the registry given to the pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolMetrics {
    pub(crate) workers_running: IntGauge,
    pub(crate) jobs_queued: IntGauge,
    pub(crate) slots: IntGauge,
    pub(crate) restarts_total: IntCounter,
    pub(crate) slow_reports_total: IntCounter,
    speed: GaugeVec,
    fps: GaugeVec,
    lag: GaugeVec,
    slow: GaugeVec,
}

impl PoolMetrics {
    pub(crate) fn new(registry: &Registry, slots: usize) -> Result<Self, prometheus::Error> {
        let m = Self {
            workers_running: IntGauge::new("westream_transcoder_workers_running", "ffmpeg workers with a live process")?,
            jobs_queued: IntGauge::new("westream_transcoder_jobs_queued", "transcode jobs waiting for a slot")?,
            slots: IntGauge::new("westream_transcoder_slots", "configured worker slots")?,
            restarts_total: IntCounter::new("westream_transcoder_restarts_total", "worker restarts after a crash or a failed spawn")?,
            slow_reports_total: IntCounter::new(
                "westream_transcoder_slow_reports_total",
                "times a worker stayed under the speed threshold for the slow period",
            )?,
            speed: GaugeVec::new(Opts::new("westream_transcoder_worker_speed", "media seconds encoded per wall second, over the speed window"), &["slot"])?,
            fps: GaugeVec::new(Opts::new("westream_transcoder_worker_fps", "frames encoded per second"), &["slot"])?,
            lag: GaugeVec::new(
                Opts::new("westream_transcoder_encode_lag_seconds", "wall time minus media time since the worker's first frame"),
                &["slot"],
            )?,
            slow: GaugeVec::new(Opts::new("westream_transcoder_worker_slow", "1 while the worker is reported slow"), &["slot"])?,
        };
        registry.register(Box::new(m.workers_running.clone()))?;
        registry.register(Box::new(m.jobs_queued.clone()))?;
        registry.register(Box::new(m.slots.clone()))?;
        registry.register(Box::new(m.restarts_total.clone()))?;
        registry.register(Box::new(m.slow_reports_total.clone()))?;
        registry.register(Box::new(m.speed.clone()))?;
        registry.register(Box::new(m.fps.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.slow.clone()))?;
        m.slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
        for slot in 0..slots {
            m.clear_slot(slot);
        }
        Ok(m)
    }

    fn slot_gauge(vec: &GaugeVec, slot: usize) -> Gauge {
        vec.with_label_values(&[slot.to_string().as_str()])
    }

    pub(crate) fn set_progress(&self, slot: usize, speed: f64, fps: f64, lag_seconds: f64) {
        Self::slot_gauge(&self.speed, slot).set(speed);
        Self::slot_gauge(&self.fps, slot).set(fps);
        Self::slot_gauge(&self.lag, slot).set(lag_seconds);
    }

    pub(crate) fn set_slow(&self, slot: usize, slow: bool) {
        Self::slot_gauge(&self.slow, slot).set(if slow { 1.0 } else { 0.0 });
    }

    /// A free slot reads zero everywhere.
    pub(crate) fn clear_slot(&self, slot: usize) {
        self.set_progress(slot, 0.0, 0.0, 0.0);
        self.set_slow(slot, false);
    }
}
