//! Who calls: a bearer token (`Authorization: Bearer bt_…`), or for
//! browser pages the `berth_token` cookie.

use super::AppState;
use crate::error::{Error, Result};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

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
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Error::unauthorized("Authorization must be: Bearer <token>"))?;
        resolve(s, token).await
    }
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
