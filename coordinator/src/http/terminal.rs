//! The web terminal: `GET /v1/workspaces/{name}/terminal` is a WebSocket
//! attached to a login shell under a PTY in the workspace (an interactive
//! exec through its agent, counted as a `terminal` tunnel), and
//! `/w/{workspace}/terminal` serves the page: xterm.js and its fit addon from
//! the npm registry, bundled into this binary (build.rs).
//!
//! Messages: binary frames carry the terminal's bytes both ways; the
//! browser sends text frames `{"type":"resize","cols":C,"rows":R}` (and may
//! send `{"type":"input","data":"..."}`); the server ends with a text frame
//! `{"type":"exit","code":N}` or `{"type":"error","code":...,"message":...}`.
//! A stopped workspace is started first, with progress in the terminal.
//!
//! A browser authenticates with the `berth_token` cookie; such a request
//! must come from this origin (its `Origin` names the host it is sent to),
//! so no other site, nor a sandboxed preview, can open a terminal with it.

use super::auth;
use super::terminal_share::Guard;
use super::{owner_for, AppState, P, Q};
use crate::domain::lifecycle::State;
use crate::domain::team::Need;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::link::Duplex;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_proto::agent::{self as pb, exec_input::Input, exec_output::Output};
use berth_proto::api::ErrorBody;
use berth_proto::{read_frame, write_frame};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use utoipa::IntoParams;

const XTERM_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.js"));
const XTERM_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.css"));
const FIT_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/web/addon-fit.js"));

/// The terminal routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{name}/terminal", get(terminal))
        .route("/w/{ws}/terminal", get(page))
        .route("/w/assets/{file}", get(asset))
}

/// The terminal's size and whose workspace.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    /// Columns of the terminal (default 80).
    #[param(minimum = 1, maximum = 1000)]
    pub cols: Option<u16>,
    /// Rows of the terminal (default 24).
    #[param(minimum = 1, maximum = 1000)]
    pub rows: Option<u16>,
    /// The owner of the workspace (admins only; default: the caller).
    #[param(pattern = "^[a-z0-9._@-]{1,64}$")]
    pub owner: Option<String>,
    /// Share the session live: its first text frame is
    /// `{"type":"shared","id":…}`, joined at `/v1/terminal-shares/{id}`.
    pub share: Option<bool>,
}

/// A WebSocket attached to a shell under a PTY in the workspace (see the
/// module doc for the messages). A stopped workspace is started first.
#[utoipa::path(get, path = "/v1/workspaces/{name}/terminal",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"), TerminalQuery),
    responses((status = 101, description = "switched to the WebSocket"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 426, body = ErrorBody)))]
pub(super) async fn terminal(
    AxState(s): AxState<AppState>,
    P(name): P<String>,
    Q(q): Q<TerminalQuery>,
    headers: HeaderMap,
    ws: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let a = auth::websocket_caller(&s, &headers, "a terminal").await?;
    let owner = owner_for(&s, &a, q.owner, &name, Need::Act).await?;
    let w = s.svc.find(&owner, &name).await?;
    w.reachable_or_waking()?;
    let cols = q.cols.unwrap_or(80);
    let rows = q.rows.unwrap_or(24);
    if !(1..=1000).contains(&cols) || !(1..=1000).contains(&rows) {
        return Err(Error::invalid(
            "invalid_size",
            "cols and rows are 1 to 1000",
        ));
    }
    let ws =
        ws.map_err(|e| Error::upgrade_required(format!("a WebSocket upgrade is needed: {e}")))?;
    let share = q
        .share
        .unwrap_or(false)
        .then(|| s.terminals.open(&w.owner, &w.name, &a.user));
    Ok(ws.on_upgrade(move |socket| async move {
        session(s, w, u32::from(cols), u32::from(rows), socket, share).await;
    }))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize {
        cols: u32,
        rows: u32,
    },
    Input {
        data: String,
    },
    /// A shared session's owner lets `user` type (one viewer at a time).
    Grant {
        user: String,
    },
    /// ... and takes it back.
    Revoke,
}

async fn session(
    s: AppState,
    w: WorkspaceRow,
    cols: u32,
    rows: u32,
    socket: WebSocket,
    share: Option<(Guard, mpsc::Receiver<Vec<u8>>)>,
) {
    let (guard, mut keys) = match share {
        Some((g, rx)) => (Some(g), Some(rx)),
        None => (None, None),
    };
    let (mut out, mut inp) = socket.split();
    let say = |v: serde_json::Value| Message::Text(v.to_string().into());
    let failed = |code: &str, message: &str| {
        say(serde_json::json!({"type": "error", "code": code, "message": message}))
    };
    let w = if w.state == State::Running {
        w
    } else {
        let _ = out
            .send(Message::Binary(
                format!("\x1b[2m[berth] starting {}…\x1b[0m\r\n", w.name)
                    .into_bytes()
                    .into(),
            ))
            .await;
        match s.svc.wake_up(w).await {
            Ok(w) => w,
            Err(e) => {
                let _ = out.send(failed(e.code, &e.message)).await;
                return;
            }
        }
    };
    let Duplex { mut send, mut recv } = match s.svc.terminal(&w, cols, rows).await {
        Ok(Ok(duplex)) => duplex,
        Ok(Err(e)) => {
            let _ = out.send(failed(&e.code, &e.message)).await;
            return;
        }
        Err(e) => {
            let _ = out.send(failed(e.code, &e.message)).await;
            return;
        }
    };
    if let Some(g) = &guard {
        let _ = out
            .send(say(serde_json::json!({"type": "shared", "id": g.id})))
            .await;
    }
    let to_agent = async {
        loop {
            // The page's frames, and a granted viewer's keystrokes.
            let viewer = async {
                match keys.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = inp.next() => match m {
                    Some(Ok(m)) => m,
                    _ => break,
                },
                k = viewer => match k {
                    Some(b) => Message::Binary(b.into()),
                    None => { keys = None; continue }
                },
            };
            let input = match msg {
                Message::Binary(b) => Input::Stdin(b.to_vec()),
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control::Resize { cols, rows })
                        if (1..=1000).contains(&cols) && (1..=1000).contains(&rows) =>
                    {
                        Input::Resize(pb::Resize { rows, cols })
                    }
                    Ok(Control::Input { data }) => Input::Stdin(data.into_bytes()),
                    Ok(Control::Grant { user }) => {
                        if let Some(g) = &guard {
                            g.shared.grant(Some(user));
                        }
                        continue;
                    }
                    Ok(Control::Revoke) => {
                        if let Some(g) = &guard {
                            g.shared.grant(None);
                        }
                        continue;
                    }
                    _ => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if write_frame(&mut send, &pb::ExecInput { input: Some(input) })
                .await
                .is_err()
            {
                return;
            }
        }
        // The page went away: hang up, as a closed terminal does.
        let hup = Input::Signal(SIGHUP);
        let _ = write_frame(&mut send, &pb::ExecInput { input: Some(hup) }).await;
        let _ = send.shutdown().await;
    };
    let from_agent = async {
        while let Ok(Some(m)) = read_frame::<_, pb::ExecOutput>(&mut recv).await {
            let msg = match m.output {
                Some(Output::Stdout(b)) | Some(Output::Stderr(b)) => {
                    if let Some(g) = &guard {
                        g.shared.publish(&b);
                    }
                    Message::Binary(b.into())
                }
                Some(Output::ExitCode(code)) => {
                    say(serde_json::json!({"type": "exit", "code": code}))
                }
                Some(Output::Error(e)) => failed(&e.code, &e.message),
                None => continue,
            };
            let last = !matches!(msg, Message::Binary(_));
            if out.send(msg).await.is_err() || last {
                break;
            }
        }
        let _ = out.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = to_agent => {}
        _ = from_agent => {}
    }
}

/// SIGHUP's number (the same on every Linux architecture).
const SIGHUP: u32 = 1;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>__NAME__ · Berth terminal</title>
<link rel="stylesheet" href="/w/assets/xterm.css">
<style>html,body{height:100%;margin:0;background:#000}#t{position:absolute;inset:4px}
#bar{font:14px system-ui,sans-serif;color:#fff;background:#0d1b2a;padding:6px;display:flex;gap:8px;flex-wrap:wrap;align-items:center}
#bar a{color:#9cd2ff}#bar[hidden]{display:none}body.shared #t{top:48px}</style>
</head><body><div id="bar" hidden>Shared: viewers open <a id="watch">this link</a>.
<label>Let type: <input id="grantee" placeholder="user"></label><button id="grant">Grant</button><button id="revoke">Revoke</button></div><div id="t"></div>
<script src="/w/assets/xterm.js"></script><script src="/w/assets/addon-fit.js"></script>
<script>
"use strict";
const term = new Terminal({cursorBlink: true, scrollback: 5000});
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("t"));
fit.fit();
window.term = term;
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const sharing = new URLSearchParams(location.search).get("share") === "true";
const url = `${scheme}//${location.host}/v1/workspaces/__NAME__/terminal?cols=${term.cols}&rows=${term.rows}__OWNER__${sharing ? "&share=true" : ""}`;
const sock = new WebSocket(url);
sock.binaryType = "arraybuffer";
const enc = new TextEncoder();
sock.onopen = () => { window.berthConnected = true; term.focus(); };
sock.onmessage = (e) => {
  if (typeof e.data !== "string") { term.write(new Uint8Array(e.data)); return; }
  const m = JSON.parse(e.data);
  if (m.type === "shared") {
    window.berthShare = m.id;
    const a = document.getElementById("watch");
    a.href = `/w/shared/${m.id}`;
    a.textContent = `${location.origin}/w/shared/${m.id}`;
    document.getElementById("bar").hidden = false;
    document.body.classList.add("shared");
    fit.fit();
  }
  if (m.type === "exit") term.write(`\r\n[exited with status ${m.code}]\r\n`);
  if (m.type === "error") term.write(`\r\n[${m.code}: ${m.message}]\r\n`);
};
sock.onclose = () => term.write("\r\n[disconnected]\r\n");
term.onData((d) => { if (sock.readyState === 1) sock.send(enc.encode(d)); });
term.onResize(({cols, rows}) => { if (sock.readyState === 1) sock.send(JSON.stringify({type: "resize", cols, rows})); });
window.addEventListener("resize", () => fit.fit());
document.getElementById("grant").onclick = () => sock.send(JSON.stringify({type: "grant", user: document.getElementById("grantee").value}));
document.getElementById("revoke").onclick = () => sock.send(JSON.stringify({type: "revoke"}));
</script></body></html>"#;

#[derive(Debug, Deserialize)]
struct PageQuery {
    owner: Option<String>,
}

/// The terminal page (signed-in browsers: the `berth_token` cookie).
async fn page(
    AxState(s): AxState<AppState>,
    P(ws): P<String>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let Some(a) = auth::optional(&s, &headers).await? else {
            return Ok(
                axum::response::Redirect::to(&format!("/w/login?next=/w/{ws}/terminal"))
                    .into_response(),
            );
        };
        let owner = owner_for(&s, &a, q.owner.clone(), &ws, Need::Act).await?;
        let w = s.svc.find(&owner, &ws).await?;
        let owner_q = q
            .owner
            .as_ref()
            .map(|o| {
                format!(
                    "&owner={}",
                    crate::domain::validate::user_name(o)
                        .map(|_| o.as_str())
                        .unwrap_or("")
                )
            })
            .unwrap_or_default();
        let html = PAGE
            .replace("__NAME__", &w.name)
            .replace("__OWNER__", &owner_q);
        Ok::<_, Error>(
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response(),
        )
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

/// The bundled front-end files.
async fn asset(P(file): P<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "xterm.js" => (XTERM_JS, "text/javascript"),
        "addon-fit.js" => (FIT_JS, "text/javascript"),
        "xterm.css" => (XTERM_CSS, "text/css"),
        _ => return Error::not_found("no such asset").into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_front_end_is_xterm() {
        assert!(std::str::from_utf8(XTERM_JS).unwrap().contains("Terminal"));
        assert!(std::str::from_utf8(FIT_JS).unwrap().contains("FitAddon"));
        assert!(std::str::from_utf8(XTERM_CSS).unwrap().contains(".xterm"));
    }
}
