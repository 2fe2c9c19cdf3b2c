//! The admins' capacity and usage reports (`docs/admin.md`, "Capacity and
//! cost"): `GET /v1/admin/capacity` and `GET /v1/admin/usage` (JSON, or
//! CSV with `format=csv`).

use super::{AppState, Auth, Q};
use crate::error::{Error, Result};
use axum::extract::State as AxState;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{CapacityReport, ErrorBody, UsageReport};
use serde::Deserialize;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/capacity", get(capacity))
        .route("/v1/admin/usage", get(usage))
}

/// `GET /v1/admin/capacity`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    /// Only this tier (default: all).
    pub tier: Option<String>,
    /// Also say how many nodes like `like` hold this many more of each tier.
    #[param(minimum = 1, maximum = 1000000)]
    pub more: Option<u64>,
    /// The node the added ones would be like (default: the largest).
    pub like: Option<String>,
}

/// What the fleet holds per node, how many more of each tier fit (packed
/// with the scheduler's rules), what is stranded, the cost per hour and
/// when each resource runs out at the current trend (admins).
#[utoipa::path(get, path = "/v1/admin/capacity", params(CapacityQuery),
    responses((status = 200, body = CapacityReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn capacity(
    AxState(s): AxState<AppState>,
    a: Auth,
    Q(q): Q<CapacityQuery>,
) -> Result<Json<CapacityReport>> {
    a.require_admin()?;
    if q.more.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
        return Err(Error::invalid("invalid_more", "more is 1 to 1000000"));
    }
    Ok(Json(
        s.svc
            .capacity_report(q.tier.as_deref(), q.more, q.like.as_deref())
            .await?,
    ))
}

/// What the usage report sums by.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageBy {
    User,
    Team,
    Tier,
    Workspace,
}

/// The usage report's format.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
}

/// `GET /v1/admin/usage`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// From this time (ms since the epoch; default: 30 days ago). Usage is
    /// kept by the hour: the window starts at the hour.
    pub since_ms: Option<i64>,
    /// user (default), team, tier or workspace.
    #[param(inline)]
    pub by: Option<UsageBy>,
    /// json (default) or csv.
    #[param(inline)]
    pub format: Option<Format>,
}

/// Workspace hours and cost over a window, by user, tier or workspace,
/// with the share while idle (admins).
#[utoipa::path(get, path = "/v1/admin/usage", params(UsageQuery),
    responses((status = 200, description = "The report, as JSON or (format=csv) CSV",
            content((UsageReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn usage(
    AxState(s): AxState<AppState>,
    a: Auth,
    Q(q): Q<UsageQuery>,
) -> Result<Response> {
    a.require_admin()?;
    let since = q
        .since_ms
        .unwrap_or_else(|| s.svc.now() - 30 * 24 * 3_600_000);
    let by = match q.by.unwrap_or(UsageBy::User) {
        UsageBy::User => "user",
        UsageBy::Team => "team",
        UsageBy::Tier => "tier",
        UsageBy::Workspace => "workspace",
    };
    let r = s.svc.usage_report(since, by).await?;
    match q.format.unwrap_or(Format::Json) {
        Format::Json => Ok(Json(r).into_response()),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for row in &r.rows {
                w.serialize(row)
                    .map_err(|e| Error::internal(format!("csv: {e}")))?;
            }
            let body = w
                .into_inner()
                .map_err(|e| Error::internal(format!("csv: {e}")))?;
            Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
        }
    }
}
