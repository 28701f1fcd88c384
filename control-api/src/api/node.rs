//! Node and operator routes: the hooks over HTTP (for [`crate::HttpHooks`]),
//! usage batches, stop orders, and the ledger audit.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{AdminAuth, ApiJson, NodeAuth};
use super::{ApiError, AppState};
use crate::hooks::{MediaHooks, PlayRequest, PublishRequest, ReportError, UsageBatch};
use crate::http_hooks::{parse_protocol, PlayCheck, PublishCheck, PublishGrantBody, StopOrderList};
use crate::plane::blocking;

pub(super) async fn publish(
    State(state): State<AppState>,
    _node: NodeAuth,
    ApiJson(req): ApiJson<PublishCheck>,
) -> Result<Response, ApiError> {
    let req = PublishRequest {
        app: req.app,
        stream_key: req.stream_key,
        client_addr: req.client_addr.and_then(|a| a.parse().ok()),
    };
    let grant = state.hooks.authorize_publish(&req).await?;
    Ok(Json(PublishGrantBody {
        channel: grant.channel,
    })
    .into_response())
}

pub(super) async fn play(
    State(state): State<AppState>,
    _node: NodeAuth,
    ApiJson(req): ApiJson<PlayCheck>,
) -> Result<Response, ApiError> {
    let protocol = parse_protocol(&req.protocol).ok_or_else(|| {
        ApiError::bad_request("invalid_input", "protocol must be rtmp, flv or hls")
    })?;
    let req = PlayRequest {
        app: req.app,
        channel: req.channel,
        token: req.token,
        protocol,
        client_addr: req.client_addr.and_then(|a| a.parse().ok()),
    };
    state.hooks.authorize_play(&req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The batch's `(node_id, batch_seq)` is its idempotency key, so no
/// `Idempotency-Key` header is needed here.
pub(super) async fn usage(
    State(state): State<AppState>,
    _node: NodeAuth,
    ApiJson(batch): ApiJson<UsageBatch>,
) -> Result<Response, ApiError> {
    match state.hooks.report_usage(&batch).await {
        Ok(receipt) => Ok(Json(receipt).into_response()),
        Err(ReportError::Rejected(m)) => {
            let code = if m.contains("other content") {
                "batch_conflict"
            } else {
                "invalid_input"
            };
            let status = if code == "batch_conflict" {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(ApiError::new(status, code, m))
        }
        Err(ReportError::Unavailable(m)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            m,
        )),
    }
}

pub(super) async fn stop_orders(
    State(state): State<AppState>,
    _node: NodeAuth,
) -> Result<Response, ApiError> {
    let orders = state.hooks.stop_orders().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(StopOrderList {
        stop_orders: orders,
    })
    .into_response())
}

pub(super) async fn audit(
    State(state): State<AppState>,
    _admin: AdminAuth,
) -> Result<Response, ApiError> {
    let audit = blocking(&state.store, |s| s.audit()).await?;
    Ok(Json(audit).into_response())
}
