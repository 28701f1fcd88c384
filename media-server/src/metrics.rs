//! Prometheus metrics of the media path, registered in one registry that
//! `/metrics` serves. Label sets are bounded: protocol and reason only,
//! never a channel name.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The media server's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Channels with a publisher (or in their reconnect grace period).
    pub streams_live: IntGauge,
    /// Connected publishers.
    pub publishers: IntGauge,
    /// Connected viewers by protocol.
    pub viewers: IntGaugeVec,
    /// Media bytes received from publishers.
    pub bytes_in: IntCounter,
    /// Bytes sent to viewers by protocol.
    pub bytes_out: IntCounterVec,
    /// `bytes_out{protocol="rtmp"}`, resolved once: the hot path adds to it
    /// per write without a label lookup.
    pub bytes_out_rtmp: IntCounter,
    /// `bytes_out{protocol="flv"}`, resolved once.
    pub bytes_out_flv: IntCounter,
    /// `bytes_out{protocol="hls"}`, resolved once.
    pub bytes_out_hls: IntCounter,
    /// Frames skipped for viewers that could not keep up.
    pub frames_dropped: IntCounter,
    /// Connections or requests refused, by reason.
    pub rejected: IntCounterVec,
    /// RTMP connections accepted.
    pub rtmp_connections: IntCounter,
    /// RTMP players written by their channel's fan-out right now (they keep
    /// up); the others are catching up on their own.
    pub rtmp_direct_viewers: IntGauge,
    /// Times a player left the fan-out because its socket was full.
    pub rtmp_handbacks: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let streams_live = IntGauge::new("westream_streams_live", "Channels that are live").expect("valid metric");
        let publishers = IntGauge::new("westream_publishers", "Connected publishers").expect("valid metric");
        let viewers = IntGaugeVec::new(Opts::new("westream_viewers", "Connected viewers by protocol"), &["protocol"])
            .expect("valid metric");
        let bytes_in = IntCounter::new("westream_ingest_bytes_total", "Media bytes received from publishers")
            .expect("valid metric");
        let bytes_out = IntCounterVec::new(
            Opts::new("westream_egress_bytes_total", "Bytes sent to viewers by protocol"),
            &["protocol"],
        )
        .expect("valid metric");
        let frames_dropped = IntCounter::new(
            "westream_frames_dropped_total",
            "Frames skipped for slow viewers (each skipped to the next keyframe)",
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new("westream_connections_rejected_total", "Connections or requests refused, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let rtmp_connections =
            IntCounter::new("westream_rtmp_connections_total", "RTMP connections accepted").expect("valid metric");
        let rtmp_direct_viewers = IntGauge::new(
            "westream_rtmp_direct_viewers",
            "RTMP players written directly by their channel's fan-out (keeping up)",
        )
        .expect("valid metric");
        let rtmp_handbacks = IntCounter::new(
            "westream_rtmp_handbacks_total",
            "Times an RTMP player left the fan-out because its socket was full",
        )
        .expect("valid metric");
        for c in [
            Box::new(streams_live.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(publishers.clone()),
            Box::new(viewers.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(frames_dropped.clone()),
            Box::new(rejected.clone()),
            Box::new(rtmp_connections.clone()),
            Box::new(rtmp_direct_viewers.clone()),
            Box::new(rtmp_handbacks.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for p in ["rtmp", "flv", "hls"] {
            viewers.with_label_values(&[p]);
            bytes_out.with_label_values(&[p]);
        }
        Metrics {
            bytes_out_rtmp: bytes_out.with_label_values(&["rtmp"]),
            bytes_out_flv: bytes_out.with_label_values(&["flv"]),
            bytes_out_hls: bytes_out.with_label_values(&["hls"]),
            registry,
            streams_live,
            publishers,
            viewers,
            bytes_in,
            bytes_out,
            frames_dropped,
            rejected,
            rtmp_connections,
            rtmp_direct_viewers,
            rtmp_handbacks,
        }
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
