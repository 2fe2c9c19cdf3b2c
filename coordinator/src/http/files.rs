//! The file API: a workspace's files under /workspace, for the portal's
//! editor and any client. Reads are for whoever may see the workspace (a
//! viewer it is shared with too), changes for whoever may act on it.
//! Conflicts are caught with ETags: a `PUT` or `DELETE` with `If-Match`
//! is done only if the file is still the one read.

use super::{owner_for, AppState, Auth, Body, P, Q};
use crate::domain::team::Need;
use crate::domain::validate::file_path;
use crate::error::Result;
use crate::service::files::{Condition, FileRead};
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, FileAction, FileEntry, FileListing};
use serde::Deserialize;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/files", get(list_root))
        .route(
            "/v1/workspaces/{name}/files/{*path}",
            get(read).put(write).delete(delete).post(act),
        )
}

/// Whether a request path is one of the file API's (`/v1/workspaces/*/files/…`).
pub(super) fn is_file_path(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("v1"),
            Some("workspaces"),
            Some(_),
            Some("files")
        )
    )
}

/// A file API request's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    /// The owner of the workspace (default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
    /// `DELETE`: a directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
    /// `GET` of a file: as an attachment (a download) named after it.
    #[serde(default)]
    pub download: bool,
}

/// What `If-Match` and `If-None-Match: *` ask for.
fn condition(h: &HeaderMap) -> Condition {
    let value = |n| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    Condition {
        if_match: value(header::IF_MATCH)
            .filter(|v| *v != "*")
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string()),
        if_none_match: value(header::IF_NONE_MATCH) == Some("*"),
    }
}

fn etag(e: &FileEntry) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{}\"", e.etag)).ok()
}

/// List /workspace.
#[utoipa::path(get, path = "/v1/workspaces/{name}/files",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), FilesQuery),
    responses((status = 200, body = FileListing), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn list_root(
    st: AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<FilesQuery>,
) -> Result<Response> {
    read(st, a, P((name, String::new())), Q(q)).await
}

/// Read a file (its bytes, `ETag` its version) or list a directory (JSON),
/// under /workspace. Paths with `..`, and symlinks that lead out of
/// /workspace, are refused.
#[utoipa::path(get, path = "/v1/workspaces/{name}/files/{path}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("path" = String, Path, description = "relative to /workspace"), FilesQuery),
    responses((status = 200, description = "a directory's listing (JSON) or a file's bytes",
            content((FileListing = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn read(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, path)): P<(String, String)>,
    Q(q): Q<FilesQuery>,
) -> Result<Response> {
    let path = file_path(&path)?;
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let w = s.svc.find(&owner, &name).await?;
    match s.svc.file_read(w, &path).await? {
        FileRead::Dir(listing) => Ok(Json(listing).into_response()),
        FileRead::File { entry, body } => {
            let stream = tokio_util::io::ReaderStream::with_capacity(body, 256 << 10);
            let mut r = axum::body::Body::from_stream(stream).into_response();
            let h = r.headers_mut();
            // Never rendered on the API's origin: a workspace's HTML could
            // otherwise run with the caller's cookie.
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.size));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(v) = etag(&entry) {
                h.insert(header::ETAG, v);
            }
            if q.download {
                let file = path.rsplit('/').next().unwrap_or("file").replace('"', "");
                if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
                    h.insert(header::CONTENT_DISPOSITION, v);
                }
            }
            Ok(r)
        }
    }
}

/// Write a file (the body, at most 64 MiB) under /workspace, made with
/// its parents if missing; it replaces the old content at once. With
/// `If-Match: "<etag>"` only if the file is still that version (else 412);
/// with `If-None-Match: *` only if nothing is there.
#[utoipa::path(put, path = "/v1/workspaces/{name}/files/{path}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("path" = String, Path, description = "relative to /workspace"), FilesQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileEntry), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 412, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn write(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, path)): P<(String, String)>,
    Q(q): Q<FilesQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response> {
    let path = file_path(&path)?;
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    let e = s
        .svc
        .file_write(w, &path, condition(&headers), body.into_data_stream())
        .await?;
    let tag = etag(&e);
    let mut r = Json(e).into_response();
    if let Some(v) = tag {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

/// Delete a file, a symlink, an empty directory, or (`recursive=true`) a
/// directory and everything in it; with `If-Match` only if unchanged.
#[utoipa::path(delete, path = "/v1/workspaces/{name}/files/{path}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("path" = String, Path, description = "relative to /workspace"), FilesQuery),
    responses((status = 204), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn delete(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, path)): P<(String, String)>,
    Q(q): Q<FilesQuery>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let path = file_path(&path)?;
    if path.is_empty() {
        return Err(crate::error::Error::bad_request(
            "invalid_path",
            "/workspace itself cannot be deleted",
        ));
    }
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    s.svc
        .file_delete(w, &path, condition(&headers), q.recursive)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a directory at the path (`{"action":"mkdir"}`, parents too), or
/// move what is there (`{"action":"rename","to":"new/path"}`, never over
/// something already at `to`).
#[utoipa::path(post, path = "/v1/workspaces/{name}/files/{path}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("path" = String, Path, description = "relative to /workspace"), FilesQuery),
    request_body = FileAction,
    responses((status = 200, body = FileEntry), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn act(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, path)): P<(String, String)>,
    Q(q): Q<FilesQuery>,
    Body(action): Body<FileAction>,
) -> Result<Json<FileEntry>> {
    let path = file_path(&path)?;
    let action = match action {
        FileAction::Rename { to } => FileAction::Rename {
            to: file_path(&to)?,
        },
        FileAction::Mkdir => FileAction::Mkdir,
    };
    if path.is_empty() || matches!(&action, FileAction::Rename { to } if to.is_empty()) {
        return Err(crate::error::Error::bad_request(
            "invalid_path",
            "/workspace itself cannot be made or moved",
        ));
    }
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    Ok(Json(s.svc.file_act(w, &path, action).await?))
}
