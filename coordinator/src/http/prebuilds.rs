//! Prebuilds: run one, list them, read one.

use super::{AppState, Auth, Body, P, Q};
use crate::error::Result;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, Prebuild, RunPrebuild, WebhookResult};
use serde::Deserialize;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/prebuilds", get(list_prebuilds).post(run_prebuild))
        .route("/v1/prebuilds/{id}", get(get_prebuild))
        .route("/v1/prebuilds/{id}/log", get(prebuild_log))
        .route("/v1/webhooks/git", axum::routing::post(git_webhook))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FollowQuery {
    /// Keep the answer open and send what is appended until the steps are done.
    pub follow: Option<bool>,
}

/// The output of a building prebuild's clone and commands, as text; with
/// `follow`, what is appended too, until its steps are done. A prebuild
/// that is not building has no log any more (409 `not_building`; a failed
/// one's end is in its `error`).
#[utoipa::path(get, path = "/v1/prebuilds/{id}/log",
    params(("id" = String, Path, pattern = "^p[0-9a-f]{16}$"), FollowQuery),
    responses((status = 200, description = "the log", content_type = "text/plain", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(super) async fn prebuild_log(
    AxState(s): AxState<AppState>,
    _a: Auth,
    P(id): P<String>,
    Q(q): Q<FollowQuery>,
) -> Result<axum::response::Response> {
    let duplex = s.svc.prebuild_log(&id, q.follow.unwrap_or(false)).await?;
    Ok(super::repos::text_stream(duplex))
}

/// A git host's push webhook (GitHub: `X-GitHub-Event` and
/// `X-Hub-Signature-256`; GitLab: `X-Gitlab-Event` and `X-Gitlab-Token`).
/// Authenticated by the repository's webhook secret, not a token, so it is
/// not in the OpenAPI document: docs/prebuilds.md describes it. 202 when a
/// prebuild started or was queued, 200 when the event was ignored, 401 for
/// a bad signature (nothing changes).
async fn git_webhook(
    AxState(s): AxState<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<WebhookResult>)> {
    use crate::domain::webhook::Source;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (source, event, signature) = match (h("x-github-event"), h("x-gitlab-event")) {
        (e, _) if !e.is_empty() => (Source::GitHub, e, h("x-hub-signature-256")),
        (_, e) if !e.is_empty() => (Source::GitLab, e, h("x-gitlab-token")),
        _ => {
            return Err(crate::error::Error::invalid(
                "invalid_webhook",
                "no X-GitHub-Event or X-Gitlab-Event header",
            ))
        }
    };
    let r = s.svc.webhook(source, &event, &signature, &body).await?;
    let status = match r.outcome.as_str() {
        "ignored" => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(r)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PrebuildQuery {
    /// Only the prebuilds of this repository URL.
    #[param(max_length = 2048)]
    pub repo: Option<String>,
}

/// Builds a prebuild of a repository's branch now (onCreateCommand and
/// updateContentCommand in a build workspace, its /workspace kept as a
/// layer). Answers at once with the build (`building`); one of the same
/// repository and branch already building is answered instead.
#[utoipa::path(post, path = "/v1/prebuilds", request_body = RunPrebuild,
    responses((status = 202, body = Prebuild), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn run_prebuild(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<RunPrebuild>,
) -> Result<(StatusCode, Json<Prebuild>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.svc.run_prebuild(&a.user, &req).await?),
    ))
}

/// Prebuilds, newest first.
#[utoipa::path(get, path = "/v1/prebuilds", params(PrebuildQuery),
    responses((status = 200, body = Vec<Prebuild>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list_prebuilds(
    AxState(s): AxState<AppState>,
    _a: Auth,
    Q(q): Q<PrebuildQuery>,
) -> Result<Json<Vec<Prebuild>>> {
    Ok(Json(s.svc.prebuilds(q.repo.as_deref()).await?))
}

/// One prebuild.
#[utoipa::path(get, path = "/v1/prebuilds/{id}",
    params(("id" = String, Path, pattern = "^p[0-9a-f]{16}$")),
    responses((status = 200, body = Prebuild), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn get_prebuild(
    AxState(s): AxState<AppState>,
    _a: Auth,
    P(id): P<String>,
) -> Result<Json<Prebuild>> {
    Ok(Json(s.svc.prebuild(&id).await?))
}
