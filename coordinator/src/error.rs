//! The coordinator's error: an HTTP status, a stable machine-readable code
//! (docs/errors.md) and a message for humans. User input never yields a 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `not_found`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// 422: the request is well-formed but a value is not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }
    /// 400: the request cannot be read.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    /// The same error under another stable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    /// 503: a dependency (the store, the node) is not available now.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(503, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    /// 502/504: the node answered with an error or not at all.
    pub fn node(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(502, code, message)
    }
    /// 405: the endpoint exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "method_not_allowed", message)
    }
    /// 413: the body is larger than the API reads.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "body_too_large", message)
    }
    /// 504: what was asked did not finish in the time it was given.
    pub fn timeout(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(504, code, message)
    }
    /// 426: the request must switch protocols (an upgrade) to be served.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(426, "upgrade_required", message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "store");
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::unavailable(
                    "store_unavailable",
                    format!("the store is not available: {e}"),
                )
            }
            // Contention, not failure: PostgreSQL's serialization failure,
            // deadlock and lock-not-available, SQLite's busy. Retry later.
            sqlx::Error::Database(ref d)
                if matches!(
                    d.code().as_deref(),
                    Some("40001" | "40P01" | "55P03" | "5" | "517")
                ) =>
            {
                Self::unavailable("store_busy", format!("the store is busy, retry: {e}"))
            }
            _ => Self::internal(format!("store: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        (status, axum::Json(body)).into_response()
    }
}

/// Result of the coordinator's fallible operations.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;
