//! HTTP previews: `/w/{workspace}/{port}/…` (and, with `--preview-domain
//! D`, `{port}-{workspace}.D`) proxies HTTP, WebSockets included, to a port
//! of the workspace through its agent (a `Connect` of kind `preview`): one
//! connection per request.
//!
//! Who may open it: the owner (or an admin), and whoever may read the
//! workspace (its team's members and viewers, a user it is shared with),
//! with a token in `Authorization: Bearer` or the `berth_token` cookie (set
//! by `/w/login`); anyone when the port was made public
//! (`PUT /v1/workspaces/{name}/ports/{port}`).
//! `{workspace}` is the caller's workspace name, or a workspace id (what a
//! public link uses). The token never reaches the workspace: the
//! Authorization header and the cookie are removed from the request.
//!
//! Path previews share the API's origin, so a page served to anyone but its
//! owner gets `Content-Security-Policy: sandbox` (an opaque origin: its
//! scripts cannot use the viewer's cookie); the wildcard domain gives each
//! preview an origin of its own.

use super::auth::{self, Auth};
use super::signin::urlencode;
use super::tunnels::valid_port;
use super::{owner_for, AppState, Body, OwnerQuery, P, Q};
use crate::domain::lifecycle::State;
use crate::domain::team::Need;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::link::Duplex;
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use berth_proto::api::{ErrorBody, PortVisibility, Visibility};

/// The preview and port-visibility routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/w/{ws}/{port}", any(redirect_slash))
        .route("/w/{ws}/{port}/", any(preview_root))
        .route("/w/{ws}/{port}/{*rest}", any(preview_path))
        .route(
            "/v1/workspaces/{name}/ports/{port}/visibility",
            put(set_visibility),
        )
        .route("/v1/workspaces/{name}/public-ports", get(public_ports))
}

/// Rewrites `{port}-{workspace}.{domain}` requests to `/w/{workspace}/{port}/…`
/// (marked so that the prefix is not announced to the app).
pub async fn by_host(
    AxState(s): AxState<AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(domain) = s.preview_domain.as_deref() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
        if let Some((port, ws)) = host.as_deref().and_then(|h| split_host(h, domain)) {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let rewritten = format!("/w/{ws}/{port}{path}");
            if let Ok(uri) = rewritten.parse::<Uri>() {
                *req.uri_mut() = uri;
                req.extensions_mut().insert(HostRouted);
            }
        }
    }
    next.run(req).await
}

#[derive(Clone, Copy)]
struct HostRouted;

/// `3000-web.example.dev` under `example.dev` → (3000, "web").
fn split_host<'a>(host: &'a str, domain: &str) -> Option<(u16, &'a str)> {
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (port, ws) = label.split_once('-')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!ws.is_empty() && !ws.contains('.')).then_some((port, ws))
}

// ---- visibility ----

/// Makes a port's HTTP preview public (anyone with the link) or owner-only.
#[utoipa::path(put, path = "/v1/workspaces/{name}/ports/{port}/visibility", request_body = Visibility,
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
        ("port" = u16, Path, minimum = 1, maximum = 65535), OwnerQuery),
    responses((status = 200, body = PortVisibility), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn set_visibility(
    AxState(s): AxState<AppState>,
    a: Auth,
    P((name, port)): P<(String, u32)>,
    Q(q): Q<OwnerQuery>,
    Body(v): Body<Visibility>,
) -> Result<Json<PortVisibility>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    let port = valid_port(port)?;
    s.svc.set_port_public(&w, port, v.public).await?;
    Ok(Json(PortVisibility {
        port,
        public: v.public,
    }))
}

/// The ports of a workspace whose previews are public.
#[utoipa::path(get, path = "/v1/workspaces/{name}/public-ports",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), OwnerQuery),
    responses((status = 200, body = Vec<PortVisibility>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn public_ports(
    AxState(s): AxState<AppState>,
    a: Auth,
    P(name): P<String>,
    Q(q): Q<OwnerQuery>,
) -> Result<Json<Vec<PortVisibility>>> {
    let owner = owner_for(&s, &a, q.owner, &name, Need::Read).await?;
    let w = s.svc.find(&owner, &name).await?;
    let ports = s.svc.public_ports(&w).await?;
    Ok(Json(
        ports
            .into_iter()
            .map(|port| PortVisibility { port, public: true })
            .collect(),
    ))
}

// ---- the proxy ----

async fn redirect_slash(P((ws, port)): P<(String, String)>, req: Request) -> Response {
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, format!("/w/{ws}/{port}/{query}"))
        .body(axum::body::Body::empty())
        .unwrap_or_default()
}

async fn preview_root(
    AxState(s): AxState<AppState>,
    P((ws, port)): P<(String, String)>,
    req: Request,
) -> Response {
    respond(proxy(&s, &ws, &port, "", req).await)
}

async fn preview_path(
    AxState(s): AxState<AppState>,
    P((ws, port, rest)): P<(String, String, String)>,
    req: Request,
) -> Response {
    respond(proxy(&s, &ws, &port, &rest, req).await)
}

fn respond(r: Result<Response>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

/// The workspace `ws` names for this caller: theirs by name, else any by id.
async fn resolve(s: &AppState, who: Option<&Auth>, ws: &str) -> Result<WorkspaceRow> {
    if let Some(a) = who {
        if crate::domain::validate::workspace_name(ws).is_ok() {
            if let Ok(w) = s.svc.find(&a.user, ws).await {
                return Ok(w);
            }
        }
    }
    match s.svc.workspace(ws).await? {
        Some(w) if w.state != State::Deleted => Ok(w),
        _ => Err(Error::not_found(format!("no workspace {ws:?}"))),
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1), not forwarded; an upgrade puts
/// `Connection`/`Upgrade` back.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn upgrade_of(h: &HeaderMap) -> Option<HeaderValue> {
    let wants = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    wants.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

async fn proxy(
    s: &AppState,
    ws: &str,
    port: &str,
    rest: &str,
    mut req: Request,
) -> Result<Response> {
    let port: u32 = port
        .parse()
        .map_err(|_| Error::invalid("invalid_port", format!("{port:?} is not a port")))?;
    let port = valid_port(port)?;
    let who = auth::optional(s, req.headers()).await?;
    let w = match resolve(s, who.as_ref(), ws).await {
        Ok(w) => w,
        // Anonymous: sign in first (a browser is sent to the page).
        Err(_) if who.is_none() => return Ok(sign_in(&req)),
        Err(e) => return Err(e),
    };
    let owner_view = |w: &WorkspaceRow| who.as_ref().is_some_and(|a| a.admin || a.user == w.owner);
    // Whoever may read the workspace (its team, a user it is shared with)
    // sees its previews too, sandboxed as any page not its owner's.
    let reader = match &who {
        Some(a) if !owner_view(&w) => s
            .svc
            .may_access(&a.user, &w.owner, &w.name, Need::Read)
            .await
            .is_ok(),
        _ => false,
    };
    if !owner_view(&w) && !reader && !s.svc.port_is_public(&w, port).await? {
        return match who {
            Some(_) => Err(Error::forbidden(format!(
                "port {port} of workspace {ws} is not public"
            ))),
            None => Ok(sign_in(&req)),
        };
    }
    let sandbox = !owner_view(&w);
    w.reachable_or_waking()?;
    let host_routed = req.extensions().get::<HostRouted>().is_some();
    let prefix = format!("/w/{ws}/{port}");
    let streams = s.svc.port(w, port, "preview").await?;
    let Duplex { send, recv } = streams;
    let io = hyper_util::rt::TokioIo::new(tokio::io::join(recv, send));
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, axum::body::Body>(io)
        .await
        .map_err(|e| Error::node("preview_failed", format!("HTTP to port {port}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview connection ended");
        }
    });

    // The request as the app sees it: its own path, no Berth credentials.
    let upgrade = upgrade_of(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut up = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!("/{rest}{query}"))
        .body(body)
        .map_err(|e| Error::invalid("invalid_request", e.to_string()))?;
    let h = up.headers_mut();
    for (k, v) in parts.headers.iter() {
        if HOP.contains(&k.as_str()) || k == header::AUTHORIZATION || k == header::HOST {
            continue;
        }
        if k == header::COOKIE {
            let kept: Vec<&str> = v
                .to_str()
                .unwrap_or("")
                .split(';')
                .map(str::trim)
                .filter(|c| !c.starts_with(&format!("{}=", auth::COOKIE)) && !c.is_empty())
                .collect();
            if !kept.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                    h.append(header::COOKIE, v);
                }
            }
            continue;
        }
        h.append(k.clone(), v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&format!("localhost:{port}")) {
        h.insert(header::HOST, v);
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    if !host_routed {
        if let Ok(v) = HeaderValue::from_str(&prefix) {
            h.insert("x-forwarded-prefix", v);
        }
    }
    if let Some(u) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }

    let mut resp = sender
        .send_request(up)
        .await
        .map_err(|e| Error::node("preview_failed", format!("HTTP to port {port}: {e}")))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Error::node(
                "preview_failed",
                "the app switched protocols without being asked",
            ));
        };
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(c), Ok(sv)) = (client_upgrade.await, server_upgrade.await) else {
                return;
            };
            let mut c = hyper_util::rt::TokioIo::new(c);
            let mut sv = hyper_util::rt::TokioIo::new(sv);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut sv).await;
        });
        strip_berth_cookies(resp.headers_mut());
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        return out
            .body(axum::body::Body::empty())
            .map_err(|e| Error::internal(e.to_string()));
    }

    let (mut rparts, rbody) = resp.into_parts();
    for k in HOP {
        rparts.headers.remove(k);
    }
    strip_berth_cookies(&mut rparts.headers);
    if sandbox {
        rparts.headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads",
            ),
        );
    }
    Ok(Response::from_parts(rparts, axum::body::Body::new(rbody)))
}

/// Whether an app's `Set-Cookie` sets Berth's own cookie, under any case or
/// cookie-name prefix: on the API origin that would fix a visitor's session
/// or sign them out.
fn sets_berth_cookie(v: &HeaderValue) -> bool {
    let name = v
        .as_bytes()
        .split(|b| *b == b'=')
        .next()
        .unwrap_or_default();
    let name = String::from_utf8_lossy(name);
    let name = name.trim();
    let bare = ["__host-", "__secure-"]
        .iter()
        .find_map(|p| {
            name.get(..p.len())
                .filter(|h| h.eq_ignore_ascii_case(p))
                .map(|_| &name[p.len()..])
        })
        .unwrap_or(name);
    bare.eq_ignore_ascii_case(auth::COOKIE)
}

/// Drops every `Set-Cookie` of an app's response that sets Berth's cookie.
fn strip_berth_cookies(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_berth_cookie(v))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// 401 for a program; the sign-in page for a browser.
fn sign_in(req: &Request) -> Response {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        let next = req.uri().path();
        let location = format!("/w/login?next={}", urlencode(next));
        return Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, location)
            .body(axum::body::Body::empty())
            .unwrap_or_default();
    }
    Error::unauthorized("sign in: Authorization: Bearer <token> or the berth_token cookie")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_name_a_port_and_a_workspace() {
        assert_eq!(
            split_host("3000-web.dev.example", "dev.example"),
            Some((3000, "web"))
        );
        assert_eq!(
            split_host("8080-my-app.dev.example", "dev.example"),
            Some((8080, "my-app"))
        );
        assert_eq!(split_host("web.dev.example", "dev.example"), None);
        assert_eq!(split_host("0-web.dev.example", "dev.example"), None);
        assert_eq!(split_host("3000-a.b.dev.example", "dev.example"), None);
        assert_eq!(split_host("3000-webdev.example", "dev.example"), None);
    }

    #[test]
    fn an_app_cannot_set_berths_cookie() {
        let mut h = HeaderMap::new();
        for c in [
            "berth_token=evil; Path=/",
            "Berth_Token=evil",
            " __Host-berth_token=evil; Secure",
            "__SECURE-BERTH_TOKEN=x",
            "theme=dark; Path=/",
            "berth_token_other=ok",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_str(c).unwrap());
        }
        strip_berth_cookies(&mut h);
        let left: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["theme=dark; Path=/", "berth_token_other=ok"]);
    }
}
