//! [`HttpHooks`]: the [`MediaHooks`] of a media node whose control plane
//! runs in another process. It calls `/v1/hooks/*`, `/v1/usage` and
//! `/v1/stop-orders` with a node token, and caches publish and play answers
//! for a short TTL like the in-process hooks do.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hooks::{
    Denied, MediaHooks, PlayProtocol, PlayRequest, PublishGrant, PublishRequest, ReportError,
    StopOrder, UsageBatch, UsageReceipt,
};
use crate::inproc::TtlCache;

/// Body of `POST /v1/hooks/publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCheck {
    /// RTMP application.
    pub app: String,
    /// The stream key the encoder sent.
    pub stream_key: String,
    /// Encoder address, if known.
    #[serde(default)]
    pub client_addr: Option<String>,
}

/// Body of `POST /v1/hooks/play`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayCheck {
    /// RTMP application, or `live` for HTTP.
    pub app: String,
    /// Public channel name.
    pub channel: String,
    /// Play token, if any.
    #[serde(default)]
    pub token: Option<String>,
    /// `rtmp`, `flv` or `hls`.
    pub protocol: String,
    /// Viewer address, if known.
    #[serde(default)]
    pub client_addr: Option<String>,
}

/// The error body every `/v1` route returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code (for hooks: the [`Denied::label`]).
    pub error: String,
    /// Human message (for hooks: the denial's display text).
    pub message: String,
    /// For hook denials that name a channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `GET /v1/stop-orders` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopOrderList {
    /// Orders in force.
    pub stop_orders: Vec<StopOrder>,
}

/// Parses the wire name of a protocol.
pub fn parse_protocol(s: &str) -> Option<PlayProtocol> {
    match s {
        "rtmp" => Some(PlayProtocol::Rtmp),
        "flv" => Some(PlayProtocol::Flv),
        "hls" => Some(PlayProtocol::Hls),
        _ => None,
    }
}

/// Why an [`HttpHooks`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpHooksError {
    /// The base URL is not `http://` or `https://`.
    #[error("control base url must start with http:// or https://: {0}")]
    BadUrl(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// [`MediaHooks`] over the control plane's REST API.
pub struct HttpHooks {
    base: String,
    token: String,
    client: reqwest::Client,
    publish_cache: TtlCache<String, Result<PublishGrant, Denied>>,
    play_cache: TtlCache<String, Result<(), Denied>>,
}

impl std::fmt::Debug for HttpHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the node token.
        f.debug_struct("HttpHooks")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Default answer cache TTL, as `hook_cache_ttl_ms` defaults.
const DEFAULT_TTL: Duration = Duration::from_millis(2_000);

impl HttpHooks {
    /// `base_url` is the control plane's root (`http://host:port`, no `/v1`);
    /// `node_token` one of its `node_tokens` (or the admin token).
    pub fn new(
        base_url: impl Into<String>,
        node_token: impl Into<String>,
    ) -> Result<Self, HttpHooksError> {
        Self::with_cache_ttl(base_url, node_token, DEFAULT_TTL)
    }

    /// Like [`HttpHooks::new`] with another answer cache TTL (zero: none).
    pub fn with_cache_ttl(
        base_url: impl Into<String>,
        node_token: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, HttpHooksError> {
        let base = base_url.into().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(HttpHooksError::BadUrl(base));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(HttpHooks {
            base,
            token: node_token.into(),
            client,
            publish_cache: TtlCache::new(ttl),
            play_cache: TtlCache::new(ttl),
        })
    }

    async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<reqwest::Response, String> {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())
    }

    /// Turns a non-2xx hook answer into a denial.
    async fn denial(resp: reqwest::Response, app: &str, channel: Option<&str>) -> Denied {
        let status = resp.status();
        let body: Option<ErrorBody> = resp.json().await.ok();
        let Some(body) = body else {
            return Denied::Unavailable(format!("control plane answered {status}"));
        };
        if status != reqwest::StatusCode::FORBIDDEN {
            return Denied::Unavailable(format!("control plane answered {status}: {}", body.error));
        }
        let ch = body
            .channel
            .clone()
            .or_else(|| channel.map(str::to_string))
            .unwrap_or_default();
        match body.error.as_str() {
            "unknown_key" => Denied::UnknownKey,
            "unknown_app" => Denied::UnknownApp {
                app: app.to_string(),
            },
            "unknown_channel" => Denied::UnknownChannel { channel: ch },
            "no_bandwidth" => Denied::NoBandwidth { channel: ch },
            "forbidden" => Denied::Forbidden(body.message),
            other => Denied::Unavailable(format!("unexpected denial '{other}'")),
        }
    }
}

#[async_trait::async_trait]
impl MediaHooks for HttpHooks {
    async fn authorize_publish(&self, req: &PublishRequest) -> Result<PublishGrant, Denied> {
        let cache_key = format!("{}/{}", req.app, req.stream_key);
        if let Some(answer) = self.publish_cache.get(cache_key.as_str()) {
            return answer;
        }
        let body = PublishCheck {
            app: req.app.clone(),
            stream_key: req.stream_key.clone(),
            client_addr: req.client_addr.map(|a| a.to_string()),
        };
        let resp = self
            .post("/v1/hooks/publish", &body)
            .await
            .map_err(Denied::Unavailable)?;
        let answer = if resp.status().is_success() {
            resp.json::<PublishGrantBody>()
                .await
                .map(|g| PublishGrant { channel: g.channel })
                .map_err(|e| Denied::Unavailable(e.to_string()))
        } else {
            Err(Self::denial(resp, &req.app, None).await)
        };
        if !matches!(answer, Err(Denied::Unavailable(_))) {
            self.publish_cache.put(cache_key, answer.clone());
        }
        answer
    }

    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied> {
        // A ticketed play carries a per-viewer token: its answer is cached
        // under the token too (an HLS viewer asks once per segment), for the
        // same TTL, so an edge asks the control plane once per viewer per TTL.
        let cache_key = match &req.token {
            None => format!("{}/{}", req.app, req.channel),
            Some(t) => format!("{}/{}?{t}", req.app, req.channel),
        };
        if let Some(answer) = self.play_cache.get(cache_key.as_str()) {
            return answer;
        }
        let body = PlayCheck {
            app: req.app.clone(),
            channel: req.channel.clone(),
            token: req.token.clone(),
            protocol: req.protocol.as_str().to_string(),
            client_addr: req.client_addr.map(|a| a.to_string()),
        };
        let resp = self
            .post("/v1/hooks/play", &body)
            .await
            .map_err(Denied::Unavailable)?;
        let answer = if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::denial(resp, &req.app, Some(&req.channel)).await)
        };
        if !matches!(answer, Err(Denied::Unavailable(_))) {
            self.play_cache.put(cache_key, answer.clone());
        }
        answer
    }

    async fn report_usage(&self, batch: &UsageBatch) -> Result<UsageReceipt, ReportError> {
        let resp = self
            .post("/v1/usage", batch)
            .await
            .map_err(ReportError::Unavailable)?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map_err(|e| ReportError::Unavailable(e.to_string()));
        }
        let msg = match resp.json::<ErrorBody>().await {
            Ok(b) => format!("{status}: {} ({})", b.error, b.message),
            Err(_) => status.to_string(),
        };
        // 4xx other than 429 will not change on retry; 5xx and 429 may.
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(ReportError::Rejected(msg))
        } else {
            Err(ReportError::Unavailable(msg))
        }
    }

    async fn stop_orders(&self) -> Result<Vec<StopOrder>, ReportError> {
        let resp = self
            .client
            .get(format!("{}/v1/stop-orders", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ReportError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ReportError::Unavailable(format!(
                "control plane answered {}",
                resp.status()
            )));
        }
        let list: StopOrderList = resp
            .json()
            .await
            .map_err(|e| ReportError::Unavailable(e.to_string()))?;
        Ok(list.stop_orders)
    }
}

/// Wire form of a publish grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishGrantBody {
    /// The channel the key publishes.
    pub channel: String,
}
