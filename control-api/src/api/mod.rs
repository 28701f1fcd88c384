//! The REST API under `/v1`: JSON in and out, errors as
//! `{"error": code, "message": ...}`.
//!
//! Contract: every write (`POST`) needs an `Idempotency-Key` header and,
//! except sign-up, a bearer token; a retry with the same key and body gets
//! the first result (marked `Idempotent-Replayed: true`) and posts nothing.
//! Node routes take a node token, admin routes the admin token.

mod edges;
mod error;
mod extract;
mod node;
mod rooms;
mod settlement;
mod user;

pub use error::ApiError;
pub(crate) use extract::authenticate;
pub(crate) use rooms::existing_room;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use crate::plane::Inner;

/// The shared state of every handler.
pub(crate) type AppState = Arc<Inner>;

/// Every route: (method, path template). The OpenAPI document must list
/// exactly these; a test checks both directions.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/health"),
    ("POST", "/v1/accounts"),
    ("GET", "/v1/accounts/me"),
    ("GET", "/v1/accounts/me/viewer-token"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/products"),
    ("POST", "/v1/channels"),
    ("GET", "/v1/channels/{channel}"),
    ("GET", "/v1/channels/{channel}/usage"),
    ("GET", "/v1/channels/{channel}/keys"),
    ("POST", "/v1/channels/{channel}/keys"),
    ("POST", "/v1/channels/{channel}/keys/{key_id}/rotate"),
    ("POST", "/v1/channels/{channel}/keys/{key_id}/revoke"),
    ("GET", "/v1/wallet"),
    ("GET", "/v1/wallet/statement"),
    ("POST", "/v1/wallet/transfers"),
    ("POST", "/v1/wallet/faucet"),
    ("GET", "/v1/packages"),
    ("POST", "/v1/packages"),
    ("POST", "/v1/hooks/publish"),
    ("POST", "/v1/hooks/play"),
    ("POST", "/v1/usage"),
    ("GET", "/v1/stop-orders"),
    ("GET", "/v1/admin/ledger/audit"),
    ("POST", "/v1/edges/register"),
    ("POST", "/v1/edges/{id}/heartbeat"),
    ("GET", "/v1/edges"),
    ("GET", "/v1/play/{channel}"),
    ("GET", "/v1/gifts"),
    ("GET", "/v1/rooms"),
    ("GET", "/v1/rooms/{channel}"),
    ("POST", "/v1/rooms/{channel}/settings"),
    ("POST", "/v1/rooms/{channel}/mute"),
    ("POST", "/v1/rooms/{channel}/ban"),
    ("POST", "/v1/rooms/{channel}/gifts"),
    ("POST", "/v1/rooms/{channel}/shares"),
    ("POST", "/v1/rooms/{channel}/likes"),
    ("POST", "/v1/rooms/{channel}/tickets"),
    ("GET", "/v1/rooms/{channel}/tickets/me"),
    ("GET", "/v1/rooms/{channel}/ws"),
    ("GET", "/v1/rankings"),
    ("GET", "/v1/settlement"),
    ("GET", "/v1/epochs"),
    ("GET", "/v1/epochs/{n}"),
    ("POST", "/v1/admin/epochs"),
    ("GET", "/v1/claims/{address}"),
    ("GET", "/v1/account/payout-address"),
    ("PUT", "/v1/account/payout-address"),
    ("POST", "/v1/wallet/withdrawals"),
    ("GET", "/v1/wallet/deposit-address"),
];

/// The hand-written OpenAPI 3.1 document served at `/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/health", get(health))
        .route("/v1/accounts", post(user::create_account))
        .route("/v1/accounts/me", get(user::me))
        .route("/v1/accounts/me/viewer-token", get(user::viewer_token))
        .route("/v1/tokens", post(user::create_token))
        .route("/v1/products", get(user::products))
        .route("/v1/channels", post(user::create_channel))
        .route("/v1/channels/{channel}", get(user::get_channel))
        .route("/v1/channels/{channel}/usage", get(user::channel_usage))
        .route(
            "/v1/channels/{channel}/keys",
            get(user::list_keys).post(user::create_key),
        )
        .route(
            "/v1/channels/{channel}/keys/{key_id}/rotate",
            post(user::rotate_key),
        )
        .route(
            "/v1/channels/{channel}/keys/{key_id}/revoke",
            post(user::revoke_key),
        )
        .route("/v1/wallet", get(user::wallet))
        .route("/v1/wallet/statement", get(user::statement))
        .route("/v1/wallet/transfers", post(user::transfer))
        .route("/v1/wallet/faucet", post(user::faucet))
        .route("/v1/wallet/withdrawals", post(settlement::withdraw))
        .route("/v1/wallet/deposit-address", get(settlement::deposit_address))
        .route(
            "/v1/account/payout-address",
            get(settlement::get_payout_address).put(settlement::set_payout_address),
        )
        .route("/v1/settlement", get(settlement::info))
        .route("/v1/epochs", get(settlement::list_epochs))
        .route("/v1/epochs/{n}", get(settlement::get_epoch))
        .route("/v1/admin/epochs", post(settlement::run_epoch))
        .route("/v1/claims/{address}", get(settlement::get_claim))
        .route(
            "/v1/packages",
            get(user::list_packages).post(user::purchase),
        )
        .route("/v1/hooks/publish", post(node::publish))
        .route("/v1/hooks/play", post(node::play))
        .route("/v1/usage", post(node::usage))
        .route("/v1/stop-orders", get(node::stop_orders))
        .route("/v1/admin/ledger/audit", get(node::audit))
        .route("/v1/edges/register", post(edges::register))
        .route("/v1/edges/{id}/heartbeat", post(edges::heartbeat))
        .route("/v1/edges", get(edges::list))
        .route("/v1/play/{channel}", get(edges::play))
        .route("/v1/gifts", get(rooms::gifts))
        .route("/v1/rooms", get(rooms::list_rooms))
        .route("/v1/rooms/{channel}", get(rooms::get_room))
        .route("/v1/rooms/{channel}/settings", post(rooms::update_settings))
        .route("/v1/rooms/{channel}/mute", post(rooms::mute))
        .route("/v1/rooms/{channel}/ban", post(rooms::ban))
        .route("/v1/rooms/{channel}/gifts", post(rooms::send_gift))
        .route("/v1/rooms/{channel}/shares", post(rooms::create_share))
        .route("/v1/rooms/{channel}/likes", post(rooms::like))
        .route("/v1/rooms/{channel}/tickets", post(rooms::buy_ticket))
        .route("/v1/rooms/{channel}/tickets/me", get(rooms::my_ticket))
        .route("/v1/rooms/{channel}/ws", get(crate::rooms::ws::connect))
        .route("/v1/rankings", get(rooms::rankings))
        // A catch-all route, not a Router fallback: the media server merges
        // this router into its own, and axum refuses to merge two fallbacks.
        .route("/v1/{*rest}", any(fallback))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe,
        ))
        .with_state(state)
}

/// One span per request, and the request metrics by route template.
async fn observe(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("control_request", route = %route, method = %method, status = tracing::field::Empty);
    let started = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("status", status.as_u16());
    let m = &state.metrics;
    m.http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn fallback() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        "no such route under /v1",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
