//! Commands in a workspace: one JSON answer, or the output streamed.

use super::{owner_for, AppState, Auth, Body, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, ExecBody, ExecResult};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/exec", post(exec_workspace))
        .route("/v1/workspaces/{name}/exec/stream", post(exec_stream))
}

/// Run a command in a running workspace and return its output and exit code.
/// Each output stream is cut at 1 MiB (`truncated`); `exec/stream` carries all of it.
#[utoipa::path(post, path = "/v1/workspaces/{name}/exec", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery), request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub(super) async fn exec_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<ExecBody>,
) -> Result<Json<ExecResult>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let done = s.svc.exec(&owner, &name, req).await?;
    Ok(Json(ExecResult {
        exit_code: done.exit_code,
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        truncated: done.truncated,
    }))
}

/// Run a command in a running workspace and stream its output as it comes
/// (`application/vnd.berth.exec-stream` frames: stdout, stderr, then the
/// exit status or an error such as `exec_timeout`); nothing is cut. Closing
/// the connection kills the command.
#[utoipa::path(post, path = "/v1/workspaces/{name}/exec/stream", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery), request_body = ExecBody,
    responses((status = 200, description = "frames: a kind byte (1 stdout, 2 stderr, 3 exit status as a 4-byte big-endian integer, 4 error as JSON {code, message}), a 4-byte big-endian length, the payload",
            content_type = "application/vnd.berth.exec-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
pub(super) async fn exec_stream(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<ExecBody>,
) -> Result<axum::response::Response> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let frames = s.svc.exec_stream(&owner, &name, req).await?;
    let body = axum::body::Body::from_stream(futures::StreamExt::map(frames, |f| {
        Ok::<_, std::convert::Infallible>(f.encode())
    }));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            berth_proto::exec_stream::MEDIA_TYPE,
        )],
        body,
    )
        .into_response())
}
