//! API authentication: bearer tokens `bt_<id>_<secret>`, stored as SHA-256
//! hashes; roles admin and member.

use crate::api::AppState;
use crate::error::{ApiError, Result};
use crate::pki::{hash_secret, JoinToken};
use crate::store::{now_ms, Store};
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
            Err(ApiError::forbidden("this needs an admin token"))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <token>"))?;
        resolve(s, token).await
    }
}

async fn resolve(s: &AppState, token: &str) -> Result<Auth> {
    if !token.starts_with("bt_") || token.len() > 128 {
        return Err(ApiError::unauthorized("invalid token"));
    }
    match s.ctl.store().principal(&hash_secret(token)).await? {
        Some(p) => Ok(Auth {
            user: p.user,
            admin: p.admin,
        }),
        None => Err(ApiError::unauthorized("invalid token")),
    }
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

/// Makes and stores an API token; returns it (the only time it is seen).
pub async fn create_api_token(store: &Store, user: &str, admin: bool) -> Result<String> {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let token = format!("bt_{id}_{}", hex::encode(rand::random::<[u8; 24]>()));
    store
        .add_api_token(&id, &hash_secret(&token), user, admin)
        .await?;
    Ok(token)
}

/// Makes and stores a one-time join token valid `ttl_seconds`.
pub async fn create_join_token(
    store: &Store,
    ca_fingerprint: &str,
    by: &str,
    ttl_seconds: u64,
) -> Result<(String, i64)> {
    let t = JoinToken::generate(ca_fingerprint);
    let expires = now_ms() + (ttl_seconds as i64) * 1000;
    store
        .add_join_token(&t.id, &t.secret_hash(), by, expires)
        .await?;
    Ok((t.to_string(), expires))
}
