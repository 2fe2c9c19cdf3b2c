//! Review requests: submit a workspace, list, and the steps.

use super::{owner_for, AppState, Auth, Body, OwnerQuery, P, Q};
use crate::domain::team::Need;
use crate::error::Result;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, Review, ReviewInput, ReviewStep};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/reviews", post(submit_review))
        .route("/v1/reviews", get(list_reviews))
        .route("/v1/reviews/{id}/{action}", post(review_step))
}

/// Submit a workspace for review with a note and a priority (whoever may
/// act on it); one open request per workspace.
#[utoipa::path(post, path = "/v1/workspaces/{name}/reviews",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    request_body = ReviewInput,
    responses((status = 201, body = Review), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn submit_review(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(input): Body<ReviewInput>,
) -> Result<(StatusCode, Json<Review>)> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let r = s.svc.submit_review(&a.user, &owner, &name, input).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// The review requests of the workspaces the caller may read, newest first.
#[utoipa::path(get, path = "/v1/reviews",
    responses((status = 200, body = Vec<Review>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_reviews(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Result<Json<Vec<Review>>> {
    Ok(Json(s.svc.reviews(&a.user, a.admin).await?))
}

/// A step of a review: `start` (take it: someone other than its author who
/// may read the workspace), `approve` or `request-changes` (its reviewer,
/// with a comment), `resubmit` (after changes: whoever may act on it).
#[utoipa::path(post, path = "/v1/reviews/{id}/{action}",
    params(("id" = String, Path), ("action" = String, Path, description = "start, approve, request-changes or resubmit")),
    request_body = ReviewStep,
    responses((status = 200, body = Review), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn review_step(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((id, action)): P<(String, String)>,
    Body(step): Body<ReviewStep>,
) -> Result<Json<Review>> {
    Ok(Json(
        s.svc
            .review_step(&a.user, a.admin, &id, &action, &step.comment)
            .await?,
    ))
}
