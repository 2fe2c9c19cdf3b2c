//! Who calls: a bearer token (`Authorization: Bearer bt_…`), or for
//! browser pages (the portal) the `berth_token` cookie. A request that
//! changes something may use the cookie only from this origin: the page of
//! another site (a preview on a sibling domain is the same *site*, so
//! SameSite=Lax still sends it the cookie) or a sandboxed preview (origin
//! `null`) is refused (`cross_origin`), whatever it makes the browser send.

use super::AppState;
use crate::error::{Error, Result};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: String,
    pub admin: bool,
}

impl Auth {
    pub fn require_admin(&self) -> Result<()> {
        if self.admin {
            Ok(())
        } else {
            Err(Error::forbidden("this needs an admin token"))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self> {
        // Resolved already by the audit layer.
        if let Some(a) = parts.extensions.get::<Auth>() {
            return Ok(a.clone());
        }
        if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| Error::unauthorized("Authorization must be: Bearer <token>"))?;
            return resolve(s, token).await;
        }
        match api_token(&parts.method, &parts.headers)? {
            Some(token) => resolve(s, &token).await,
            None => Err(Error::unauthorized(
                "missing Authorization: Bearer <token> (or the portal's cookie)",
            )),
        }
    }
}

/// Whether a request comes from this origin: its `Origin` names the host it
/// is sent to (a browser sends `Origin` with every request that is not a
/// GET or HEAD, and with WebSockets).
pub fn same_origin(h: &HeaderMap) -> bool {
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        _ => false,
    }
}

/// The caller of a WebSocket (a terminal, a shared terminal): a bearer
/// token, or the cookie from this origin only (no other site's page, nor a
/// sandboxed preview, opens one with it); `what` names it in the refusal.
pub async fn websocket_caller(s: &AppState, h: &HeaderMap, what: &str) -> Result<Auth> {
    let a = optional(s, h).await?.ok_or_else(|| {
        Error::unauthorized("missing Authorization: Bearer <token> (or the berth_token cookie)")
    })?;
    if h.get(header::AUTHORIZATION).is_none() && !same_origin(h) {
        return Err(Error::forbidden(format!(
            "{what} opened with the cookie must come from this origin"
        )));
    }
    Ok(a)
}

/// The token an API request may act with: a bearer token; else the cookie,
/// for a GET or HEAD from anywhere (it reads, and no other origin can read
/// the answer) and for anything else from this origin only.
pub fn api_token(method: &Method, h: &HeaderMap) -> Result<Option<String>> {
    let Some(token) = token_of(h) else {
        return Ok(None);
    };
    let by_cookie = h.get(header::AUTHORIZATION).is_none();
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if by_cookie && !safe && !same_origin(h) {
        return Err(Error::forbidden(
            "the portal's cookie is taken only from its own pages (this request's Origin is another)",
        )
        .with_code("cross_origin"));
    }
    Ok(Some(token))
}

async fn resolve(s: &AppState, token: &str) -> Result<Auth> {
    let p = s.svc.principal(token).await?;
    Ok(Auth {
        user: p.user,
        admin: p.admin,
    })
}

/// The cookie in which a browser carries its API token (previews and the
/// web terminal; set by the `/w/login` page, HttpOnly).
pub const COOKIE: &str = "berth_token";

/// The token a browser request carries: `Authorization: Bearer` first,
/// else the `berth_token` cookie.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
}

/// The caller of a browser-facing request, if it carries a token; a token
/// that is not valid is refused (401) rather than treated as anonymous.
pub async fn optional(s: &AppState, headers: &axum::http::HeaderMap) -> Result<Option<Auth>> {
    match token_of(headers) {
        Some(t) => resolve(s, &t).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_origin_may_change_things_with_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "berth.example:8080".parse().unwrap());
        h.insert(header::COOKIE, "berth_token=bt_x".parse().unwrap());
        assert!(!same_origin(&h), "no Origin");
        assert!(api_token(&Method::GET, &h).unwrap().is_some(), "a read");
        assert!(api_token(&Method::POST, &h).is_err(), "no Origin");
        h.insert(header::ORIGIN, "http://berth.example:8080".parse().unwrap());
        assert!(same_origin(&h));
        assert!(api_token(&Method::DELETE, &h).unwrap().is_some());
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h), "a sandboxed page");
        assert_eq!(
            api_token(&Method::PUT, &h).unwrap_err().code,
            "cross_origin"
        );
        h.insert(
            header::ORIGIN,
            "http://app.berth.example:8080".parse().unwrap(),
        );
        assert!(
            api_token(&Method::POST, &h).is_err(),
            "a sibling (same-site) origin"
        );
        h.insert(header::AUTHORIZATION, "Bearer bt_y".parse().unwrap());
        assert_eq!(
            api_token(&Method::POST, &h).unwrap().as_deref(),
            Some("bt_y")
        );
    }
}
