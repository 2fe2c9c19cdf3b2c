//! The REST/JSON API under `/v1` (axum), its OpenAPI document (utoipa,
//! generated from these handlers and types) and the event stream (SSE).
//! Adapters only: decisions live in `lifecycle`, `scheduler` and `store`.

use crate::auth::{self, Auth};
use crate::config::{Tier, Tiers};
use crate::controller::{Change, Controller, WorkspaceEvent};
use crate::error::{ApiError, ErrorBody, Result};
use crate::lifecycle::{self, Event, State};
use crate::store::{now_ms, NodeRow, WorkspaceFilter, WorkspaceRow};
use crate::validate;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State as AxState};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::agent as pb;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub ctl: Controller,
    pub tiers: Arc<Tiers>,
    pub ca_fingerprint: String,
    /// Wildcard domain of previews (`{port}-{workspace}.{domain}`), if any.
    pub preview_domain: Option<String>,
    /// Image of a workspace created without one (`--default-image`).
    pub default_image: Option<String>,
    /// Outstanding one-time sign-in links (`berth open`).
    pub links: crate::signin::Links,
}

/// Largest request body the API reads (JSON bodies are small; exec stdin
/// and SSH keys included).
pub const BODY_LIMIT: usize = 2 << 20;

/// A JSON object body whose rejection is one of our JSON errors (400).
/// Only an object: serde would also read a struct from an array.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let v = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) => v,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::too_large(format!(
                    "the body is larger than {} bytes",
                    BODY_LIMIT
                )))
            }
            Err(e) => return Err(ApiError::bad_request("invalid_body", e.body_text())),
        };
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(v)
            .map(Body)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
    }
}

/// Query parameters whose rejection is a JSON error (400).
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// A path parameter whose rejection is a JSON error (400).
pub struct P<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

/// Integers as JSON Schema counts them: `3` and `3.0` are the same integer.
mod whole {
    use serde::{de::Error, Deserialize, Deserializer};

    fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        if let Some(v) = n.as_u64() {
            return Ok(Some(v));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => {
                Ok(Some(f as u64))
            }
            _ => Err(D::Error::custom(format!(
                "invalid value {n}: expected a non-negative integer"
            ))),
        }
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        num(d)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match num(d)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("invalid value {v}: too large"))),
        }
    }
}

// ---- types ----

/// Request to create a workspace. Resources come from the tier (default
/// `small`), each overridable.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1 to 40 of a-z, 0-9 and '-'; unique among the caller's workspaces.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]
    pub name: String,
    /// Image reference, host[:port]/repository[:tag][@sha256:digest] (the
    /// host names a registry: it has a '.' or ':' or is localhost).
    #[schema(
        pattern = "^(localhost|[!-.0-?A-~]*[.:][!-.0-?A-~]*)/[a-z0-9._-]+(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?$",
        max_length = 512
    )]
    /// Omitted: the coordinator's default image (`--default-image`), if it has one.
    pub image: Option<String>,
    /// Resource tier (see `GET /v1/tiers`; the built-in ones are small,
    /// medium and large); default `small`, or the first configured tier.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")]
    pub tier: Option<String>,
    /// CPU in thousandths of a core.
    #[schema(minimum = 10, maximum = 64000)]
    #[serde(default, deserialize_with = "whole::opt_u32")]
    pub cpu_millis: Option<u32>,
    #[schema(minimum = 16777216, maximum = 274877906944_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub memory_bytes: Option<u64>,
    /// Size of the persistent /workspace volume.
    #[schema(minimum = 16777216, maximum = 1099511627776_u64)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub disk_bytes: Option<u64>,
    #[schema(minimum = 16, maximum = 65536)]
    #[serde(default, deserialize_with = "whole::opt_u32")]
    pub pids: Option<u32>,
    /// Environment variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL.
    pub env: Option<BTreeMap<String, String>>,
    /// Labels a node must carry.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Start once placed (default true).
    pub start: Option<bool>,
}

/// A workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub image: String,
    /// pending, scheduled, starting, running, stopping, stopped, deleting, deleted, failed or unknown.
    pub state: String,
    /// running, stopped or deleted.
    pub desired: String,
    pub node: Option<String>,
    pub generation: u64,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub exit_code: Option<i64>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
    pub env: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    /// The tier it was created from.
    pub tier: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&WorkspaceRow> for Workspace {
    fn from(w: &WorkspaceRow) -> Self {
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            owner: w.owner.clone(),
            image: w.image.clone(),
            state: w.state.as_str().into(),
            desired: w.desired.as_str().into(),
            node: w.node.clone(),
            generation: w.generation,
            reason: w.reason.clone(),
            ip: w.ip.clone(),
            exit_code: w.exit_code,
            cpu_millis: w.resources.cpu_millis,
            memory_bytes: w.resources.memory_bytes,
            disk_bytes: w.resources.disk_bytes,
            pids: w.pids,
            env: w.env.clone(),
            node_selector: w.node_selector.clone(),
            tier: w.tier.clone(),
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        }
    }
}

/// Filters of the workspace list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this state.
    #[param(
        pattern = "^(pending|scheduled|starting|running|stopping|stopped|deleting|deleted|failed|unknown)$"
    )]
    pub state: Option<String>,
    /// Only this node (admins).
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub node: Option<String>,
    /// Another user's workspaces (admins); `*` for everyone's.
    #[param(pattern = "^([a-z0-9._@-]{1,64}|[*])$")]
    pub owner: Option<String>,
}

/// Whose workspace a path names: the caller's unless an admin says otherwise.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    /// The owner of the workspace (admins only; default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
}

/// A command to run in a workspace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments (no NUL).
    #[schema(min_items = 1, max_items = 4096)]
    pub argv: Vec<String>,
    /// Environment variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without NUL.
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory, absolute (default /workspace).
    #[schema(pattern = "^/[^\\u0000]*$")]
    pub cwd: Option<String>,
    /// Text given on standard input.
    pub stdin: Option<String>,
    /// Seconds before the call gives up (default 60, at most 3600).
    #[schema(minimum = 1, maximum = 3600)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub timeout_seconds: Option<u64>,
    /// Who runs the command: the workspace's user (default, no capabilities)
    /// or root of the workspace's own user namespace (not root on the node).
    pub user: Option<ExecUser>,
}

/// Who an exec runs as inside the workspace.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecUser {
    User,
    Root,
}

/// What a command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    /// Standard output (UTF-8, invalid bytes replaced), at most 1 MiB.
    pub stdout: String,
    /// Standard error, at most 1 MiB.
    pub stderr: String,
    /// Output past 1 MiB per stream was dropped (the command ran to its end).
    pub truncated: bool,
}

/// A node.
#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    pub id: String,
    /// joined, ready, unreachable or lost.
    pub status: String,
    pub connected_here: bool,
    pub cordoned: bool,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    pub cached_images: Vec<String>,
    pub capacity: NodeResources,
    pub allocated: NodeResources,
    pub agent_version: String,
    pub last_seen_ms: i64,
}

/// Amounts of resources on a node.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub workspaces: u32,
}

/// Request for a join token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(default, deserialize_with = "whole::opt_u64")]
    pub ttl_seconds: Option<u64>,
}

/// A new join token: shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenCreated {
    pub token: String,
    pub expires_at_ms: i64,
}

/// Request for an API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    #[schema(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub user: String,
    /// admin or member.
    #[schema(pattern = "^(admin|member)$")]
    pub role: String,
}

/// A new API token: shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenCreated {
    pub token: String,
    pub user: String,
    pub role: String,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub role: String,
}

// ---- OpenAPI ----

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth API", description = "Cloud developer workspaces on a fleet of Linux nodes."),
    paths(
        create_workspace, list_workspaces, get_workspace, start_workspace, stop_workspace,
        delete_workspace, exec_workspace, exec_stream, events, list_nodes, get_node, cordon_node,
        uncordon_node, drain_node, create_join_token, create_api_token, whoami, tiers,
        crate::tunnels::connect_port, crate::tunnels::connect_ssh, crate::tunnels::ssh_host_key,
        crate::tunnels::activity, crate::tunnels::add_ssh_key, crate::tunnels::list_ssh_keys,
        crate::tunnels::delete_ssh_key, crate::previews::set_visibility, crate::previews::public_ports,
        crate::terminal::terminal, crate::signin::create_link
    ),
    components(schemas(ErrorBody, WorkspaceEvent)),
    modifiers(&BearerAuth, &Constraints),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What the derive cannot say: the names and values allowed in the maps
/// and the NUL-free argv items (the same rules `validate` enforces).
struct Constraints;

impl utoipa::Modify for Constraints {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayItems, Object, Schema, Type};
        use utoipa::openapi::RefOr;
        let text = |pattern: &str, max: usize| {
            Schema::Object(
                Object::builder()
                    .schema_type(Type::String)
                    .pattern(Some(pattern))
                    .max_length(Some(max))
                    .build(),
            )
        };
        let no_nul = |max| text("^[^\\u0000]*$", max);
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // (schema, field, names, values, most entries)
        let maps = [
            (
                "CreateWorkspace",
                "env",
                text("^[A-Za-z_][A-Za-z0-9_]*$", 256),
                no_nul(32 * 1024),
                256,
            ),
            (
                "ExecBody",
                "env",
                text("^[A-Za-z_][A-Za-z0-9_]*$", 256),
                no_nul(32 * 1024),
                256,
            ),
            (
                "CreateWorkspace",
                "node_selector",
                text(validate::LABEL_KEY, 253),
                text(validate::LABEL_VALUE, 63),
                64,
            ),
        ];
        for (schema, field, names, values, most) in maps {
            let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema) else {
                continue;
            };
            let Some(RefOr::T(Schema::Object(f))) = o.properties.get_mut(field) else {
                continue;
            };
            f.property_names = Some(Box::new(names));
            f.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::RefOr(RefOr::T(values)),
            ));
            f.max_properties = Some(most);
        }
        if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut("ExecBody") {
            if let Some(RefOr::T(Schema::Array(a))) = o.properties.get_mut("argv") {
                a.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(no_nul(1 << 20))));
            }
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/v1/workspaces",
            post(create_workspace).get(list_workspaces),
        )
        .route(
            "/v1/workspaces/{name}",
            get(get_workspace).delete(delete_workspace),
        )
        .route("/v1/workspaces/{name}/start", post(start_workspace))
        .route("/v1/workspaces/{name}/stop", post(stop_workspace))
        .route("/v1/workspaces/{name}/exec", post(exec_workspace))
        .route("/v1/workspaces/{name}/exec/stream", post(exec_stream))
        .route("/v1/events", get(events))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/cordon", post(cordon_node))
        .route("/v1/nodes/{id}/uncordon", post(uncordon_node))
        .route("/v1/nodes/{id}/drain", post(drain_node))
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/tokens", post(create_api_token))
        .route("/v1/whoami", get(whoami))
        .route("/v1/tiers", get(tiers))
        .merge(crate::tunnels::routes())
        .merge(crate::previews::routes())
        .merge(crate::terminal::routes())
        .merge(crate::signin::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::method_not_allowed("this endpoint does not take that method")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .with_state(state)
}

/// Answers 413 to a body announced larger than `BODY_LIMIT` before any of
/// it is read (nor a "100 Continue" sent); a body that only turns out larger
/// is cut by `DefaultBodyLimit`.
async fn refuse_large_bodies(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::too_large(format!("the body is larger than {BODY_LIMIT} bytes"))
            .into_response();
    }
    next.run(req).await
}

/// The OpenAPI document, with this coordinator's tier names as the only
/// values `tier` takes (they come from its configuration).
async fn openapi(AxState(s): AxState<AppState>) -> impl IntoResponse {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let names: Vec<String> = s.tiers.all().into_iter().map(|t| t.name).collect();
    if let Some(tier) = doc
        .pointer_mut("/components/schemas/CreateWorkspace/properties/tier")
        .and_then(|t| t.as_object_mut())
    {
        tier.remove("pattern");
        tier.insert("enum".into(), serde_json::json!(names));
    }
    Json(doc)
}

// ---- workspaces ----

pub(crate) fn owner_of(a: &Auth, asked: Option<String>) -> Result<String> {
    match asked {
        Some(o) if o != a.user => {
            if a.admin {
                validate::user_name(&o)?;
                Ok(o)
            } else {
                Err(ApiError::forbidden(
                    "members can only act on their own workspaces",
                ))
            }
        }
        _ => Ok(a.user.clone()),
    }
}

/// The caller's (or `owner`'s) workspace named `name`; a deleted one is gone
/// (404), as for every request after its deletion.
pub(crate) async fn find(s: &AppState, owner: &str, name: &str) -> Result<WorkspaceRow> {
    validate::workspace_name(name)?;
    match s.ctl.store().workspace_by_name(owner, name).await? {
        Some(w) if w.state != State::Deleted => Ok(w),
        _ => Err(ApiError::not_found(format!("no workspace named {name:?}"))),
    }
}

/// Create a workspace: stored (acknowledged) first, then placed and started.
#[utoipa::path(post, path = "/v1/workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateWorkspace>,
) -> Result<(StatusCode, Json<Workspace>)> {
    validate::workspace_name(&req.name)?;
    let image = match req.image.clone().or_else(|| s.default_image.clone()) {
        Some(i) => i,
        None => {
            return Err(ApiError::invalid(
                "invalid_image",
                "image is required: this coordinator has no default image (--default-image)",
            ))
        }
    };
    validate::image(&image)?;
    let tier_name = req.tier.as_deref().unwrap_or(s.tiers.default_name());
    let tier = s
        .tiers
        .get(tier_name)
        .ok_or_else(|| ApiError::invalid("invalid_tier", format!("no tier named {tier_name:?}")))?;
    let cpu = req.cpu_millis.unwrap_or(tier.cpu_millis);
    let mem = req.memory_bytes.unwrap_or(tier.memory_bytes);
    let disk = req.disk_bytes.unwrap_or(tier.disk_bytes);
    let pids = req.pids.unwrap_or(tier.pids);
    // Small floors: a workspace's init starts with a full core whatever its
    // quota, and 16 MiB holds a shell (the agent's own floor is 8 MiB).
    use crate::config::bounds;
    if !bounds::CPU_MILLIS.contains(&cpu) {
        return Err(ApiError::invalid(
            "invalid_resources",
            "cpu_millis must be 10 to 64000",
        ));
    }
    if !bounds::MEMORY_BYTES.contains(&mem) {
        return Err(ApiError::invalid(
            "invalid_resources",
            "memory_bytes must be 16 MiB to 256 GiB",
        ));
    }
    if !bounds::DISK_BYTES.contains(&disk) {
        return Err(ApiError::invalid(
            "invalid_resources",
            "disk_bytes must be 16 MiB to 1 TiB",
        ));
    }
    if !bounds::PIDS.contains(&pids) {
        return Err(ApiError::invalid(
            "invalid_resources",
            "pids must be 16 to 65536",
        ));
    }
    let env = req.env.unwrap_or_default();
    if env.len() > 256 {
        return Err(ApiError::invalid(
            "invalid_env",
            "at most 256 environment variables",
        ));
    }
    for (k, v) in &env {
        validate::env_key(k)?;
        if v.chars().count() > 32 * 1024 || v.contains('\0') {
            return Err(ApiError::invalid(
                "invalid_env",
                format!("value of {k} is too long or has a NUL"),
            ));
        }
    }
    let selector = req.node_selector.unwrap_or_default();
    if selector.len() > 64 {
        return Err(ApiError::invalid(
            "invalid_node_selector",
            "at most 64 labels",
        ));
    }
    for (k, v) in &selector {
        validate::label(k, v)?;
    }
    let now = now_ms();
    let lc = lifecycle::Workspace::new(req.start.unwrap_or(true));
    let w = WorkspaceRow {
        id: format!("w{}", hex::encode(rand::random::<[u8; 8]>())),
        name: req.name,
        owner: a.user.clone(),
        image,
        resources: crate::scheduler::Resources {
            cpu_millis: u64::from(cpu),
            memory_bytes: mem,
            disk_bytes: disk,
        },
        pids,
        env,
        node_selector: selector,
        tier: tier.name.clone(),
        nested_userns: tier.nested_userns,
        egress_allow: tier.egress_allow.clone(),
        state: lc.state,
        desired: lc.desired,
        node: None,
        generation: lc.generation,
        version: 0,
        reason: None,
        ip: None,
        exit_code: None,
        created_at_ms: now,
        updated_at_ms: now,
        state_since_ms: now,
    };
    s.ctl.store().insert_workspace(&w).await?;
    s.ctl.published(&w);
    s.ctl.wake();
    Ok((StatusCode::CREATED, Json(Workspace::from(&w))))
}

/// List workspaces: the caller's, or (admins) anyone's.
#[utoipa::path(get, path = "/v1/workspaces", params(ListQuery),
    responses((status = 200, body = Vec<Workspace>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_workspaces(
    AxState(s): AxState<AppState>,
    a: Auth,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<Workspace>>> {
    let owner = match q.owner.as_deref() {
        Some("*") if a.admin => None,
        Some("*") => {
            return Err(ApiError::forbidden(
                "only admins list everyone's workspaces",
            ))
        }
        _ => Some(owner_of(&a, q.owner.clone())?),
    };
    let state =
        match q.state.as_deref() {
            Some(st) => Some(State::parse(st).ok_or_else(|| {
                ApiError::invalid("invalid_state", format!("no state named {st:?}"))
            })?),
            None => None,
        };
    if let Some(n) = &q.node {
        validate::node_id(n)?;
    }
    let rows = s
        .ctl
        .store()
        .workspaces(&WorkspaceFilter {
            owner,
            state,
            node: q.node,
        })
        .await?;
    Ok(Json(rows.iter().map(Workspace::from).collect()))
}

/// Get one workspace.
#[utoipa::path(get, path = "/v1/workspaces/{name}", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Workspace>> {
    let owner = owner_of(&a, q.owner)?;
    Ok(Json(Workspace::from(&find(&s, &owner, &name).await?)))
}

async fn intent(
    s: &AppState,
    a: &Auth,
    name: &str,
    owner: Option<String>,
    ev: Event,
) -> Result<Json<Workspace>> {
    let owner = owner_of(a, owner)?;
    let w = find(s, &owner, name).await?;
    match s.ctl.change(&w.id, &[ev], None, true, None).await {
        Ok(stored) => Ok(Json(Workspace::from(&stored))),
        Err(Change::Invalid(e)) => Err(ApiError::conflict(
            "invalid_state",
            format!("workspace {name} is {}: {e}", e.state.as_str()),
        )),
        Err(Change::Gone) => Err(ApiError::not_found(format!("no workspace named {name:?}"))),
        Err(Change::Store(e)) => Err(e),
    }
}

/// Start a stopped (or failed) workspace.
#[utoipa::path(post, path = "/v1/workspaces/{name}/start", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn start_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    Ok((
        StatusCode::ACCEPTED,
        intent(&s, &a, &name, q.owner, Event::StartRequested).await?,
    ))
}

/// Stop a workspace; its /workspace volume is kept.
#[utoipa::path(post, path = "/v1/workspaces/{name}/stop", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn stop_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    Ok((
        StatusCode::ACCEPTED,
        intent(&s, &a, &name, q.owner, Event::StopRequested).await?,
    ))
}

/// Delete a workspace and its volume (once deleted, it answers 404).
#[utoipa::path(delete, path = "/v1/workspaces/{name}", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 202, body = Workspace), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn delete_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<(StatusCode, Json<Workspace>)> {
    Ok((
        StatusCode::ACCEPTED,
        intent(&s, &a, &name, q.owner, Event::DeleteRequested).await?,
    ))
}

/// An exec the API accepted: where it runs and what the agent is asked.
struct Exec {
    node: String,
    req: pb::ExecRequest,
    stdin: Vec<u8>,
    timeout: Duration,
}

/// Checks an exec request and finds the caller's running workspace.
async fn accept_exec(
    s: &AppState,
    a: &Auth,
    name: &str,
    owner: Option<String>,
    req: ExecBody,
) -> Result<Exec> {
    let owner = owner_of(a, owner)?;
    let w = find(s, &owner, name).await?;
    if req.argv.is_empty() || req.argv.len() > 4096 || req.argv.iter().any(|x| x.contains('\0')) {
        return Err(ApiError::invalid(
            "invalid_command",
            "argv needs 1 to 4096 arguments without NUL",
        ));
    }
    let env = req.env.unwrap_or_default();
    for k in env.keys() {
        validate::env_key(k)?;
    }
    if env.values().any(|v| v.contains('\0'))
        || req
            .cwd
            .as_deref()
            .is_some_and(|c| c.contains('\0') || !c.starts_with('/'))
    {
        return Err(ApiError::invalid(
            "invalid_command",
            "cwd must be absolute; no NUL in values",
        ));
    }
    let timeout = req.timeout_seconds.unwrap_or(60);
    if !(1..=3600).contains(&timeout) {
        return Err(ApiError::invalid(
            "invalid_command",
            "timeout_seconds must be 1 to 3600",
        ));
    }
    if w.state != State::Running {
        return Err(ApiError::conflict(
            "not_running",
            format!("workspace {name} is {}", w.state.as_str()),
        ));
    }
    Ok(Exec {
        node: w.node.clone().unwrap_or_default(),
        req: pb::ExecRequest {
            name: w.id.clone(),
            argv: req.argv,
            env,
            cwd: req.cwd.unwrap_or_default(),
            user: match req.user {
                Some(ExecUser::Root) => "root".into(),
                _ => String::new(),
            },
            ..Default::default()
        },
        stdin: req.stdin.unwrap_or_default().into_bytes(),
        timeout: Duration::from_secs(timeout),
    })
}

/// The API error of an agent's refusal to run a command.
fn exec_refused(e: pb::Error) -> ApiError {
    match e.code.as_str() {
        "not_found" | "conflict" => ApiError::conflict("not_running", e.message),
        "invalid_request" => ApiError::invalid("invalid_command", e.message),
        _ => ApiError::node("node_error", format!("{}: {}", e.code, e.message)),
    }
}

fn exec_timed_out(timeout: Duration) -> ApiError {
    // The agent ends the command when its stream goes.
    ApiError::timeout(
        "exec_timeout",
        format!(
            "the command did not finish in {} s and was killed",
            timeout.as_secs()
        ),
    )
}

/// Run a command in a running workspace and return its output and exit code.
/// Each output stream is cut at 1 MiB (`truncated`); `exec/stream` carries all of it.
#[utoipa::path(post, path = "/v1/workspaces/{name}/exec", params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery), request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 504, body = ErrorBody)))]
async fn exec_workspace(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<ExecBody>,
) -> Result<Json<ExecResult>> {
    let x = accept_exec(&s, &a, &name, q.owner, req).await?;
    let out = s
        .ctl
        .agents()
        .exec(&x.node, x.req, x.stdin, x.timeout)
        .await
        .map_err(|e| match e {
            crate::agents::LinkError::Timeout(_) => exec_timed_out(x.timeout),
            e => e.into(),
        })?;
    let done = out.map_err(exec_refused)?;
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
async fn exec_stream(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
    Body(req): Body<ExecBody>,
) -> Result<axum::response::Response> {
    let x = accept_exec(&s, &a, &name, q.owner, req).await?;
    let (send, recv) = s
        .ctl
        .agents()
        .exec_stream(&x.node, x.req)
        .await?
        .map_err(exec_refused)?;
    let frames = crate::agents::relay_exec(send, recv, x.stdin, x.timeout, x.node);
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

/// Server-sent events: one `workspace` event (JSON `WorkspaceEvent`) per
/// state change of a workspace the caller can see.
#[utoipa::path(get, path = "/v1/events",
    responses((status = 200, description = "text/event-stream of WorkspaceEvent", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody)))]
async fn events(
    AxState(s): AxState<AppState>,
    a: Auth,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>> {
    let mut rx = s.ctl.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if a.admin || ev.owner == a.user {
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        if tx
                            .send(SseEvent::default().event("workspace").data(data))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let ev = SseEvent::default().event("lagged").data(n.to_string());
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(
    f: F,
) -> impl Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

// ---- nodes ----

fn node_json(s: &AppState, n: &NodeRow) -> Node {
    Node {
        id: n.id.clone(),
        status: n.status.clone(),
        connected_here: s.ctl.agents().is_connected(&n.id),
        cordoned: n.cordoned,
        draining: n.draining,
        labels: n.labels.clone(),
        cached_images: n.cached_images.iter().cloned().collect(),
        capacity: NodeResources {
            cpu_millis: n.capacity.cpu_millis,
            memory_bytes: n.capacity.memory_bytes,
            disk_bytes: n.capacity.disk_bytes,
            workspaces: n.slots,
        },
        allocated: NodeResources {
            cpu_millis: n.allocated.cpu_millis,
            memory_bytes: n.allocated.memory_bytes,
            disk_bytes: n.allocated.disk_bytes,
            workspaces: n.allocated_slots,
        },
        agent_version: n.agent_version.clone(),
        last_seen_ms: n.last_seen_ms,
    }
}

/// List nodes (admins).
#[utoipa::path(get, path = "/v1/nodes",
    responses((status = 200, body = Vec<Node>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_nodes(AxState(s): AxState<AppState>, a: Auth) -> Result<Json<Vec<Node>>> {
    a.require_admin()?;
    let nodes = s.ctl.store().nodes().await?;
    Ok(Json(nodes.iter().map(|n| node_json(&s, n)).collect()))
}

async fn node_row(s: &AppState, id: &str) -> Result<NodeRow> {
    validate::node_id(id)?;
    s.ctl
        .store()
        .node(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no node {id:?}")))
}

/// Get a node (admins).
#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_node(AxState(s): AxState<AppState>, a: Auth, P(id): P<String>) -> Result<Json<Node>> {
    a.require_admin()?;
    Ok(Json(node_json(&s, &node_row(&s, &id).await?)))
}

async fn set_flags(s: &AppState, id: &str, cordoned: bool, draining: bool) -> Result<Json<Node>> {
    node_row(s, id).await?;
    s.ctl.store().set_node_flags(id, cordoned, draining).await?;
    Ok(Json(node_json(s, &node_row(s, id).await?)))
}

/// Cordon a node: nothing new is placed on it.
#[utoipa::path(post, path = "/v1/nodes/{id}/cordon", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn cordon_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    set_flags(&s, &id, true, false).await
}

/// Uncordon a node (also ends a drain).
#[utoipa::path(post, path = "/v1/nodes/{id}/uncordon", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn uncordon_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    set_flags(&s, &id, false, false).await
}

/// Drain a node: cordon it and stop its running workspaces (their volumes
/// stay on the node; moving them to another node comes with backups).
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", params(("id" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Node), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn drain_node(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(id): P<String>,
) -> Result<Json<Node>> {
    a.require_admin()?;
    let n = set_flags(&s, &id, true, true).await?;
    let on = s
        .ctl
        .store()
        .workspaces(&WorkspaceFilter {
            node: Some(id.clone()),
            ..Default::default()
        })
        .await?;
    for w in on
        .iter()
        .filter(|w| matches!(w.state, State::Running | State::Starting))
    {
        s.ctl.apply(&w.id, &[Event::StopRequested], None).await;
    }
    Ok(n)
}

// ---- tokens ----

/// Create a one-time join token for a node (admins).
#[utoipa::path(post, path = "/v1/join-tokens", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_join_token(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenCreated>)> {
    a.require_admin()?;
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(1..=7 * 86_400).contains(&ttl) {
        return Err(ApiError::invalid(
            "invalid_ttl",
            "ttl_seconds must be 1 to 604800",
        ));
    }
    let (token, expires_at_ms) =
        auth::create_join_token(s.ctl.store(), &s.ca_fingerprint, &a.user, ttl).await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            token,
            expires_at_ms,
        }),
    ))
}

/// Create an API token for a user (admins).
#[utoipa::path(post, path = "/v1/tokens", request_body = CreateApiToken,
    responses((status = 201, body = ApiTokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_api_token(
    AxState(s): AxState<AppState>,
    a: Auth,
    Body(req): Body<CreateApiToken>,
) -> Result<(StatusCode, Json<ApiTokenCreated>)> {
    a.require_admin()?;
    validate::user_name(&req.user)?;
    let admin = match req.role.as_str() {
        "admin" => true,
        "member" => false,
        r => {
            return Err(ApiError::invalid(
                "invalid_role",
                format!("role must be admin or member, not {r:?}"),
            ))
        }
    };
    let token = auth::create_api_token(s.ctl.store(), &req.user, admin).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenCreated {
            token,
            user: req.user,
            role: req.role,
        }),
    ))
}

/// The caller's identity.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(a: Auth) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: a.user.clone(),
        role: if a.admin { "admin" } else { "member" }.into(),
    })
}

/// The resource tiers.
#[utoipa::path(get, path = "/v1/tiers", responses((status = 200, body = Vec<Tier>), (status = 401, body = ErrorBody)))]
async fn tiers(AxState(s): AxState<AppState>, _a: Auth) -> Json<Vec<Tier>> {
    Json(s.tiers.all())
}
