//! Teams (`docs/admin.md`, "Teams"): `POST /v1/teams` (platform admins),
//! `GET /v1/teams`, and a team's members by its admins; a workspace shared
//! read-only with a user ("Sharing").

use super::{owner_for, AppState, Auth, Body, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use berth_proto::api::{CreateTeam, ErrorBody, SetTeamMember, Shares, Team};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/teams", get(list_teams).post(create_team))
        .route(
            "/v1/teams/{team}/members/{user}",
            put(set_member).delete(remove_member),
        )
        .route("/v1/workspaces/{name}/shares", get(list_shares))
        .route(
            "/v1/workspaces/{name}/shares/{user}",
            put(share).delete(unshare),
        )
}

/// Who a workspace is shared with (whoever may read it).
#[utoipa::path(get, path = "/v1/workspaces/{name}/shares",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Shares), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn list_shares(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Shares>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    Ok(Json(Shares {
        users: s.svc.shares(&owner, &name).await?,
    }))
}

/// Share a workspace read-only with a user: they read it (state, backups,
/// init log, public ports), list it (`?shared=true`) and act on nothing
/// (whoever may act on it).
#[utoipa::path(put, path = "/v1/workspaces/{name}/shares/{user}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$"), OwnerQuery),
    responses((status = 200, body = Shares), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn share(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, user)): P<(String, String)>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Shares>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(Shares {
        users: s.svc.share(&owner, &name, &user, true).await?,
    }))
}

/// Stop sharing a workspace with a user (whoever may act on it).
#[utoipa::path(delete, path = "/v1/workspaces/{name}/shares/{user}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$"), OwnerQuery),
    responses((status = 200, body = Shares), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn unshare(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, user)): P<(String, String)>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Shares>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    Ok(Json(Shares {
        users: s.svc.share(&owner, &name, &user, false).await?,
    }))
}

/// Make a team (platform admins).
#[utoipa::path(post, path = "/v1/teams", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_team(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateTeam>,
) -> Result<(StatusCode, Json<Team>)> {
    a.require_admin()?;
    Ok((
        StatusCode::CREATED,
        Json(s.svc.create_team(&req.name).await?),
    ))
}

/// The caller's teams with their members (platform admins: every team).
#[utoipa::path(get, path = "/v1/teams",
    responses((status = 200, body = Vec<Team>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_teams(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Vec<Team>>> {
    Ok(Json(s.svc.teams(&a.user, a.admin).await?))
}

/// Add a member or change their role (the team's admins, platform admins).
#[utoipa::path(put, path = "/v1/teams/{team}/members/{user}", request_body = SetTeamMember,
    params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$")),
    responses((status = 200, body = Team), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_member(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((team, user)): P<(String, String)>,
    Body(req): Body<SetTeamMember>,
) -> Result<Json<Team>> {
    Ok(Json(
        s.svc
            .set_team_member(&a.user, a.admin, &team, &user, &req.role)
            .await?,
    ))
}

/// Remove a member (the team's admins, platform admins).
#[utoipa::path(delete, path = "/v1/teams/{team}/members/{user}",
    params(("team" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("user" = String, Path, pattern = "^[a-z0-9._@-]{1,64}$")),
    responses((status = 200, body = Team), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn remove_member(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((team, user)): P<(String, String)>,
) -> Result<Json<Team>> {
    Ok(Json(
        s.svc
            .remove_team_member(&a.user, a.admin, &team, &user)
            .await?,
    ))
}
