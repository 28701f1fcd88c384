//! `[relay]` (origin side) and `[edge]` (edge role) configuration: a default
//! for every field, units in key names, `validate()` naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::framing::{DEFAULT_MAX_FRAME_BYTES, MAX_NAME_LEN, MAX_TOKEN_LEN};

/// A value that parsed but is not allowed; `key` is the dotted TOML key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    /// The offending key, e.g. `edge.origins[0].quic_addr`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[relay]`: the origin's QUIC listener that edges pull channels from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Serve the relay at all.
    pub enabled: bool,
    /// UDP address of the QUIC listener (`--relay-listen`).
    pub quic_listen: String,
    /// TLS certificate (PEM), relative to `--data-dir` unless absolute.
    pub cert_file: PathBuf,
    /// TLS private key (PEM), relative to `--data-dir` unless absolute.
    pub key_file: PathBuf,
    /// Create a self-signed certificate and key at those paths when they do
    /// not exist. Edges pin its SHA-256 fingerprint (logged at start and
    /// written next to the certificate as `<cert_file>.sha256`).
    pub generate_cert: bool,
    /// Node tokens edges may present. The control plane's
    /// `control.node_tokens` are accepted too when `[control]` is present.
    pub node_tokens: Vec<String>,
    /// Largest frame payload sent to or accepted from a peer.
    pub max_frame_bytes: usize,
    /// Time an edge has to send its request after opening a stream.
    pub request_timeout_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: false,
            quic_listen: "127.0.0.1:4433".into(),
            cert_file: PathBuf::from("relay-cert.pem"),
            key_file: PathBuf::from("relay-key.pem"),
            generate_cert: true,
            node_tokens: Vec::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            request_timeout_ms: 5000,
        }
    }
}

impl RelayConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("relay.quic_listen", &self.quic_listen)?;
        if self.cert_file.as_os_str().is_empty() {
            return Err(invalid("relay.cert_file", "must not be empty"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(invalid("relay.key_file", "must not be empty"));
        }
        if self.node_tokens.iter().any(|t| t.is_empty() || t.len() > MAX_TOKEN_LEN) {
            return Err(invalid("relay.node_tokens", format!("every token must be 1-{MAX_TOKEN_LEN} bytes")));
        }
        check_frame_bytes("relay.max_frame_bytes", self.max_frame_bytes)?;
        if !(100..=60_000).contains(&self.request_timeout_ms) {
            return Err(invalid("relay.request_timeout_ms", "must be between 100 and 60000"));
        }
        Ok(())
    }

    /// The listen address (after [`RelayConfig::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("relay.quic_listen", &self.quic_listen)
    }
}

/// One origin an edge may pull from (`[[edge.origins]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The origin's QUIC address, `host:port` with a numeric IP.
    pub quic_addr: String,
    /// Hex SHA-256 of the origin's certificate (DER), as the origin logs it.
    pub cert_sha256: String,
}

/// The URLs viewers use to reach this edge, per protocol. Empty: derived
/// from the addresses the edge listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicUrls {
    /// RTMP base, e.g. `rtmp://edge1.example:1935/live`.
    pub rtmp: String,
    /// HTTP base for HTTP-FLV, e.g. `http://edge1.example:8080`.
    pub flv: String,
    /// HTTP base for HLS, e.g. `https://edge1.example`.
    pub hls: String,
}

/// `[edge]`: settings of `westream edge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This edge's id in the registry, logs and usage reports.
    pub id: String,
    /// Origins to pull from, tried in order; the next on failure.
    pub origins: Vec<OriginConfig>,
    /// The node token for origins and the control plane.
    pub node_token: String,
    /// Region name shown to operators and used as a fallback location.
    pub region: String,
    /// Where the edge is, degrees.
    pub latitude: f64,
    /// Where the edge is, degrees.
    pub longitude: f64,
    /// Most viewers the control plane sends here.
    pub capacity_viewers: u64,
    /// Most egress the control plane sends here, Mb/s.
    pub capacity_mbps: u64,
    /// Public URLs per protocol.
    pub public_urls: PublicUrls,
    /// How long a channel's upstream stays open after its last viewer.
    pub upstream_idle_timeout_ms: u64,
    /// How long a viewer of a channel that is not here yet waits for the
    /// upstream to deliver it before a 404.
    pub upstream_wait_ms: u64,
    /// First delay before reconnecting to an origin; doubles per failure.
    pub reconnect_initial_ms: u64,
    /// Longest delay between reconnect attempts.
    pub reconnect_max_ms: u64,
    /// How often the edge heartbeats to the control plane.
    pub heartbeat_interval_ms: u64,
    /// Largest frame accepted from an origin.
    pub max_frame_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            id: "edge-1".into(),
            origins: Vec::new(),
            node_token: String::new(),
            region: "default".into(),
            latitude: 0.0,
            longitude: 0.0,
            capacity_viewers: 10_000,
            capacity_mbps: 10_000,
            public_urls: PublicUrls::default(),
            upstream_idle_timeout_ms: 30_000,
            upstream_wait_ms: 3_000,
            reconnect_initial_ms: 200,
            reconnect_max_ms: 5_000,
            heartbeat_interval_ms: 2_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl EdgeConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_id(&self.id) {
            return Err(invalid("edge.id", "must be 1-64 of [A-Za-z0-9_-]"));
        }
        if self.origins.is_empty() {
            return Err(invalid("edge.origins", "list at least one origin ([[edge.origins]] quic_addr, cert_sha256)"));
        }
        for (i, o) in self.origins.iter().enumerate() {
            parse_addr(&format!("edge.origins[{i}].quic_addr"), &o.quic_addr)?;
            let ok = o.cert_sha256.len() == 64 && o.cert_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(invalid(format!("edge.origins[{i}].cert_sha256"), "must be 64 hex digits (the origin logs it at start)"));
            }
        }
        if self.node_token.is_empty() || self.node_token.len() > MAX_TOKEN_LEN {
            return Err(invalid("edge.node_token", format!("must be 1-{MAX_TOKEN_LEN} bytes")));
        }
        if self.region.is_empty() || self.region.len() > MAX_NAME_LEN {
            return Err(invalid("edge.region", "must be 1-64 bytes"));
        }
        if !(-90.0..=90.0).contains(&self.latitude) {
            return Err(invalid("edge.latitude", "must be between -90 and 90"));
        }
        if !(-180.0..=180.0).contains(&self.longitude) {
            return Err(invalid("edge.longitude", "must be between -180 and 180"));
        }
        if self.capacity_viewers == 0 {
            return Err(invalid("edge.capacity_viewers", "must be positive"));
        }
        if self.capacity_mbps == 0 {
            return Err(invalid("edge.capacity_mbps", "must be positive"));
        }
        for (key, url, schemes) in [
            ("edge.public_urls.rtmp", &self.public_urls.rtmp, &["rtmp://"][..]),
            ("edge.public_urls.flv", &self.public_urls.flv, &["http://", "https://"][..]),
            ("edge.public_urls.hls", &self.public_urls.hls, &["http://", "https://"][..]),
        ] {
            if !url.is_empty() && !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(invalid(key, format!("must start with {}", schemes.join(" or "))));
            }
        }
        if !(100..=3_600_000).contains(&self.upstream_idle_timeout_ms) {
            return Err(invalid("edge.upstream_idle_timeout_ms", "must be between 100 and 3600000"));
        }
        if !(100..=30_000).contains(&self.upstream_wait_ms) {
            return Err(invalid("edge.upstream_wait_ms", "must be between 100 and 30000"));
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_initial_ms > self.reconnect_max_ms {
            return Err(invalid("edge.reconnect_initial_ms", "must be positive and at most edge.reconnect_max_ms"));
        }
        if self.reconnect_max_ms > 600_000 {
            return Err(invalid("edge.reconnect_max_ms", "must be at most 600000"));
        }
        if !(100..=60_000).contains(&self.heartbeat_interval_ms) {
            return Err(invalid("edge.heartbeat_interval_ms", "must be between 100 and 60000"));
        }
        check_frame_bytes("edge.max_frame_bytes", self.max_frame_bytes)
    }
}

fn check_frame_bytes(key: &str, v: usize) -> Result<(), ConfigError> {
    if !(64 * 1024..=64 * 1024 * 1024).contains(&v) {
        return Err(invalid(key, "must be between 64 KiB and 64 MiB"));
    }
    Ok(())
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| invalid(key, format!("'{value}' is not an address like 127.0.0.1:4433 ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_defaults_validate_and_bad_keys_are_named() {
        RelayConfig::default().validate().unwrap();
        let bad = RelayConfig { quic_listen: "nowhere".into(), ..RelayConfig::default() };
        assert_eq!(bad.validate().unwrap_err().key, "relay.quic_listen");
    }

    #[test]
    fn an_edge_needs_origins_with_fingerprints_and_a_token() {
        assert_eq!(EdgeConfig::default().validate().unwrap_err().key, "edge.origins");
        let mut cfg = EdgeConfig {
            node_token: "t".into(),
            origins: vec![OriginConfig { quic_addr: "127.0.0.1:4433".into(), cert_sha256: "ab".into() }],
            ..EdgeConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "edge.origins[0].cert_sha256");
        cfg.origins[0].cert_sha256 = "a".repeat(64);
        cfg.validate().unwrap();
        cfg.latitude = 91.0;
        assert_eq!(cfg.validate().unwrap_err().key, "edge.latitude");
    }

    #[test]
    fn unknown_edge_keys_are_refused() {
        let err = toml::from_str::<EdgeConfig>("idd = 'x'").unwrap_err().to_string();
        assert!(err.contains("idd"), "{err}");
    }
}
