//! User-facing routes: accounts, tokens, channels, stream keys, wallet,
//! products and packages. Ownership is enforced by the store.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Auth, IdempotencyKey};
use super::{ApiError, AppState};
use crate::plane::{blocking, now_ms};
use crate::store::{CreateAccount, Replayed};

/// Header set on a response that replays a first result.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A write's answer: `status` and the body, marked when it is a replay.
pub(crate) fn written<T: Serialize>(status: StatusCode, r: Replayed<T>) -> Response {
    let mut resp = (status, Json(r.value)).into_response();
    if r.replayed {
        resp.headers_mut().insert(
            REPLAYED_HEADER,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    resp
}

pub(super) fn scope(auth: &Auth) -> String {
    format!("acct:{}", auth.0.account_id)
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

fn key_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_request("invalid_input", "key_id must be a positive integer"))
}

pub(super) fn check_amount(amount: i64, max: i64) -> Result<(), ApiError> {
    if amount <= 0 {
        return Err(ApiError::bad_request(
            "invalid_amount",
            "amount_micro_we must be a positive integer",
        ));
    }
    if amount > max {
        return Err(ApiError::bad_request(
            "amount_out_of_range",
            format!("amount_micro_we must be at most {max}"),
        ));
    }
    Ok(())
}

pub(super) async fn create_account(
    State(state): State<AppState>,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<CreateAccount>,
) -> Result<Response, ApiError> {
    let key = idem.scoped("signup", "POST /v1/accounts", &req);
    // The plane's clock: account age is a vote rule, and tests move time.
    let now = state.rooms.now_ms();
    let r = blocking(&state.store, move |s| s.create_account(&key, &req, now))
    .await?;
    if !r.replayed {
        tracing::info!(handle = %r.value.account.handle, "account created");
    }
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn me(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let id = auth.0.account_id;
    let account = blocking(&state.store, move |s| s.account(id)).await?;
    Ok(Json(account).into_response())
}

/// How long a viewer token is valid.
const VIEWER_TOKEN_TTL_MS: i64 = 24 * 3_600_000;

/// `GET /v1/accounts/me/viewer-token`: a signed token to put in play URLs
/// (`?viewer=`), so watch time counts for the caller's rewards.
pub(super) async fn viewer_token(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let expires_at_ms = now_ms() + VIEWER_TOKEN_TTL_MS;
    let token = state.hooks.tickets().mint_viewer(auth.0.account_id, expires_at_ms);
    Ok(Json(serde_json::json!({ "token": token, "expires_at_ms": expires_at_ms })).into_response())
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
) -> Result<Response, ApiError> {
    let key = idem.scoped(scope(&auth), "POST /v1/tokens", &());
    let r = blocking(&state.store, move |s| {
        s.create_token(&auth.0, &key, now_ms())
    })
    .await?;
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn products(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "products": state.config.products })).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateChannel {
    name: String,
}

pub(super) async fn create_channel(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<CreateChannel>,
) -> Result<Response, ApiError> {
    let key = idem.scoped(scope(&auth), "POST /v1/channels", &req);
    let r = blocking(&state.store, move |s| {
        s.create_channel(&auth.0, &key, &req.name, now_ms())
    })
    .await?;
    state.hooks.invalidate();
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn get_channel(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let lookup = name.clone();
    let ch = blocking(&state.store, move |s| s.channel(&lookup)).await?;
    let ch = ch.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "channel_not_found",
            format!("channel '{name}' not found"),
        )
    })?;
    Ok(Json(ch).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    limit: Option<u32>,
}

pub(super) async fn channel_usage(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = query(q)?.limit.unwrap_or(100).min(1_000);
    let lookup = name.clone();
    let usage = blocking(&state.store, move |s| {
        s.channel_usage(&lookup, limit, now_ms())
    })
    .await?;
    let usage = usage.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "channel_not_found",
            format!("channel '{name}' not found"),
        )
    })?;
    Ok(Json(usage).into_response())
}

pub(super) async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let keys = blocking(&state.store, move |s| s.list_stream_keys(&auth.0, &name)).await?;
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

pub(super) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let key = idem.scoped(scope(&auth), "POST /v1/channels/{channel}/keys", &name);
    let r = blocking(&state.store, move |s| {
        s.create_stream_key(&auth.0, &key, &name, now_ms())
    })
    .await?;
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn rotate_key(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path((name, raw_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = key_id(&raw_id)?;
    let key = idem.scoped(
        scope(&auth),
        "POST /v1/channels/{channel}/keys/{key_id}/rotate",
        &(&name, id),
    );
    let r = blocking(&state.store, move |s| {
        s.rotate_stream_key(&auth.0, &key, &name, id, now_ms())
    })
    .await?;
    state.hooks.invalidate();
    Ok(written(StatusCode::CREATED, r))
}

pub(super) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path((name, raw_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = key_id(&raw_id)?;
    let key = idem.scoped(
        scope(&auth),
        "POST /v1/channels/{channel}/keys/{key_id}/revoke",
        &(&name, id),
    );
    let r = blocking(&state.store, move |s| {
        s.revoke_stream_key(&auth.0, &key, &name, id, now_ms())
    })
    .await?;
    state.hooks.invalidate();
    Ok(written(StatusCode::OK, r))
}

pub(super) async fn wallet(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let id = auth.0.account_id;
    let balance = blocking(&state.store, move |s| s.balance(id)).await?;
    Ok(
        Json(serde_json::json!({ "account": auth.0.handle, "balance_micro_we": balance }))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatementQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn statement(
    State(state): State<AppState>,
    auth: Auth,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(100).clamp(1, 1_000));
    let id = auth.0.account_id;
    let lines = blocking(&state.store, move |s| s.statement(id, after, limit)).await?;
    let next_after = lines.last().map(|l| l.posting_id);
    Ok(Json(serde_json::json!({ "lines": lines, "next_after": next_after })).into_response())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferRequest {
    to: String,
    amount_micro_we: i64,
    #[serde(default)]
    memo: Option<String>,
}

pub(super) async fn transfer(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<Response, ApiError> {
    check_amount(req.amount_micro_we, state.config.max_amount_micro_we)?;
    let key = idem.scoped(scope(&auth), "POST /v1/wallet/transfers", &req);
    let r = blocking(&state.store, move |s| {
        s.transfer(
            &auth.0,
            &key,
            &req.to,
            req.amount_micro_we,
            req.memo.as_deref(),
            now_ms(),
        )
    })
    .await?;
    if !r.replayed {
        state.metrics.record_entry("transfer", 2);
    }
    Ok(written(StatusCode::OK, r))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaucetRequest {
    amount_micro_we: i64,
}

pub(super) async fn faucet(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<FaucetRequest>,
) -> Result<Response, ApiError> {
    if !state.config.faucet_enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "faucet_disabled",
            "the faucet is enabled on dev servers only",
        ));
    }
    check_amount(req.amount_micro_we, state.config.faucet_max_micro_we)?;
    let key = idem.scoped(scope(&auth), "POST /v1/wallet/faucet", &req);
    let r = blocking(&state.store, move |s| {
        s.faucet(&auth.0, &key, req.amount_micro_we, now_ms())
    })
    .await?;
    if !r.replayed {
        state.metrics.record_entry("faucet", 2);
    }
    Ok(written(StatusCode::OK, r))
}

pub(super) async fn list_packages(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let id = auth.0.account_id;
    let packages = blocking(&state.store, move |s| s.packages(id)).await?;
    Ok(Json(serde_json::json!({ "packages": packages })).into_response())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurchaseRequest {
    product_id: String,
}

pub(super) async fn purchase(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    ApiJson(req): ApiJson<PurchaseRequest>,
) -> Result<Response, ApiError> {
    let product = state
        .config
        .product(&req.product_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "product_not_found",
                format!("no product '{}'", req.product_id),
            )
        })?;
    let key = idem.scoped(scope(&auth), "POST /v1/packages", &req);
    let r = blocking(&state.store, move |s| {
        s.purchase(&auth.0, &key, &product, now_ms())
    })
    .await?;
    if !r.replayed {
        if r.value.journal_id.is_some() {
            state.metrics.record_entry("purchase", 2);
        }
        // The owner may have been refused for lack of bandwidth a moment ago.
        state.hooks.invalidate();
    }
    Ok(written(StatusCode::CREATED, r))
}
