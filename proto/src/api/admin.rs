//! What admins read: the audit log, the capacity and cost reports.

use super::NodeResources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// One audit log entry: a state-changing API request or a tunnel session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    /// Its place in the chain, from 1, without gaps.
    pub seq: i64,
    pub at_ms: i64,
    /// The user acting ("" for an anonymous request).
    pub actor: String,
    /// The id of the API token used (the `<id>` of `bt_<id>_…`).
    pub token_id: String,
    /// admin or member ("" for none).
    pub role: String,
    pub source_ip: String,
    pub user_agent: String,
    /// Method and route template, e.g. `POST /v1/workspaces/{name}/stop`.
    pub action: String,
    /// The request's path, with the owner it names (`?owner=`).
    pub resource: String,
    /// The HTTP status answered (101: a tunnel session opened).
    pub status: i64,
    /// The error code of a refusal or failure ("" on success).
    pub error_code: String,
    /// Also the `X-Request-Id` header of the answer.
    pub request_id: String,
    /// What changed, as JSON: the request (secrets left out) and the
    /// workspace's state before and after.
    pub diff: String,
    /// HMAC-SHA256 over the entry and the previous entry's MAC.
    pub mac: String,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<i64>,
}

/// Whether the audit log's chain holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked before the first break (all of them when ok).
    pub checked: i64,
    /// Entries written, by the chain's head.
    pub written: i64,
    /// Where the chain breaks, e.g. "entry 17 does not match its MAC".
    pub problem: Option<String>,
    /// The entry at which it breaks.
    pub broken_at: Option<i64>,
}

/// `GET /v1/admin/capacity`: what the fleet holds, what more fits, what
/// it costs, and when it runs out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CapacityReport {
    pub at_ms: i64,
    pub nodes: Vec<NodeCapacity>,
    pub tiers: Vec<TierCapacity>,
    pub cost: FleetCost,
    pub forecast: Vec<Forecast>,
}

/// One node in the capacity report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeCapacity {
    pub id: String,
    /// ready, cordoned, draining, unreachable, lost or joined.
    pub state: String,
    /// What it offers to workspaces.
    pub allocatable: NodeResources,
    /// What its workspaces reserve.
    pub allocated: NodeResources,
    /// What its workspaces use, as its last heartbeat to this coordinator
    /// said (CPU over the heartbeat interval; absent when it did not say
    /// lately: not connected here); `workspaces` is the allocated count.
    pub used: Option<NodeResources>,
    pub cached_images: Vec<String>,
    pub cached_prebuilds: u64,
    /// Its price per hour (its `price-per-hour` label, or the configured
    /// price of a node or a `spot=true` node).
    pub hourly: f64,
    /// The part of its price its workspaces' reservations account for.
    pub allocated_hourly: f64,
}

/// What more of a tier fits now, packed with the scheduler's rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TierCapacity {
    pub tier: String,
    /// More workspaces of the tier that fit now.
    pub fits: u64,
    /// Of those, by node.
    pub by_node: BTreeMap<String, u64>,
    /// Free but unusable for this tier on the nodes that take it, once
    /// they are full of it (fragmentation); `workspaces` is 0.
    pub stranded: NodeResources,
    /// What one workspace of the tier costs per hour on the cheapest node
    /// that can take one now (absent when none can).
    pub hourly: Option<f64>,
    /// With `more=N`: the nodes to add to hold N more.
    pub needed: Option<NodesNeeded>,
}

/// "To hold `more` more workspaces of the tier you need `nodes` more
/// nodes like `like`".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodesNeeded {
    pub more: u64,
    pub like: String,
    /// Absent when a node like it cannot take one at all.
    pub nodes: Option<u64>,
}

/// The fleet's cost per hour, the OpenCost way: what the nodes cost, what
/// the workspaces' reservations account for, and the rest (idle).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetCost {
    pub hourly: f64,
    pub allocated_hourly: f64,
    pub idle_hourly: f64,
}

/// When a resource runs out at the trend of the hourly samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Forecast {
    /// cpu_millis, memory_bytes, disk_bytes or workspaces.
    pub resource: String,
    pub allocated: u64,
    pub allocatable: u64,
    /// Hourly samples the trend is drawn through (the last 14 days).
    pub samples: u64,
    /// Absent when allocation does not grow (or too few samples).
    pub runs_out_in_hours: Option<f64>,
}

/// `GET /v1/admin/usage`: workspace hours and cost over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageReport {
    pub since_ms: i64,
    /// user, team, tier or workspace.
    pub by: String,
    pub rows: Vec<UsageRow>,
}

/// One line of the usage report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageRow {
    /// The user, team, tier or workspace id.
    pub key: String,
    pub workspaces: u64,
    /// Hours running.
    pub hours: f64,
    /// Of those, hours idle by the idle verdict.
    pub idle_hours: f64,
    /// What its reservations cost while running.
    pub cost: f64,
    /// Of that, while idle.
    pub idle_cost: f64,
}

/// A user's limits (absent: no limit); in `PUT /v1/admin/quotas/{user}`,
/// absent means the configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaLimits {
    /// Workspaces wanting to run at once.
    #[serde(
        default,
        deserialize_with = "super::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1000000))]
    pub running: Option<u64>,
    /// Workspaces kept (any state but deleted).
    #[serde(
        default,
        deserialize_with = "super::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1000000))]
    pub workspaces: Option<u64>,
    /// CPU of the workspaces wanting to run, in millicores.
    #[serde(
        default,
        deserialize_with = "super::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1000000000))]
    pub cpu_millis: Option<u64>,
    /// Memory of the workspaces wanting to run.
    #[serde(
        default,
        deserialize_with = "super::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1125899906842624_u64))]
    pub memory_bytes: Option<u64>,
    /// Disk of every workspace kept.
    #[serde(
        default,
        deserialize_with = "super::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 1125899906842624_u64))]
    pub disk_bytes: Option<u64>,
    /// What its running workspaces may cost in a calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000000000))]
    pub monthly_budget: Option<f64>,
}

/// What a user's workspaces count against their limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QuotaUsage {
    pub running: u64,
    pub workspaces: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// A user's quota: the limits in force, the admin's own for them, and
/// what is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Quota {
    /// The user (or, with `team`, the team).
    pub user: String,
    /// A team's quota: what its workspaces use, whoever owns them.
    #[serde(default)]
    pub team: bool,
    /// In force: the admin's for this user, else the configured default.
    pub limits: QuotaLimits,
    /// What an admin set for this user (the rest is the default).
    pub set_for_user: QuotaLimits,
    pub usage: QuotaUsage,
    /// What the user's running workspaces cost this calendar month.
    pub spent_this_month: f64,
}

/// A team and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Team {
    pub name: String,
    pub members: Vec<TeamMember>,
}

/// A member of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TeamMember {
    pub user: String,
    /// admin (manages members), member (acts on the team's workspaces) or
    /// viewer (reads them).
    pub role: String,
}

/// `POST /v1/teams`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// 1 to 40 of a-z, 0-9 and '-'.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    )]
    pub name: String,
}

/// `PUT /v1/teams/{team}/members/{user}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTeamMember {
    /// admin, member or viewer.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(admin|member|viewer)$"))]
    pub role: String,
}

/// Who a workspace is shared with, read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Shares {
    pub users: Vec<String>,
}
