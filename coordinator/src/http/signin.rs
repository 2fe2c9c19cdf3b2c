//! Short-lived sign-in links for the browser pages under `/w/` (the web
//! terminal, previews): `berth open WS` asks for one with its own token and
//! prints it; opening it once within two minutes sets the `berth_token`
//! cookie (as `/w/login` does) and goes to the page, so nobody pastes a token
//! into a browser. The links live in this coordinator's memory only: a link
//! works on the coordinator that made it (behind a load balancer, make it
//! sticky or sign in with `/w/login`). And the sign-in page itself,
//! `/w/login`, which keeps a pasted token in the cookie.

use super::auth::{self, Auth};
use super::one_time::OneTime;
use super::{AppState, Body};
use crate::error::{Error, Result};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, LinkRequest, SignInLink};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// How long a link stays good.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// Most links outstanding at once (the oldest are dropped past it).
const MAX_LINKS: usize = 10_000;

/// The outstanding links: ticket → the token it signs in with.
#[derive(Debug, Clone)]
pub struct Links(OneTime<String>);

impl Default for Links {
    fn default() -> Self {
        Self(OneTime::new(MAX_LINKS))
    }
}

impl Links {
    /// A new one-time ticket for `token`, good until `now + LINK_TTL`.
    pub fn mint(&self, token: &str, now: Instant) -> String {
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        self.0
            .put(ticket.clone(), token.to_string(), now + LINK_TTL, now);
        ticket
    }

    /// The token of `ticket` if it is still good; a ticket works once.
    pub fn take(&self, ticket: &str, now: Instant) -> Option<String> {
        self.0.take(ticket, now)
    }
}

/// The sign-in link routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/w/login", get(login_page).post(login))
        .route("/v1/sign-in-links", post(create_link))
        .route("/w/login/link/{ticket}", get(follow_link))
}

/// Makes a one-time sign-in link for the caller's own token, leading to a page under /w/.
#[utoipa::path(post, path = "/v1/sign-in-links", request_body = LinkRequest,
    responses((status = 201, body = SignInLink), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_link(
    AxState(s): AxState<AppState>,
    _a: Auth,
    headers: axum::http::HeaderMap,
    Body(req): Body<LinkRequest>,
) -> Result<(StatusCode, Json<SignInLink>)> {
    let next = safe_next(Some(&req.next));
    if next != req.next || next.len() > 1024 || !next.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "invalid_next",
            "next must be a page under /w/",
        ));
    }
    let token = auth::token_of(&headers).ok_or_else(|| Error::unauthorized("no token"))?;
    let ticket = s.links.mint(&token, Instant::now());
    let url = format!("/w/login/link/{ticket}?next={}", urlencode(&next));
    Ok((
        StatusCode::CREATED,
        Json(SignInLink {
            url,
            expires_in_seconds: LINK_TTL.as_secs(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// Signs the browser in with the link's token and goes on; a used, expired
/// or unknown link goes to the sign-in page instead.
async fn follow_link(
    AxState(s): AxState<AppState>,
    Path(ticket): Path<String>,
    Query(n): Query<Next>,
) -> Response {
    let next = safe_next(n.next.as_deref());
    let Some(token) = s.links.take(&ticket, Instant::now()) else {
        let to = format!("/w/login?next={}", urlencode(&next));
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    };
    let cookie = session_cookie(&s, &token);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

// ---- the sign-in page ----

const LOGIN_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Berth: sign in</title>
<style>body{font:16px system-ui,sans-serif;max-width:28em;margin:4em auto}input{width:100%;padding:.4em;margin:.4em 0}</style>
</head><body><h1>Berth</h1><p>Sign in with your API token (<code>berth admin token create</code>, or your config file).</p>
<form method="post" action="/w/login"><input type="password" name="token" placeholder="bt_..." autofocus>
<input type="hidden" name="next" value="__NEXT__"><input type="submit" value="Sign in"></form>__OIDC__</body></html>"#;

/// Only a local preview or terminal path: never an open redirect.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/w/") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/w/login".to_string(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) async fn login_page(
    AxState(s): AxState<AppState>,
    axum::extract::Query(n): axum::extract::Query<Next>,
) -> Response {
    let next = html_escape(&safe_next(n.next.as_deref()));
    // With an OIDC provider configured, its sign-in is offered too.
    let oidc = match s.oidc.is_some() {
        true => format!(
            "<p>Or <a href=\"/auth/oidc/login?next={}\">sign in with your organisation's account</a>.</p>",
            urlencode(&safe_next(n.next.as_deref()))
        ),
        false => String::new(),
    };
    let page = LOGIN_PAGE
        .replace("__NEXT__", &next)
        .replace("__OIDC__", &oidc);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// The `Set-Cookie` value keeping `token` for `/w/` pages (and the preview
/// domain's, when there is one): HttpOnly, SameSite=Lax, a week; Secure
/// when the API is served over HTTPS.
pub(super) fn session_cookie(s: &AppState, token: &str) -> String {
    let domain = s
        .preview_domain
        .as_deref()
        .map(|d| format!("; Domain={d}"))
        .unwrap_or_default();
    let secure = if s.https { "; Secure" } else { "" };
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800{domain}{secure}",
        auth::COOKIE
    )
}

/// Checks the token and keeps it in an HttpOnly cookie for `/w/` pages.
pub(super) async fn login(
    AxState(s): AxState<AppState>,
    axum::extract::Form(f): axum::extract::Form<LoginForm>,
) -> Result<Response> {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", f.token.trim()))
            .map_err(|_| Error::unauthorized("invalid token"))?,
    );
    auth::optional(&s, &h).await?;
    let cookie = session_cookie(&s, f.token.trim());
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, safe_next(f.next.as_deref()))
        .header(header::SET_COOKIE, cookie)
        .body(axum::body::Body::empty())
        .map_err(|e| Error::internal(e.to_string()))
}

pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

    #[test]
    fn sign_in_only_sends_back_to_berth_pages() {
        assert_eq!(safe_next(Some("/w/web/3000/")), "/w/web/3000/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/w/login");
        assert_eq!(safe_next(Some("/w//evil.example")), "/w/login");
        assert_eq!(safe_next(None), "/w/login");
    }
}
