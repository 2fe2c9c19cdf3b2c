//! The HTTP face of the coordinator (axum): the REST/JSON API under `/v1`,
//! its OpenAPI document (utoipa, generated from the handlers and the shared
//! types of `berth_proto::api`), the event stream, the tunnels and the
//! browser pages under `/w/`. Adapters only: each handler decodes its
//! request, makes one call to the service and maps the answer; errors map
//! to HTTP statuses here, in one place. Nothing imports this module.

mod audit;
mod auth;
mod backups;
mod exec;
mod files;
mod metrics;
mod nodes;
pub mod oidc;
mod one_time;
mod openapi;
mod portal;
mod prebuilds;
mod previews;
mod quotas;
mod reports;
mod repos;
mod reviews;
mod secrets;
mod signin;
mod ssh_keys;
mod teams;
mod terminal;
mod terminal_share;
pub mod tls;
mod tokens;
mod tunnels;
mod workspaces;

pub use auth::Auth;
pub use signin::Links;

use crate::domain::team::Need;
use crate::error::{Error, Kind, Result};
use crate::service::Service;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use berth_proto::api::ErrorBody;
use serde::Deserialize;
use utoipa::IntoParams;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub svc: Service,
    pub ca_fingerprint: String,
    /// Wildcard domain of previews (`{port}-{workspace}.{domain}`), if any.
    pub preview_domain: Option<String>,
    /// Outstanding one-time sign-in links (`berth open`).
    pub links: Links,
    /// The API's request counters (`/metrics`).
    pub metrics: metrics::ApiMetrics,
    /// Record requests in the audit log and the request metrics: always in
    /// a coordinator; off only where a benchmark measures what they cost.
    pub observe: bool,
    /// OIDC sign-in, when configured.
    pub oidc: Option<std::sync::Arc<oidc::Oidc>>,
    /// Web terminal sessions shared live.
    pub terminals: terminal_share::Shares,
    /// The API is served over HTTPS (the session cookie is `Secure`).
    pub https: bool,
}

/// The HTTP status of an error's kind.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Kind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Node => StatusCode::BAD_GATEWAY,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        if status.is_server_error() {
            tracing::warn!(code = self.code, error = %self.message, status = status.as_u16(), "request failed");
        }
        let code = self.code.to_string();
        let body = ErrorBody {
            code: code.clone(),
            message: self.message,
        };
        let mut r = (status, Json(body)).into_response();
        r.extensions_mut().insert(audit::ErrorCode(code));
        r
    }
}

/// Largest request body the API reads (JSON bodies are small; exec stdin
/// and SSH keys included).
pub const BODY_LIMIT: usize = 2 << 20;

/// A JSON object body whose rejection is one of our JSON errors (400).
/// Only an object: serde would also read a struct from an array.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;
    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let v = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) => v,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Error::too_large(format!(
                    "the body is larger than {} bytes",
                    BODY_LIMIT
                )))
            }
            Err(e) => return Err(Error::bad_request("invalid_body", e.body_text())),
        };
        if !v.is_object() {
            return Err(Error::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(v)
            .map(Body)
            .map_err(|e| Error::bad_request("invalid_body", e.to_string()))
    }
}

/// Query parameters whose rejection is a JSON error (400).
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = Error;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => Err(Error::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// A path parameter whose rejection is a JSON error (400).
pub struct P<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = Error;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(Error::bad_request("invalid_path", e.body_text())),
        }
    }
}

/// Whose workspace a path names: the caller's unless an admin says otherwise.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    /// The owner of the workspace (admins only; default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
}

/// `DELETE /v1/workspaces/{name}`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// The owner of the workspace (admins only; default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
    /// Delete at once, without waiting for the backup of its stop (what
    /// was written since its newest backup is lost).
    #[serde(default)]
    pub force: bool,
}

/// The owner a request acts for: the caller, or who it names (admins; or
/// a member of the workspace's team whose role allows `need`).
pub async fn owner_for(
    s: &AppState,
    a: &Auth,
    asked: Option<String>,
    name: &str,
    need: Need,
) -> Result<String> {
    match asked {
        Some(o) if o != a.user => {
            crate::domain::validate::user_name(&o)?;
            if !a.admin {
                s.svc.may_access(&a.user, &o, name, need).await?;
            }
            Ok(o)
        }
        _ => Ok(a.user.clone()),
    }
}

/// The owner a request about all of a user's workspaces acts for: the
/// caller, or (admins) who it names.
pub fn owner_of(a: &Auth, asked: Option<String>) -> Result<String> {
    match asked {
        Some(o) if o != a.user => {
            if a.admin {
                crate::domain::validate::user_name(&o)?;
                Ok(o)
            } else {
                Err(Error::forbidden(
                    "members can only list their own workspaces (or a team's: ?team=)",
                ))
            }
        }
        _ => Ok(a.user.clone()),
    }
}

/// Where the API listens: plain HTTP, or HTTPS (`tls`).
pub enum ApiListener {
    Plain(tokio::net::TcpListener),
    Tls(tls::TlsListener),
}

/// Serves the API until `stop` completes; then takes no new connection and
/// returns once every open one has finished its request in flight.
pub async fn serve(
    listener: ApiListener,
    state: AppState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Host-routed previews are rewritten before routing, so the layer wraps the router.
    let app = tower::Layer::layer(
        &axum::middleware::from_fn_with_state(state.clone(), previews::by_host),
        router(state),
    );
    // The peer's address is each audit entry's source IP.
    match listener {
        ApiListener::Plain(l) => {
            let svc = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<
                std::net::SocketAddr,
            >(app);
            axum::serve(l, svc).with_graceful_shutdown(stop).await
        }
        ApiListener::Tls(l) => {
            let app = tower::Layer::layer(&axum::middleware::map_response(hsts), app);
            let svc = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<
                std::net::SocketAddr,
            >(app);
            axum::serve(l.tap_io(|_| ()), svc)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// Every HTTPS answer tells the browser to use nothing else (`tls::HSTS`).
async fn hsts(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(tls::HSTS),
    );
    r
}

/// The routes.
pub fn router(state: AppState) -> Router {
    audit::SUCCESS.get_or_init(openapi::success);
    Router::new()
        .merge(openapi::routes())
        .merge(workspaces::routes())
        .merge(backups::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(nodes::routes())
        .merge(tokens::routes())
        .merge(ssh_keys::routes())
        .merge(tunnels::routes())
        .merge(previews::routes())
        .merge(repos::routes())
        .merge(prebuilds::routes())
        .merge(terminal::routes())
        .merge(terminal_share::routes())
        .merge(signin::routes())
        .merge(audit::routes())
        .merge(reports::routes())
        .merge(quotas::routes())
        .merge(teams::routes())
        .merge(secrets::routes())
        .merge(oidc::routes())
        .merge(portal::routes())
        .merge(reviews::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .merge(metrics::routes())
        .fallback(|| async { Error::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Error::method_not_allowed("this endpoint does not take that method")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .with_state(state)
}

/// Answers 413 to a body announced larger than `BODY_LIMIT` before any of
/// it is read (nor a "100 Continue" sent); a body that only turns out larger
/// is cut by `DefaultBodyLimit`.
async fn refuse_large_bodies(req: Request, next: axum::middleware::Next) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A file's upload has its own limit, kept by the node as it writes.
    let (limit, what) =
        if req.method() == axum::http::Method::PUT && files::is_file_path(req.uri().path()) {
            (berth_proto::api::FILE_MAX_BYTES, "a file")
        } else {
            (BODY_LIMIT as u64, "the body")
        };
    if announced.is_some_and(|n| n > limit) {
        return Error::too_large(format!("{what} is larger than {limit} bytes"))
            .with_code(if what == "a file" {
                "file_too_large"
            } else {
                "body_too_large"
            })
            .into_response();
    }
    next.run(req).await
}
