//! The HTTP listener: HTTP-FLV, `/metrics`, `/healthz`, the web page
//! (HLS and the control API are merged into the same router).

pub mod flv;
pub mod web;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use westream_control::hooks::MediaHooks;

use crate::config::HttpConfig;
use crate::hub::Hub;

/// What the HTTP handlers share.
pub struct HttpContext {
    /// The stream hub.
    pub hub: Arc<Hub>,
    /// Play authorization.
    pub hooks: Arc<dyn MediaHooks>,
    /// `[http]` settings.
    pub config: HttpConfig,
    /// Cancelled at shutdown; long-lived responses end with it.
    pub shutdown: CancellationToken,
    /// Rendition names (a rendition plays under its source's rights).
    pub transcoding: Arc<crate::transcode::Transcoding>,
    /// Viewer counts by channel and protocol.
    pub audience: Arc<crate::audience::Audience>,
}

/// The media router.
pub fn router(ctx: Arc<HttpContext>) -> Router {
    Router::new()
        .route("/live/{file}", get(flv::play))
        .route("/metrics", get(metrics))
        .route("/transcoder/jobs", get(crate::transcode::jobs))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<HttpContext>>) -> Response {
    let body = ctx.hub.metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// A plain-text error with CORS headers, so browser players can read why.
pub fn error_response(ctx: &HttpContext, status: StatusCode, reason: &str) -> Response {
    let mut resp = (status, format!("{reason}\n")).into_response();
    add_cors(ctx, &mut resp);
    resp
}

/// Adds the configured CORS headers.
pub fn add_cors(ctx: &HttpContext, resp: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&ctx.config.cors_allow_origin) {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}
