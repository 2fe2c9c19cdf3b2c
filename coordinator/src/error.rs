//! The coordinator's error: what kind of failure it is, a stable
//! machine-readable code (docs/errors.md) and a message for humans. No
//! transport status here: `http::error` maps kinds to HTTP statuses in one
//! place. User input never yields an internal error.

/// What kind of failure an error is, whatever layer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request cannot be read (a body, a query, a path).
    BadRequest,
    /// A value is not acceptable.
    Invalid,
    /// No valid credentials.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    NotFound,
    /// The endpoint exists; the method does not.
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// The body is larger than the API reads.
    TooLarge,
    /// A condition of the request (`If-Match`) does not hold.
    PreconditionFailed,
    /// The request must switch protocols (an upgrade) to be served.
    UpgradeRequired,
    /// A dependency (the store, the node) is not available now.
    Unavailable,
    /// The node answered with an error, or the link to it broke.
    Node,
    /// What was asked did not finish in the time it was given.
    Timeout,
    /// A bug or an environment failure.
    Internal,
}

/// An error with its kind, stable code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
    /// A value is not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, code, message)
    }
    /// The request cannot be read.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }
    /// The same error under another stable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Kind::Unauthorized, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, "not_found", message)
    }
    /// The request conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }
    /// A dependency (the store, the node) is not available now.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, "internal", message)
    }
    /// The node answered with an error or its link broke.
    pub fn node(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Node, code, message)
    }
    /// The endpoint exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(Kind::MethodNotAllowed, "method_not_allowed", message)
    }
    /// The body is larger than the API reads.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, "body_too_large", message)
    }
    /// What was asked did not finish in the time it was given.
    pub fn timeout(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Timeout, code, message)
    }
    /// The request must switch protocols (an upgrade) to be served.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(Kind::UpgradeRequired, "upgrade_required", message)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
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

/// Result of the coordinator's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
