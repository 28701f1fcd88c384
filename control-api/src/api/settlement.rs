//! Epochs, claims, payout addresses and withdrawals (issue #8, item 7).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::extract::{AdminAuth, ApiJson, Auth, IdempotencyKey};
use super::user::{check_amount, query, scope, written};
use super::{ApiError, AppState};
use crate::plane::{blocking, now_ms};
use crate::settlement::{Settlement, SettlementError};

fn settlement(state: &AppState) -> Result<Arc<Settlement>, ApiError> {
    state.settlement.get().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "settlement_off",
            "settlement is not running on this control plane (it starts with `westream serve` or `westream control`)",
        )
    })
}

impl From<SettlementError> for ApiError {
    fn from(e: SettlementError) -> Self {
        match e {
            SettlementError::Store(e) => e.into(),
            SettlementError::Chain(e) if e.is_retryable() => {
                ApiError::new(StatusCode::BAD_GATEWAY, "chain_unavailable", format!("the chain did not answer: {e}"))
            }
            SettlementError::Chain(e) => {
                tracing::error!(error = %e, "settlement chain call failed");
                ApiError::new(StatusCode::BAD_GATEWAY, "chain_error", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "settlement request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged")
            }
        }
    }
}

/// Parses a 0x-prefixed, 40-hex-digit address into its lower-case form.
pub(crate) fn normalize_address(raw: &str) -> Result<String, ApiError> {
    let ok = raw.len() == 42 && raw.starts_with("0x") && raw[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(ApiError::bad_request("invalid_address", "an Ethereum address is 0x followed by 40 hex digits"));
    }
    if raw[2..].bytes().all(|b| b == b'0') {
        return Err(ApiError::bad_request("invalid_address", "the zero address cannot claim"));
    }
    Ok(raw.to_ascii_lowercase())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EpochsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

pub(super) async fn list_epochs(
    State(state): State<AppState>,
    q: Result<Query<EpochsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = query(q)?.limit.unwrap_or(100).clamp(1, 1_000);
    let epochs = blocking(&state.store, move |s| s.epochs(limit)).await?;
    Ok(Json(serde_json::json!({ "epochs": epochs })).into_response())
}

pub(super) async fn get_epoch(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let n: i64 = raw
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("invalid_epoch", "an epoch is a positive integer"))?;
    match blocking(&state.store, move |s| s.epoch(n)).await? {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "epoch_not_found", format!("epoch {n} has not closed yet"))),
    }
}

pub(super) async fn get_claim(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let address = normalize_address(&raw)?;
    let settlement = settlement(&state)?;
    let parsed = address.parse().map_err(|_| ApiError::bad_request("invalid_address", "not an address"))?;
    match settlement.claim_info(parsed).await? {
        Some(claim) => Ok(Json(claim).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_claim",
            format!("nothing is owed to {address} in the latest anchored epoch"),
        )),
    }
}

#[derive(Serialize)]
struct SettlementInfo {
    token: String,
    distributor: String,
    last_anchored_epoch: u64,
}

pub(super) async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let settlement = settlement(&state)?;
    let contracts = settlement.chain().contracts();
    let last = settlement.chain().last_epoch().await.map_err(SettlementError::from)?;
    Ok(Json(SettlementInfo {
        token: format!("{:#x}", contracts.token),
        distributor: format!("{:#x}", contracts.distributor),
        last_anchored_epoch: last,
    })
    .into_response())
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PayoutAddressRequest {
    address: String,
}

pub(super) async fn set_payout_address(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<PayoutAddressRequest>,
) -> Result<Response, ApiError> {
    let address = normalize_address(&req.address)?;
    let account = auth.0.account_id;
    let a = address.clone();
    let since = blocking(&state.store, move |s| s.set_payout_address(account, &a, now_ms())).await?;
    Ok(Json(serde_json::json!({ "address": address, "since_epoch": since })).into_response())
}

pub(super) async fn get_payout_address(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let account = auth.0.account_id;
    let address = blocking(&state.store, move |s| s.payout_address(account)).await?;
    Ok(Json(serde_json::json!({ "address": address })).into_response())
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawalRequest {
    amount_micro_we: i64,
}

pub(super) async fn withdraw(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<WithdrawalRequest>,
) -> Result<Response, ApiError> {
    check_amount(req.amount_micro_we, state.config.max_amount_micro_we)?;
    let key = idem.scoped(scope(&auth), "POST /v1/wallet/withdrawals", &req);
    let r = blocking(&state.store, move |s| s.request_withdrawal(&auth.0, &key, req.amount_micro_we, now_ms())).await?;
    if !r.replayed {
        state.metrics.record_entry("withdrawal", 2);
    }
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn run_epoch(State(state): State<AppState>, _admin: AdminAuth) -> Result<Response, ApiError> {
    let settlement = settlement(&state)?;
    let epoch = settlement.run_epoch(now_ms()).await?;
    Ok((StatusCode::CREATED, Json(epoch)).into_response())
}

pub(super) async fn deposit_address(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let settlement = settlement(&state)?;
    let address = settlement.deposit_address(auth.0.account_id).await?;
    Ok(Json(serde_json::json!({
        "address": address,
        "token": format!("{:#x}", settlement.chain().contracts().token),
        "confirmations": state.config.settlement.deposit_confirmations(),
    }))
    .into_response())
}
