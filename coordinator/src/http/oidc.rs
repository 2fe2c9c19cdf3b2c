//! OIDC sign-in (docs/admin.md, "OIDC sign-in"), with the `openidconnect`
//! crate: authorization code with PKCE, the provider found by discovery
//! (again at each sign-in, so its key rotations are followed), the ID
//! token's signature, issuer, audience, expiry and nonce verified, then its
//! claims mapped by `domain::oidc` to a user, the admin role and teams.
//!
//! - A browser starts at `/auth/oidc/login?next=/w/...` and ends signed in
//!   (the `berth_token` cookie, as `/w/login` gives).
//! - `berth login --oidc` starts it with `cli_port` (its loopback listener)
//!   and `cli_challenge` (SHA-256 of a secret it keeps, base64url): the
//!   browser ends at `http://127.0.0.1:<port>/callback?code=…`, and the CLI
//!   trades that one-time code and its secret for the token at
//!   `POST /auth/oidc/token`, so a code seen in the browser's history is of
//!   no use to anyone else.
//!
//! Logins under way and codes not yet traded live in this coordinator's
//! memory for ten and two minutes: behind a load balancer, make
//! `/auth/oidc/` sticky.

use super::one_time::OneTime;
use super::signin::{safe_next, session_cookie};
use super::AppState;
use crate::domain::oidc::{OidcPolicy, Refusal};
use crate::error::{Error, Result};
use axum::extract::{Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long a login under way may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long the CLI has to trade its code.
const CODE_TTL: Duration = Duration::from_secs(120);
/// Most logins (and codes) outstanding at once; the oldest go past it.
const MAX_PENDING: usize = 10_000;

/// Where a login ends.
#[derive(Debug, Clone)]
enum Back {
    /// A page under /w/.
    Browser(String),
    /// `berth login --oidc`'s loopback listener.
    Cli { port: u16, challenge: String },
}

#[derive(Debug)]
struct Pending {
    verifier: String,
    nonce: String,
    back: Back,
}

/// The provider's settings and the logins under way.
#[derive(Debug)]
pub struct Oidc {
    policy: OidcPolicy,
    http: openidconnect::reqwest::Client,
    /// state → login.
    pending: OneTime<Pending>,
    /// one-time code → (token, its expiry, the CLI's challenge).
    codes: OneTime<(String, i64, String)>,
}

impl Oidc {
    pub fn new(policy: OidcPolicy) -> Result<Self> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open the client to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::internal(format!("the OIDC HTTP client: {e}")))?;
        Ok(Self {
            policy,
            http,
            pending: OneTime::new(MAX_PENDING),
            codes: OneTime::new(MAX_PENDING),
        })
    }

    /// The provider's client, from its discovery document.
    async fn client(
        &self,
    ) -> Result<
        openidconnect::core::CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
    > {
        let p = &self.policy;
        let issuer = IssuerUrl::new(p.issuer.clone())
            .map_err(|e| refused(&format!("the issuer URL: {e}")))?;
        let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                Error::unavailable(
                    "oidc_unavailable",
                    format!("the OIDC provider's discovery failed: {}", chain(&e)),
                )
            })?;
        let redirect = RedirectUrl::new(p.redirect_url())
            .map_err(|e| Error::internal(format!("oidc.public_url: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            meta,
            ClientId::new(p.client_id.clone()),
            p.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }
}

/// An error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn refused(why: &str) -> Error {
    Error::new(
        crate::error::Kind::Forbidden,
        "oidc_refused",
        why.to_string(),
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/oidc/login", get(login))
        .route("/auth/oidc/callback", get(callback))
        .route("/auth/oidc/token", post(trade))
}

fn configured(s: &AppState) -> Result<&Oidc> {
    s.oidc.as_deref().ok_or_else(|| {
        Error::not_found("OIDC sign-in is not configured ([oidc] in the coordinator's file)")
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
    cli_port: Option<u16>,
    cli_challenge: Option<String>,
}

/// Sends the browser to the provider.
async fn login(AxState(s): AxState<AppState>, Query(q): Query<LoginQuery>) -> Result<Response> {
    let o = configured(&s)?;
    let back = match (q.cli_port, q.cli_challenge) {
        (Some(port), Some(challenge)) => {
            let ok = port >= 1024
                && challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(Error::invalid(
                    "invalid_query",
                    "cli_port is 1024 to 65535 and cli_challenge 43 base64url characters",
                ));
            }
            Back::Cli { port, challenge }
        }
        (None, None) => Back::Browser(match q.next.as_deref() {
            Some(_) => safe_next(q.next.as_deref()),
            None => "/w/login?signed_in=1".to_string(),
        }),
        _ => {
            return Err(Error::invalid(
                "invalid_query",
                "give both cli_port and cli_challenge, or neither",
            ))
        }
    };
    let client = o.client().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in o.policy.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = req.url();
    let now = Instant::now();
    o.pending.put(
        state.secret().clone(),
        Pending {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            back,
        },
        now + LOGIN_TTL,
        now,
    );
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back: the code is traded for tokens, the
/// ID token verified and its claims mapped; the user is signed in.
async fn callback(
    AxState(s): AxState<AppState>,
    Query(q): Query<CallbackQuery>,
) -> Result<Response> {
    let o = configured(&s)?;
    let login = q
        .state
        .as_deref()
        .and_then(|st| o.pending.take(st, Instant::now()));
    let Some(login) = login else {
        return Err(Error::new(
            crate::error::Kind::BadRequest,
            "oidc_state",
            "this sign-in is unknown or expired: start again",
        ));
    };
    if let Some(e) = q.error {
        return Err(refused(&format!(
            "the provider said {e}: {}",
            q.error_description.unwrap_or_default()
        )));
    }
    let code = q.code.ok_or_else(|| refused("the provider sent no code"))?;
    let client = o.client().await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Error::internal(format!("the provider's token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(login.verifier))
        .request_async(&o.http)
        .await
        .map_err(|e| refused(&format!("the provider did not give tokens: {}", chain(&e))))?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| refused("the provider gave no ID token"))?;
    id_token
        .claims(&client.id_token_verifier(), &Nonce::new(login.nonce))
        .map_err(|e| refused(&format!("the ID token: {}", chain(&e))))?;
    // Verified: its claims, as sent (the group and user claims are the
    // configuration's to name).
    let claims = payload(&id_token.to_string())
        .ok_or_else(|| refused("the ID token's claims do not read as JSON"))?;
    let grant = o.policy.grant(&claims).map_err(|r| match r {
        Refusal::NoUser(why) => Error::new(crate::error::Kind::Forbidden, "oidc_no_user", why),
        Refusal::NoGroup(why) => Error::new(crate::error::Kind::Forbidden, "oidc_no_group", why),
    })?;
    crate::store::audit::act_as(&grant.user, grant.admin);
    let (token, expires_at_ms) = s.svc.oidc_sign_in(&grant, o.policy.token_ttl_ms).await?;
    tracing::info!(user = %grant.user, admin = grant.admin, teams = grant.teams.len(), "signed in with OIDC");
    Ok(match login.back {
        Back::Browser(next) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, next),
                (header::SET_COOKIE, session_cookie(&s, &token)),
            ],
        )
            .into_response(),
        Back::Cli { port, challenge } => {
            let one_time = hex::encode(rand::random::<[u8; 24]>());
            let now = Instant::now();
            o.codes.put(
                one_time.clone(),
                (token, expires_at_ms, challenge),
                now + CODE_TTL,
                now,
            );
            let to = format!("http://127.0.0.1:{port}/callback?code={one_time}");
            (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
        }
    })
}

/// The claims of a JWT, unverified (call after verifying it).
fn payload(jwt: &str) -> Option<serde_json::Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Debug, Deserialize)]
pub(super) struct Trade {
    code: String,
    verifier: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Traded {
    token: String,
    expires_at_ms: i64,
}

/// `berth login --oidc` trades its one-time code and secret for the token.
async fn trade(
    AxState(s): AxState<AppState>,
    super::Body(t): super::Body<Trade>,
) -> Result<Json<Traded>> {
    let o = configured(&s)?;
    let got = o.codes.take(&t.code, Instant::now());
    let bad = || {
        Error::new(
            crate::error::Kind::BadRequest,
            "oidc_code",
            "the code is unknown, used, expired or not yours",
        )
    };
    let (token, expires_at_ms, challenge) = got.ok_or_else(bad)?;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(t.verifier.as_bytes());
    if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) != challenge {
        return Err(bad());
    }
    Ok(Json(Traded {
        token,
        expires_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_and_junk_does_not() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"a","groups":["x"]}"#);
        let v = payload(&format!("h.{claims}.s")).unwrap();
        assert_eq!(v["groups"][0], "x");
        assert!(payload("nodots").is_none());
        assert!(payload("h.!!!.s").is_none());
    }
}
