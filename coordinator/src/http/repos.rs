//! Repository workspaces: the init log, sync, and the caller's git
//! credentials.

use super::{owner_for, AppState, Auth, Body, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use berth_proto::api::{
    AddGitCredential, ErrorBody, GitCredential, SetDotfiles, SyncBody, SyncResult, UserConfig,
};
use serde::Deserialize;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/init-log", get(init_log))
        .route("/v1/workspaces/{name}/sync", post(sync))
        .route(
            "/v1/git-credentials",
            get(list_git_credentials).post(add_git_credential),
        )
        .route("/v1/git-credentials/{host}", delete(delete_git_credential))
        .route("/v1/config", get(get_config))
        .route("/v1/config/dotfiles", put(set_dotfiles))
}

/// The caller's own settings (the dotfiles repository).
#[utoipa::path(get, path = "/v1/config",
    responses((status = 200, body = UserConfig), (status = 401, body = ErrorBody)))]
pub(super) async fn get_config(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<UserConfig>> {
    Ok(Json(s.svc.user_config(&a.user).await?))
}

/// Set (null: clear) the caller's dotfiles repository, applied to each
/// workspace made from now on: cloned into ~/.dotfiles, then its install
/// script run (or its dotfiles linked into the home directory).
#[utoipa::path(put, path = "/v1/config/dotfiles", request_body = SetDotfiles,
    responses((status = 200, body = UserConfig), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_dotfiles(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<SetDotfiles>,
) -> Result<Json<UserConfig>> {
    Ok(Json(s.svc.set_dotfiles(&a.user, req.url.as_deref()).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The owner of the workspace (admins only; default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
    /// Keep the answer open and send what is appended until the steps are done.
    pub follow: Option<bool>,
}

/// The output of the workspace's clone and lifecycle commands, as text;
/// with `follow`, what is appended too, until the last step is done.
#[utoipa::path(get, path = "/v1/workspaces/{name}/init-log",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), LogQuery),
    responses((status = 200, description = "the log", content_type = "text/plain", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(super) async fn init_log(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<LogQuery>,
) -> Result<axum::response::Response> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let duplex = s
        .svc
        .init_log(&owner, &name, q.follow.unwrap_or(false))
        .await?;
    Ok(text_stream(duplex))
}

/// A node's log stream as a text/plain answer, as it comes.
pub(super) fn text_stream(duplex: crate::link::Duplex) -> axum::response::Response {
    let chunks = futures::stream::unfold(duplex.recv, |mut r| async move {
        let mut buf = vec![0u8; 16 << 10];
        match tokio::io::AsyncReadExt::read(&mut r, &mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), r))
            }
        }
    });
    let body = axum::body::Body::from_stream(chunks);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `git pull --rebase` (or, with `push`, `git push`) of the workspace's
/// repository, as its user, with the caller's git credential for the host.
#[utoipa::path(post, path = "/v1/workspaces/{name}/sync",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    request_body = SyncBody,
    responses((status = 200, body = SyncResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(super) async fn sync(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<SyncBody>,
) -> Result<Json<SyncResult>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(s.svc.sync(&owner, &name, req.push).await?))
}

/// Keeps a token of the caller for the git repositories of one host
/// (replacing the one kept before); sealed at rest, handed to a node only
/// with the clone or sync that needs it.
#[utoipa::path(post, path = "/v1/git-credentials", request_body = AddGitCredential,
    responses((status = 201, body = GitCredential), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_git_credential(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<AddGitCredential>,
) -> Result<(StatusCode, Json<GitCredential>)> {
    let c = s.svc.add_git_credential(&a.user, &req).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// The caller's git credentials (hosts and user names, never the tokens).
#[utoipa::path(get, path = "/v1/git-credentials",
    responses((status = 200, body = Vec<GitCredential>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_git_credentials(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Result<Json<Vec<GitCredential>>> {
    Ok(Json(s.svc.git_credentials(&a.user).await?))
}

/// Forgets the caller's git credential for a host.
#[utoipa::path(delete, path = "/v1/git-credentials/{host}",
    params(("host" = String, Path, description = "host[:port]", max_length = 259,
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$")),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn delete_git_credential(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(host): P<String>,
) -> Result<StatusCode> {
    s.svc.delete_git_credential(&a.user, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}
