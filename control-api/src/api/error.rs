//! [`ApiError`]: the one error type of the REST layer. It maps store errors
//! and hook denials to status codes and stable codes, and hides internal
//! details from the client while logging them in the request span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::hooks::Denied;
use crate::http_hooks::ErrorBody;
use crate::store::StoreError;

/// An error answer: `{"error": code, "message": ...}` with a status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human message, safe to show.
    pub message: String,
    /// Channel named by a hook denial.
    pub channel: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            channel: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, id } => {
                let code = match what {
                    "account" => "account_not_found",
                    "channel" => "channel_not_found",
                    "stream_key" => "stream_key_not_found",
                    "product" => "product_not_found",
                    "wallet" => "wallet_not_found",
                    _ => "not_found",
                };
                Self::new(
                    StatusCode::NOT_FOUND,
                    code,
                    format!("{what} '{id}' not found"),
                )
            }
            StoreError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            StoreError::Conflict { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            e @ StoreError::InsufficientFunds { .. } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                e.to_string(),
            ),
            e @ StoreError::InvalidInput { .. } => {
                Self::bad_request("invalid_input", e.to_string())
            }
            e @ StoreError::IdempotencyMismatch { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            StoreError::Overflow => Self::bad_request("amount_out_of_range", "amount out of range"),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                tracing::warn!(error = %f, "control store busy");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "store busy; retry with the same idempotency key",
                )
            }
            other => {
                tracing::error!(error = %other, "control request failed");
                Self::internal()
            }
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let status = match d {
            Denied::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        let channel = match &d {
            Denied::UnknownChannel { channel } | Denied::NoBandwidth { channel } => {
                Some(channel.clone())
            }
            _ => None,
        };
        ApiError {
            status,
            code: d.label(),
            message: d.to_string(),
            channel,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(
                code = self.code,
                status = self.status.as_u16(),
                "request failed"
            );
        }
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            channel: self.channel,
        };
        (self.status, axum::Json(body)).into_response()
    }
}
