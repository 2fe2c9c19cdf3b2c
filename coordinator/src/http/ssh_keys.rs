//! Users' SSH public keys (what `berth ssh` logs in with).

use super::{AppState, Auth, Body, P};
use crate::error::Result;
use crate::store::SshKeyRow;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_proto::api::{AddSshKey, ErrorBody, SshKey};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ssh-keys", get(list_ssh_keys).post(add_ssh_key))
        .route("/v1/ssh-keys/{key}", delete(delete_ssh_key))
}

fn view(k: SshKeyRow) -> SshKey {
    SshKey {
        id: k.id,
        name: k.name,
        fingerprint: k.fingerprint,
        public_key: k.public_key,
        created_at_ms: k.created_at_ms,
    }
}

/// Registers an SSH public key of the caller (ed25519, ECDSA or RSA ≥ 2048
/// bits). The agents get the keys with each SSH connection, so a key works
/// at once and a deleted key stops working at once.
#[utoipa::path(post, path = "/v1/ssh-keys", request_body = AddSshKey,
    responses((status = 201, body = SshKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn add_ssh_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<AddSshKey>,
) -> Result<(StatusCode, Json<SshKey>)> {
    let row = s
        .svc
        .add_ssh_key(&a.user, &req.public_key, req.name)
        .await?;
    Ok((StatusCode::CREATED, Json(view(row))))
}

/// The caller's SSH keys.
#[utoipa::path(get, path = "/v1/ssh-keys",
    responses((status = 200, body = Vec<SshKey>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_ssh_keys(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Result<Json<Vec<SshKey>>> {
    let keys = s.svc.ssh_keys(&a.user).await?;
    Ok(Json(keys.into_iter().map(view).collect()))
}

/// Removes one of the caller's SSH keys, by id or fingerprint.
#[utoipa::path(delete, path = "/v1/ssh-keys/{key}",
    params(("key" = String, Path, description = "key id or SHA256 fingerprint", max_length = 100)),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn delete_ssh_key(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(key): P<String>,
) -> Result<StatusCode> {
    s.svc.delete_ssh_key(&a.user, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
