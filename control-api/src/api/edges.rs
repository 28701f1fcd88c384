//! Edge routes: registration and heartbeats (node token), the operator's
//! list (admin token), and `GET /v1/play/{channel}` for viewers (public).
//!
//! Registration and heartbeats are idempotent by nature (the edge id is the
//! key; the newest wins), so they need no `Idempotency-Key` header.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::{AdminAuth, ApiJson, NodeAuth};
use super::{ApiError, AppState};
use crate::edges::select::Location;
use crate::edges::{EdgeHeartbeat, EdgeRegistration, EdgeUrls};
use crate::plane::{blocking, now_ms};

/// The client's socket address, when the server records it.
pub(crate) struct ClientAddr(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

pub(super) async fn register(
    State(state): State<AppState>,
    _node: NodeAuth,
    ApiJson(reg): ApiJson<EdgeRegistration>,
) -> Result<Response, ApiError> {
    reg.validate().map_err(|m| ApiError::bad_request("invalid_input", m))?;
    let json = serde_json::to_string(&reg).map_err(|e| ApiError::bad_request("invalid_input", e.to_string()))?;
    let id = reg.id.clone();
    let now = now_ms();
    let key = id.clone();
    blocking(&state.store, move |s| s.upsert_edge(&key, &json, now)).await?;
    tracing::info!(edge = %id, region = %reg.region, "edge registered");
    state.edges.register(reg, Instant::now());
    Ok(Json(serde_json::json!({
        "id": id,
        "heartbeat_timeout_ms": state.edges.config().heartbeat_timeout_ms,
    }))
    .into_response())
}

pub(super) async fn heartbeat(
    State(state): State<AppState>,
    _node: NodeAuth,
    Path(id): Path<String>,
    ApiJson(beat): ApiJson<EdgeHeartbeat>,
) -> Result<Response, ApiError> {
    if !(beat.mbps.is_finite() && beat.mbps >= 0.0 && beat.rtt_ms.is_finite() && beat.rtt_ms >= 0.0) || beat.channels.len() > 10_000 {
        return Err(ApiError::bad_request("invalid_input", "mbps and rtt_ms must be finite and non-negative"));
    }
    if state.edges.heartbeat(&id, beat, Instant::now()) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "edge_not_found", format!("edge '{id}' is not registered: register first")))
    }
}

pub(super) async fn list(State(state): State<AppState>, _admin: AdminAuth) -> Result<Response, ApiError> {
    Ok(Json(serde_json::json!({
        "policy": state.edges.config().policy,
        "edges": state.edges.list(Instant::now()),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlayQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    redirect: Option<String>,
}

fn play_url(base: &EdgeUrls, format: &str, channel: &str) -> String {
    match format {
        "rtmp" => format!("{}/{channel}", base.rtmp.trim_end_matches('/')),
        "flv" => format!("{}/live/{channel}.flv", base.flv.trim_end_matches('/')),
        _ => format!("{}/live/{channel}/index.m3u8", base.hls.trim_end_matches('/')),
    }
}

fn origin_urls(configured: &EdgeUrls, headers: &HeaderMap) -> EdgeUrls {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
    let hostname = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let or = |s: &str, d: String| if s.is_empty() { d } else { s.to_string() };
    EdgeUrls {
        rtmp: or(&configured.rtmp, format!("rtmp://{hostname}:1935/live")),
        flv: or(&configured.flv, format!("http://{host}")),
        hls: or(&configured.hls, format!("http://{host}")),
    }
}

pub(super) async fn play(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Query(q): Query<PlayQuery>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::store::validate_channel_name(&channel).map_err(|m| ApiError::bad_request("invalid_channel", m))?;
    let format = q.format.as_deref().unwrap_or("hls");
    if !matches!(format, "hls" | "flv" | "rtmp") {
        return Err(ApiError::bad_request("invalid_input", "format must be hls, flv or rtmp"));
    }
    let explicit = match (q.lat, q.lon) {
        (Some(latitude), Some(longitude)) if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) => {
            Some(Location { latitude, longitude })
        }
        (None, None) => None,
        _ => return Err(ApiError::bad_request("invalid_input", "give both lat and lon, within -90..=90 and -180..=180")),
    };
    let ip = addr.map(|a| a.ip());
    let client = state.edges.locate(explicit, ip);
    let key = ip.map(|i| i.to_string()).unwrap_or_default();
    let chosen = state.edges.select(client.location, &key, rand::random::<f64>(), Instant::now());
    let body = match &chosen {
        Some(edge) => serde_json::json!({
            "url": play_url(&edge.urls, format, &channel),
            "edge": edge.id,
            "region": edge.region,
            "client": client,
        }),
        None => serde_json::json!({
            "url": play_url(&origin_urls(&state.edges.config().origin_urls, &headers), format, &channel),
            "edge": null,
            "note": "no healthy edge with spare capacity: serving from the origin",
            "client": client,
        }),
    };
    let redirect = matches!(q.redirect.as_deref(), Some("1" | "true"));
    if redirect {
        let url = body["url"].as_str().unwrap_or_default().to_string();
        let mut resp = (StatusCode::FOUND, Json(body)).into_response();
        if let Ok(v) = header::HeaderValue::from_str(&url) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(resp);
    }
    Ok(Json(body).into_response())
}
