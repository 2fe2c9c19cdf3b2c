//! The audit log's HTTP side: every request gets an `X-Request-Id`; every
//! state-changing request (any method but GET, HEAD and OPTIONS) and every
//! tunnel session (an `Upgrade` request: SSH, terminal, port, a preview's
//! WebSocket) runs inside an audit scope, so the transaction that stores
//! its change also stores its entry. `GET /v1/admin/audit` lists entries
//! and `GET /v1/admin/audit/verify` checks the chain (admins).

use super::{AppState, Auth, Q};
use crate::domain::audit::{self, Entry};
use crate::error::Result;
use crate::store::AuditFilter;
use axum::extract::{ConnectInfo, MatchedPath, Request, State as AxState};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{AuditPage, AuditVerification, ErrorBody};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/audit", get(list_audit))
        .route("/v1/admin/audit/verify", get(verify_audit))
}

/// The header carrying a request's id (in the answer and its audit entry).
pub const REQUEST_ID: &str = "x-request-id";

/// Largest request body copied into an entry's diff.
const DIFF_BODY_LIMIT: usize = 64 << 10;

/// The error code of an answer, put there by `Error::into_response`.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

/// Whether a request is audited: it may change state, or opens a tunnel.
fn audited(req: &Request) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.headers().contains_key(header::UPGRADE)
        // A sign-in changes state on a GET (the provider's redirect back).
        || req.uri().path() == "/auth/oidc/callback"
}

/// The status each route answers on success, by (method, route template),
/// from the OpenAPI document the handlers declare (`openapi::success`),
/// set when the router is built: a transaction that writes a request's
/// entry commits before the answer exists.
pub static SUCCESS: OnceLock<HashMap<(String, String), i64>> = OnceLock::new();

fn success_status(method: &Method, route: &str) -> i64 {
    SUCCESS
        .get()
        .and_then(|m| m.get(&(method.as_str().to_string(), route.to_string())))
        .copied()
        .unwrap_or(200)
}

/// A new request id: 16 hex digits.
fn request_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Gives every request an id and runs audited ones in an audit scope,
/// recording those that changed nothing after their answer.
pub async fn record(
    AxState(s): AxState<AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request_id();
    if !s.observe || !audited(&req) {
        return with_id(next.run(req).await, &id);
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let user_agent: String = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    // Who calls, resolved once here and handed to the handler's extractor.
    let caller = match super::auth::api_token(req.method(), req.headers()) {
        Ok(Some(t)) => s.svc.principal(&t).await.ok(),
        _ => None,
    };
    if let Some(p) = &caller {
        req.extensions_mut().insert(Auth {
            user: p.user.clone(),
            admin: p.admin,
        });
    }
    let owner = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("owner="))
        .map(str::to_string);
    let resource = match owner {
        Some(o) => format!("{}?owner={o}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    let (req, body) = json_body(req).await;
    let entry = Entry {
        seq: 0,
        at_ms: s.svc.now(),
        actor: caller.as_ref().map(|p| p.user.clone()).unwrap_or_default(),
        token_id: caller
            .as_ref()
            .map(|p| p.token_id.clone())
            .unwrap_or_default(),
        role: caller
            .as_ref()
            .map(|p| if p.admin { "admin" } else { "member" })
            .unwrap_or_default()
            .to_string(),
        source_ip,
        user_agent,
        action: format!("{method} {route}"),
        resource,
        status: success_status(&method, &route),
        error_code: String::new(),
        request_id: id.clone(),
        diff: serde_json::json!({ "request": body }).to_string(),
    };
    let scope = s.svc.audit_scope(entry);
    let response = scope.clone().run(next.run(req)).await;
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    s.svc
        .finish_audit(&scope, i64::from(response.status().as_u16()), &code)
        .await;
    with_id(response, &id)
}

fn with_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(REQUEST_ID, v);
    }
    r
}

/// The request's JSON body for the diff (secrets redacted), and the request
/// to pass on with its body intact. Bodies that are not small JSON are not
/// copied (exec's stdin, uploads).
async fn json_body(req: Request) -> (Request, serde_json::Value) {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= DIFF_BODY_LIMIT);
    // A file's content is the workspace's, not the log's.
    if !json || !small || super::files::is_file_path(req.uri().path()) {
        return (req, serde_json::Value::Null);
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, DIFF_BODY_LIMIT).await {
        Ok(bytes) => {
            let mut v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            audit::redact(&mut v);
            (Request::from_parts(parts, axum::body::Body::from(bytes)), v)
        }
        // Shorter than announced: the handler sees the same failure.
        Err(_) => (
            Request::from_parts(parts, axum::body::Body::empty()),
            serde_json::Value::Null,
        ),
    }
}

/// `GET /v1/admin/audit`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries of this user.
    pub actor: Option<String>,
    /// Only actions starting with this, e.g. `POST /v1/workspaces`.
    pub action: Option<String>,
    /// Only resources starting with this, e.g. `/v1/workspaces/ws1`.
    pub resource: Option<String>,
    /// Only entries at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only entries before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only entries after this sequence number (the previous page's `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Entries per page (at most 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The audit log, oldest first, filtered (admins).
#[utoipa::path(get, path = "/v1/admin/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_audit(
    AxState(s): AxState<AppState>,
    a: Auth,
    Q(q): Q<AuditQuery>,
) -> Result<Json<AuditPage>> {
    a.require_admin()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || q.after.is_some_and(|a| a < 0) {
        return Err(crate::error::Error::bad_request(
            "invalid_query",
            "limit is 1 to 1000 and after is not negative",
        ));
    }
    let entries = s
        .svc
        .audit(&AuditFilter {
            actor: q.actor,
            action: q.action,
            resource: q.resource,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            until_seq: None,
            after: q.after.unwrap_or(0),
            limit,
            newest_first: false,
        })
        .await?;
    let next_after = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

/// Checks the audit log's HMAC chain: a changed, removed or inserted entry
/// is named (admins).
#[utoipa::path(get, path = "/v1/admin/audit/verify",
    responses((status = 200, body = AuditVerification), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn verify_audit(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Result<impl IntoResponse> {
    a.require_admin()?;
    Ok(Json(s.svc.verify_audit().await?))
}
