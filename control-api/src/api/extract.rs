//! Extractors: bearer auth (user, node, admin), the idempotency key, and a
//! JSON body whose rejections come out in our error format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::plane::blocking;
use crate::store::{hash_secret, Caller, IdemKey};

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>")
        })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("invalid_token", "authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_token", "expected Authorization: Bearer <token>")
        })
}

/// Compares secrets through their hashes so timing says nothing about them.
fn same_secret(a: &str, b: &str) -> bool {
    !b.is_empty() && hash_secret(a) == hash_secret(b)
}

/// An authenticated user.
pub(crate) struct Auth(pub(crate) Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.to_string();
        authenticate(state, &token).await.map(Auth)
    }
}

/// Maps an API token to its account, through the short auth cache (also
/// used by the WebSocket, whose token comes in the query string).
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if let Some(caller) = state.auth_cache.get(token) {
        return Ok(caller);
    }
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::unauthorized("invalid_token", "unknown or revoked API token"));
    }
    let lookup = token.to_string();
    let caller = blocking(&state.store, move |s| s.authenticate(&lookup)).await?;
    let caller = caller.ok_or_else(|| {
        ApiError::unauthorized("invalid_token", "unknown or revoked API token")
    })?;
    state.auth_cache.put(token.to_string(), caller.clone());
    Ok(caller)
}

/// A media node (node token or admin token).
pub(crate) struct NodeAuth;

impl FromRequestParts<AppState> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let cfg = &state.config;
        if same_secret(token, cfg.effective_admin_token())
            || cfg.node_tokens.iter().any(|t| same_secret(token, t))
        {
            Ok(NodeAuth)
        } else {
            Err(ApiError::unauthorized("invalid_token", "not a node token"))
        }
    }
}

/// The operator.
pub(crate) struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if same_secret(token, state.config.effective_admin_token()) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin token required",
            ))
        }
    }
}

/// The `Idempotency-Key` header (1..=128 printable ASCII characters).
pub(crate) struct IdempotencyKey(pub(crate) String);

impl IdempotencyKey {
    /// The store key for this write by `scope`, hashed with the request.
    pub(crate) fn scoped(
        &self,
        scope: impl Into<String>,
        route: &str,
        request: &impl serde::Serialize,
    ) -> IdemKey {
        IdemKey::new(scope, self.0.clone(), route, request)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let v = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "every write needs an Idempotency-Key header",
            )
        })?;
        let v = v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1..=128 printable ASCII characters",
                )
            })?;
        Ok(IdempotencyKey(v.to_string()))
    }
}

/// A JSON body; malformed or mistyped bodies become 400/415/422 in our format.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(ApiError::bad_request("malformed_json", e.body_text()))
            }
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.body_text(),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::new(e.status(), "bad_body", e.body_text())),
        }
    }
}
