//! The web portal, served by the coordinator itself on the API and its
//! auth (the `berth_token` cookie `/w/login` sets): server-rendered pages
//! (`maud`, which escapes every value) with a little plain JavaScript, and
//! the front-end packages bundled into the binary (build.rs).
//!
//! - `/w/`: the caller's workspaces and their teams', live: the page reads
//!   the event stream and re-renders the table from `/w/?rows=true` (the same
//!   Rust that rendered it first); create, start, stop, delete, and links
//!   to the terminal, the editor, the previews and VS Code.
//! - `/w/{ws}/editor`: a file explorer and Monaco over the file API, the
//!   terminal beside it; a save sends the version it read (`If-Match`), so
//!   a change made elsewhere is shown, not overwritten.
//!
//! Every change the pages make is an API request with the cookie from this
//! origin, which `auth::api_token` requires (no other site's page can).

use super::auth::{self, Auth};
use super::{AppState, P};
use crate::domain::lifecycle::State;
use crate::domain::team::Need;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::WorkspaceFilter;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

mod admin;
mod index;
mod prebuilds;
mod reviews;

include!(concat!(env!("OUT_DIR"), "/web/monaco.rs"));

/// The version of Monaco bundled, in its asset paths (cached for a year).
const MONACO_VERSION: &str = "0.52.2";
const CSS: &str = include_str!("portal/portal.css");
const LIST_JS: &str = include_str!("portal/list.js");
const EDITOR_JS: &str = include_str!("portal/editor.js");
const ADMIN_JS: &str = include_str!("portal/admin.js");
const REVIEWS_JS: &str = include_str!("portal/reviews.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/w/", get(list_page))
        .route("/w/{ws}/editor", get(editor_page))
        .route("/w/admin", get(admin::admin_page))
        .route("/w/reviews", get(reviews::reviews_page))
        .route("/w/index", get(index::index_page))
        .route(
            "/w/assets/reviews.js",
            get(|| asset(REVIEWS_JS, "text/javascript")),
        )
        .route(
            "/w/assets/admin.js",
            get(|| asset(ADMIN_JS, "text/javascript")),
        )
        .route("/w/assets/portal.css", get(|| asset(CSS, "text/css")))
        .route(
            "/w/assets/list.js",
            get(|| asset(LIST_JS, "text/javascript")),
        )
        .route(
            "/w/assets/editor.js",
            get(|| asset(EDITOR_JS, "text/javascript")),
        )
        .route("/w/assets/monaco-{version}/{*path}", get(monaco))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A file of the bundled Monaco.
async fn monaco(P((version, path)): P<(String, String)>) -> Response {
    let found = MONACO.iter().find(|(p, _)| *p == path);
    let Some((_, body)) = found.filter(|_| version == MONACO_VERSION) else {
        return Error::not_found("no such asset").into_response();
    };
    let kind = match path.rsplit('.').next() {
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("ttf") => "font/ttf",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        *body,
    )
        .into_response()
}

/// The page around `body`, with the signed-in user in its header.
pub(super) fn layout(title: &str, user: &Auth, scripts: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="stylesheet" href="/w/assets/portal.css";
            }
            body {
                header.top {
                    a.brand href="/w/" { "Berth" }
                    nav { a href="/w/" { "Workspaces" } " " a href="/w/reviews" { "Reviews" }
                        @if user.admin { " " a href="/w/admin" { "Admin" } } }
                    span.user data-user=(user.user) { (user.user) @if user.admin { " (admin)" } }
                }
                main { (body) }
                (scripts)
            }
        }
    }
}

pub(super) fn page(m: Markup) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        ],
        m.into_string(),
    )
        .into_response()
}

/// The caller, or the sign-in page to come back from.
pub(super) async fn caller(
    s: &AppState,
    h: &HeaderMap,
    back: &str,
) -> Result<std::result::Result<Auth, Response>> {
    Ok(match auth::optional(s, h).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) | Err(_) => Err(Redirect::to(&format!(
            "/w/login?next={}",
            super::signin::urlencode(back)
        ))
        .into_response()),
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Only the table's rows (what the page re-renders on an event).
    #[serde(default)]
    rows: bool,
}

/// The caller's workspaces, then their teams' (each once), by name.
pub(super) async fn visible(s: &AppState, a: &Auth) -> Result<Vec<WorkspaceRow>> {
    let mut rows = s
        .svc
        .workspaces(&WorkspaceFilter {
            owner: Some(a.user.clone()),
            ..Default::default()
        })
        .await?;
    for t in s.svc.teams(&a.user, false).await? {
        let more = s
            .svc
            .workspaces(&WorkspaceFilter {
                team: Some(t.name.clone()),
                ..Default::default()
            })
            .await?;
        rows.extend(more.into_iter().filter(|w| w.owner != a.user));
    }
    rows.retain(|w| w.state != State::Deleted);
    rows.sort_by(|x, y| (&x.name, &x.owner).cmp(&(&y.name, &y.owner)));
    Ok(rows)
}

/// A time as RFC 3339 (UTC).
pub(super) fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `?owner=…` for a page or request about another user's workspace ("" for the caller's).
pub(super) fn owner_query(owner: &str, caller: &str) -> String {
    if owner == caller {
        String::new()
    } else {
        format!("?owner={owner}")
    }
}

pub(super) fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 30))
}

/// A size in MiB under a GiB (to a tenth under 10 MiB), else in GiB.
fn size(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    match bytes {
        b if b < 10 << 20 => format!("{mib:.1} MiB"),
        b if b < 1 << 30 => format!("{mib:.0} MiB"),
        b => format!("{} GiB", gib(b)),
    }
}

/// What a workspace uses beside what it is given: what its node measured
/// while it runs, else only what it is given.
fn uses(v: &berth_proto::api::Workspace) -> Markup {
    let given = [
        ("CPU", format!("{}m", v.cpu_millis), v.cpu_millis),
        ("memory", size(v.memory_bytes), v.memory_bytes),
        ("disk", size(v.disk_bytes), v.disk_bytes),
    ];
    let used = v
        .usage
        .map(|u| [u.cpu_millis, u.memory_bytes, u.disk_bytes]);
    html! {
        @for (i, (what, of, max)) in given.iter().enumerate() {
            span.amount {
                (what) " "
                @match used {
                    Some(u) => {
                        @let now = if i == 0 { format!("{}m", u[i]) } else { size(u[i]) };
                        meter min="0" max=(max) value=(u[i].min(*max)) aria-label={(what) " used of given"} {}
                        " " (now) " / " (of)
                    }
                    None => { (of) }
                }
            }
            br;
        }
    }
}

/// One workspace's row.
fn row(s: &AppState, a: &Auth, w: &WorkspaceRow, shared: &[String]) -> Markup {
    let v = s.svc.view(w);
    let owner_q = owner_query(&w.owner, &a.user);
    let source = match &v.repo {
        Some(r) => format!(
            "{}@{}",
            r.url
                .trim_end_matches(".git")
                .rsplit('/')
                .next()
                .unwrap_or(&r.url),
            r.branch.as_deref().unwrap_or("default")
        ),
        None => v.image.rsplit('/').next().unwrap_or(&v.image).to_string(),
    };
    let running = v.state == berth_proto::api::State::Running;
    let idle = v
        .idle
        .as_ref()
        .map(|i| i.summary.clone())
        .unwrap_or_default();
    html! {
        tr data-ws=(v.name) data-q=(owner_q) data-state=(v.state.as_str()) {
            td data-label="Name" { strong { (v.name) } @if w.owner != a.user { br; small { (w.owner) } } }
            td data-label="State" { span class={"state " (v.state.as_str())} { (v.state.as_str()) }
                 @if let Some(r) = &v.reason { br; small.reason { (r) } } }
            td data-label="Source" { (source)
                @if let Some(pb) = v.init.as_ref().and_then(|i| i.prebuild.as_ref()) {
                    br; small.prebuild { "prebuild " (pb.commit.chars().take(8).collect::<String>()) " (" (pb.outcome) ")" }
                } }
            td data-label="Tier" { (if v.tier.is_empty() { "-" } else { &v.tier }) }
            td data-label="Node" { (v.node.as_deref().unwrap_or("-")) }
            td.use data-label="Uses / given" { (uses(&v)) }
            td.idle data-label="Idle" { (idle)
                @if let Some(at) = v.idle.as_ref().and_then(|i| i.stops_at_ms) { br; "stops at " (when(at)) " if still idle" } }
            td.shares data-label="Shared with" {
                @for u in shared { span.share { (u) " " button.unshare data-unshare=(u) aria-label={"Stop sharing with " (u)} { "×" } } " " }
                input name="share" aria-label={"Share " (v.name) " read-only with"} placeholder="user";
                button data-act="share" { "Share" }
            }
            td.actions data-label="Open" {
                @if v.repo.is_some() { a href={"/v1/workspaces/" (v.name) "/init-log" (owner_q)} { "Log" } }
                @if running {
                    @for p in v.init.as_ref().map(|i| i.ports.as_slice()).unwrap_or_default() {
                        a.preview href={"/w/" (v.id) "/" (p.port) "/"} title={"Preview of port " (p.port)} {
                            (if p.label.is_empty() { format!("port {}", p.port) } else { p.label.clone() }) }
                    }
                    a href={"/w/" (v.name) "/editor" (owner_q)} { "Editor" }
                    a href={"/w/" (v.name) "/terminal" (owner_q)} { "Terminal" }
                    a href={"vscode://vscode-remote/ssh-remote+berth." (v.name) "/workspace"}
                        title="Remote-SSH: run `berth config-ssh` once" { "VS Code" }
                    button data-act="stop" { "Stop" }
                } @else {
                    button data-act="start" { "Start" }
                }
                button.danger data-act="delete" { "Delete" }
            }
        }
    }
}

/// The table's rows, each with who its workspace is shared with.
async fn rows(s: &AppState, a: &Auth, ws: &[WorkspaceRow]) -> Markup {
    let mut out = Vec::with_capacity(ws.len());
    for w in ws {
        let shared = s.svc.shares(&w.owner, &w.name).await.unwrap_or_default();
        out.push(row(s, a, w, &shared));
    }
    html! {
        tbody #rows {
            @for r in out { (r) }
            @if ws.is_empty() { tr { td colspan="9" { "No workspaces yet: create one above." } } }
        }
    }
}

/// The newest prebuilds (five each) of the repositories `ws` were made from.
async fn repo_prebuilds(
    s: &AppState,
    ws: &[WorkspaceRow],
) -> Result<Vec<berth_proto::api::Prebuild>> {
    let repos: std::collections::BTreeSet<&str> = ws
        .iter()
        .filter_map(|w| w.repo.as_ref().map(|r| r.url.as_str()))
        .collect();
    let mut all = Vec::new();
    for url in repos {
        all.extend(s.svc.prebuilds(Some(url)).await?.into_iter().take(5));
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.created_at_ms));
    Ok(all)
}

/// `/w/`: the workspaces page (or, with `rows=true`, its table's rows).
async fn list_page(
    AxState(s): AxState<AppState>,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let a = match caller(&s, &headers, "/w/").await? {
        Ok(a) => a,
        Err(to_login) => return Ok(to_login),
    };
    let ws = visible(&s, &a).await?;
    if q.rows {
        return Ok(page(rows(&s, &a, &ws).await));
    }
    let prebuilds = repo_prebuilds(&s, &ws).await?;
    let body = html! {
        h1 { "Workspaces" }
        form #create {
            fieldset {
                legend { "New workspace" }
                label { "Name " input name="name" required pattern="[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?" autocomplete="off"; }
                label { "Repository " input name="repo" type="url" placeholder="https://git.example/app.git"; }
                label { "Branch " input name="branch" placeholder="default"; }
                label { "or image " input name="image" placeholder="registry/image:tag"; }
                label { "Tier " input name="tier" placeholder="default"; }
                button type="submit" { "Create" }
            }
            p #message role="status" {}
        }
        p.hint { "VS Code: run " code { "berth config-ssh" } " once; then each VS Code link opens its workspace over Remote-SSH." }
        div.scroll {
            table #workspaces {
                thead { tr {
                    th { "Name" } th { "State" } th { "Source" } th { "Tier" } th { "Node" }
                    th { "Uses / given" } th { "Idle" } th { "Shared with (read-only)" } th { "Open" }
                } }
                (rows(&s, &a, &ws).await)
            }
        }
        @if !prebuilds.is_empty() {
            section aria-labelledby="pb-h" {
                h2 #pb-h { "Prebuilds of these repositories" }
                (prebuilds::table(&prebuilds))
            }
        }
    };
    let scripts = html! { script src="/w/assets/list.js" {} };
    Ok(page(layout("Workspaces", &a, scripts, body)))
}

#[derive(Debug, Deserialize)]
struct OwnerParam {
    owner: Option<String>,
}

/// `/w/{ws}/editor`: the file explorer, Monaco and the terminal.
async fn editor_page(
    AxState(s): AxState<AppState>,
    P(ws): P<String>,
    axum::extract::Query(q): axum::extract::Query<OwnerParam>,
    headers: HeaderMap,
) -> Result<Response> {
    let a = match caller(&s, &headers, &format!("/w/{ws}/editor")).await? {
        Ok(a) => a,
        Err(to_login) => return Ok(to_login),
    };
    let owner = super::owner_for(&s, &a, q.owner.clone(), &ws, Need::Read).await?;
    let w = s.svc.find(&owner, &ws).await?;
    // Only who may act on it gets the terminal and saves (the API enforces
    // it; the page does not offer what would be refused).
    let writer = owner == a.user
        || a.admin
        || s.svc
            .may_access(&a.user, &owner, &ws, Need::Act)
            .await
            .is_ok();
    let owner_q = owner_query(&owner, &a.user);
    let body = html! {
        div #editor-app data-ws=(w.name) data-owner-q=(owner_q) data-writer=(writer)
            data-monaco={"/w/assets/monaco-" (MONACO_VERSION)} {
            aside #tree aria-label="Files" {
                div.tree-head {
                    strong { (w.name) }
                    @if writer { button #new-file { "New file" }
                        label.upload { "Upload " input #upload type="file" multiple; } }
                }
                ul #files role="tree" {}
            }
            section #center {
                div #tabbar { span #current { "No file open" } span #status role="status" {}
                    @if writer { button #save disabled { "Save" } } @else { span.readonly { "read-only" } } }
                div #monaco {}
            }
            @if writer {
                section #side {
                    iframe #terminal title="Terminal" src={"/w/" (w.name) "/terminal" (owner_q)} {}
                }
            }
        }
    };
    let scripts = html! {
        script src={"/w/assets/monaco-" (MONACO_VERSION) "/loader.js"} {}
        script src="/w/assets/editor.js" {}
    };
    Ok(page(layout(
        &format!("{} editor", w.name),
        &a,
        scripts,
        body,
    )))
}
