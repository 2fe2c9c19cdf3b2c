//! Short-lived sign-in links for the browser pages under `/w/` (the web
//! terminal, previews): `berth open WS` asks for one with its own token and
//! prints it; opening it once within two minutes sets the `berth_token`
//! cookie (as `/w/login` does) and goes to the page, so nobody pastes a token
//! into a browser. The links live in this coordinator's memory only: a link
//! works on the coordinator that made it (behind a load balancer, make it
//! sticky or sign in with `/w/login`).

use crate::api::{AppState, Body};
use crate::auth::{self, Auth};
use crate::error::ErrorBody;
use crate::error::{ApiError, Result};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How long a link stays good.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// Most links outstanding at once (the oldest are dropped past it).
const MAX_LINKS: usize = 10_000;

/// The outstanding links: ticket → (the token it signs in with, deadline).
#[derive(Debug, Clone, Default)]
pub struct Links(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Links {
    /// A new one-time ticket for `token`, good until `now + LINK_TTL`.
    pub fn mint(&self, token: &str, now: Instant) -> String {
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, until)| *until > now);
        if m.len() >= MAX_LINKS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(ticket.clone(), (token.to_string(), now + LINK_TTL));
        ticket
    }

    /// The token of `ticket` if it is still good; a ticket works once.
    pub fn take(&self, ticket: &str, now: Instant) -> Option<String> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.remove(ticket) {
            Some((token, until)) if until > now => Some(token),
            _ => None,
        }
    }
}

/// The sign-in link routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sign-in-links", post(create_link))
        .route("/w/login/link/{ticket}", get(follow_link))
}

/// Where a new link leads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// A page under /w/, e.g. /w/demo/terminal.
    #[schema(pattern = r"^/w/([!-.0-\[\]-~]+/)*[!-.0-\[\]-~]*$", max_length = 1024)]
    pub next: String,
}

/// A one-time sign-in link.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInLink {
    /// Path on this coordinator; opening it signs the browser in and goes to `next`.
    pub url: String,
    pub expires_in_seconds: u64,
}

/// Makes a one-time sign-in link for the caller's own token, leading to a page under /w/.
#[utoipa::path(post, path = "/v1/sign-in-links", request_body = LinkRequest,
    responses((status = 201, body = SignInLink), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_link(
    AxState(s): AxState<AppState>,
    _a: Auth,
    headers: axum::http::HeaderMap,
    Body(req): Body<LinkRequest>,
) -> Result<(StatusCode, Json<SignInLink>)> {
    let next = crate::previews::safe_next(Some(&req.next));
    if next != req.next || next.len() > 1024 || !next.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "invalid_next",
            "next must be a page under /w/",
        ));
    }
    let token = auth::token_of(&headers).ok_or_else(|| ApiError::unauthorized("no token"))?;
    let ticket = s.links.mint(&token, Instant::now());
    let url = format!(
        "/w/login/link/{ticket}?next={}",
        crate::previews::urlencode(&next)
    );
    Ok((
        StatusCode::CREATED,
        Json(SignInLink {
            url,
            expires_in_seconds: LINK_TTL.as_secs(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

/// Signs the browser in with the link's token and goes on; a used, expired
/// or unknown link goes to the sign-in page instead.
async fn follow_link(
    AxState(s): AxState<AppState>,
    Path(ticket): Path<String>,
    Query(n): Query<Next>,
) -> Response {
    let next = crate::previews::safe_next(n.next.as_deref());
    let Some(token) = s.links.take(&ticket, Instant::now()) else {
        let to = format!("/w/login?next={}", crate::previews::urlencode(&next));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    };
    let cookie = crate::previews::session_cookie(&s, &token);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once_and_not_after_its_time() {
        let links = Links::default();
        let t0 = Instant::now();
        let a = links.mint("bt_a", t0);
        assert_eq!(links.take(&a, t0), Some("bt_a".into()));
        assert_eq!(links.take(&a, t0), None, "once only");
        let b = links.mint("bt_b", t0);
        assert_eq!(links.take(&b, t0 + LINK_TTL + Duration::from_secs(1)), None);
        assert_eq!(links.take("nope", t0), None);
    }
}
