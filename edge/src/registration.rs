//! Registration and heartbeats with the control plane: the edge registers
//! (id, public URLs, region, location, capacity), then heartbeats its load
//! every `edge.heartbeat_interval_ms`, re-registering when the control plane
//! no longer knows it (a restart, an expiry). Failures are logged and retried
//! at the next beat; they never stop the edge serving.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use westream_control::edges::{EdgeHeartbeat, EdgeRegistration};

/// Why a registration or heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The control plane could not be reached; retrying may help.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The control plane does not know this edge: register again.
    #[error("edge not registered")]
    NotRegistered,
    /// The control plane refused (bad node token, invalid registration).
    #[error("control plane refused ({status}): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error body.
        body: String,
    },
}

/// The edge's client of the control plane's edge routes.
pub struct RegistrationClient {
    http: reqwest::Client,
    base: String,
    token: String,
    registration: EdgeRegistration,
    interval: Duration,
}

impl RegistrationClient {
    /// A client for the control plane at `base` (e.g. `http://10.0.0.1:8080`).
    pub fn new(base: &str, token: &str, registration: EdgeRegistration, interval: Duration) -> RegistrationClient {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        RegistrationClient { http, base: base.trim_end_matches('/').to_string(), token: token.to_string(), registration, interval }
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<reqwest::Response, RegistrationError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| RegistrationError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistrationError::NotRegistered);
        }
        let body = resp.text().await.unwrap_or_default();
        if status.is_server_error() {
            return Err(RegistrationError::Unreachable(format!("{status}: {body}")));
        }
        Err(RegistrationError::Refused { status: status.as_u16(), body })
    }

    /// Registers (or re-registers) the edge.
    pub async fn register(&self) -> Result<(), RegistrationError> {
        self.post("/v1/edges/register", &self.registration).await.map(|_| ())
    }

    /// Sends one heartbeat; returns its round trip.
    pub async fn heartbeat(&self, beat: &EdgeHeartbeat) -> Result<Duration, RegistrationError> {
        let started = Instant::now();
        self.post(&format!("/v1/edges/{}/heartbeat", self.registration.id), beat).await?;
        Ok(started.elapsed())
    }

    /// Registers, then heartbeats `load()` until `shutdown`.
    pub async fn run(self, load: impl Fn() -> EdgeHeartbeat, shutdown: CancellationToken) {
        let mut registered = false;
        let mut last_rtt = Duration::ZERO;
        loop {
            if !registered {
                match self.register().await {
                    Ok(()) => {
                        registered = true;
                        tracing::info!(edge = %self.registration.id, control = %self.base, "registered with the control plane");
                    }
                    Err(e) => tracing::warn!(error = %e, "edge registration failed; retrying"),
                }
            } else {
                let mut beat = load();
                beat.rtt_ms = last_rtt.as_secs_f64() * 1000.0;
                match self.heartbeat(&beat).await {
                    Ok(rtt) => last_rtt = rtt,
                    Err(RegistrationError::NotRegistered) => {
                        registered = false;
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
