//! The OpenAPI document: generated from the handlers and the shared API
//! types, with what the derive cannot say added, and the configured tier
//! names as the values `tier` takes.

use super::AppState;
use super::{
    audit, backups, exec, files, nodes, prebuilds, previews, quotas, reports, repos, reviews,
    secrets, signin, ssh_keys, teams, terminal, terminal_share, tokens, tunnels, workspaces,
};
use axum::extract::State as AxState;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, WorkspaceEvent};
use utoipa::OpenApi;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(openapi))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth API", description = "Cloud developer workspaces on a fleet of Linux nodes."),
    paths(
        workspaces::create_workspace, workspaces::list_workspaces, workspaces::get_workspace,
        workspaces::start_workspace, workspaces::stop_workspace, workspaces::keepalive, workspaces::idle_timeout, workspaces::delete_workspace,
        workspaces::events, exec::exec_workspace, exec::exec_stream, nodes::list_nodes,
        nodes::get_node, nodes::cordon_node, nodes::uncordon_node, nodes::drain_node,
        tokens::create_join_token, tokens::revoke_join_token, tokens::create_api_token, tokens::whoami, tokens::tiers,
        tunnels::connect_port, tunnels::connect_ssh, tunnels::ssh_host_key, tunnels::activity,
        ssh_keys::add_ssh_key, ssh_keys::list_ssh_keys, ssh_keys::delete_ssh_key,
        previews::set_visibility, previews::public_ports, terminal::terminal, signin::create_link,
        repos::init_log, repos::sync, repos::add_git_credential, repos::list_git_credentials,
        repos::delete_git_credential, repos::get_config, repos::set_dotfiles, prebuilds::run_prebuild, prebuilds::list_prebuilds,
        prebuilds::get_prebuild, prebuilds::prebuild_log, backups::list_backups,
        backups::backup_now, backups::restore, backups::settings, audit::list_audit,
        audit::verify_audit, reports::capacity, reports::usage, quotas::own_quota,
        quotas::get_quota, quotas::set_quota, quotas::get_team_quota, quotas::set_team_quota, teams::create_team, teams::list_teams,
        teams::set_member, teams::remove_member, teams::list_shares, teams::share, teams::unshare,
        secrets::list_secrets, secrets::set_secret, secrets::remove_secret, secrets::list_team_secrets,
        secrets::set_team_secret, secrets::remove_team_secret, files::list_root, files::read,
        files::write, files::delete, files::act, reviews::submit_review, reviews::list_reviews,
        reviews::review_step, terminal_share::watch
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
                text(crate::domain::validate::LABEL_KEY, 253),
                text(crate::domain::validate::LABEL_VALUE, 63),
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

/// The OpenAPI document, with this coordinator's tier names as the only
/// values `tier` takes and its tiers' longest keepalive as the most
/// `seconds` takes (they come from its configuration).
async fn openapi(AxState(s): AxState<AppState>) -> impl IntoResponse {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let names: Vec<String> = s.svc.tiers().all().into_iter().map(|t| t.name).collect();
    for schema in ["CreateWorkspace", "RunPrebuild"] {
        let Some(tier) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties/tier"))
            .and_then(|t| t.as_object_mut())
        else {
            continue;
        };
        tier.remove("pattern");
        // `null` stays a value where the type allows it (the default tier).
        let mut values = serde_json::json!(names);
        let nullable = tier
            .get("type")
            .and_then(|t| t.as_array())
            .is_some_and(|t| t.iter().any(|v| v == "null"))
            || tier.get("nullable") == Some(&serde_json::Value::Bool(true));
        if let (true, Some(v)) = (nullable, values.as_array_mut()) {
            v.push(serde_json::Value::Null);
        }
        tier.insert("enum".into(), values);
    }
    // The longest keepalive any tier allows.
    let most = s
        .svc
        .tiers()
        .all()
        .iter()
        .map(|t| t.max_keepalive_seconds)
        .max();
    if let Some(seconds) = doc
        .pointer_mut("/components/schemas/Keepalive/properties/seconds")
        .and_then(|t| t.as_object_mut())
    {
        seconds.insert("maximum".into(), serde_json::json!(most.unwrap_or(0)));
    }
    // The longest own idle timeout any tier allows (none when a tier that
    // never stops for idleness has no bound).
    let bounds: Vec<Option<u64>> = s
        .svc
        .tiers()
        .all()
        .iter()
        .map(
            |t| match (t.max_idle_timeout_seconds, t.idle_timeout_seconds) {
                (0, 0) => None,
                (0, timeout) => Some(timeout),
                (max, _) => Some(max),
            },
        )
        .collect();
    if let (Some(Some(most)), Some(seconds)) = (
        bounds
            .iter()
            .all(Option::is_some)
            .then(|| bounds.iter().flatten().max().copied()),
        doc.pointer_mut("/components/schemas/IdleTimeout/properties/seconds")
            .and_then(|t| t.as_object_mut()),
    ) {
        seconds.insert("maximum".into(), serde_json::json!(most));
    }
    Json(doc)
}

/// The status each route answers on success (its lowest declared 2xx), by
/// (method, route template).
pub fn success() -> std::collections::HashMap<(String, String), i64> {
    let doc = ApiDoc::openapi();
    let mut m = std::collections::HashMap::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ];
        for (method, op) in ops {
            let ok = op.iter().flat_map(|op| op.responses.responses.keys());
            let ok = ok
                .filter_map(|s| s.parse::<i64>().ok())
                .filter(|s| (200..300).contains(s))
                .min();
            if let Some(ok) = ok {
                m.insert((method.to_string(), path.clone()), ok);
            }
        }
    }
    m
}
