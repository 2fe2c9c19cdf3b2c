//! Live terminal sharing: a web terminal session opened with `share=true`
//! is told its share id (`{"type":"shared","id":…}`); whoever may read the
//! workspace joins it at `GET /v1/terminal-shares/{id}` (a WebSocket) and
//! watches its output live, starting from its last 64 KiB. The session's
//! owner grants typing to one viewer (`{"type":"grant","user":"carol"}`)
//! and takes it back (`{"type":"revoke"}`); a viewer's keystrokes reach the
//! shell only while granted. A join is a WebSocket upgrade, so an audit
//! entry. Shares live in this coordinator's memory and end with the
//! session.

use super::auth;
use super::{AppState, P};
use crate::domain::team::Need;
use crate::error::{Error, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// Output kept for a viewer who joins late.
const RECENT: usize = 64 << 10;

/// The shared sessions, by id.
#[derive(Debug, Clone, Default)]
pub struct Shares(Arc<Mutex<HashMap<String, Arc<Shared>>>>);

/// One shared session.
#[derive(Debug)]
pub struct Shared {
    /// The workspace's owner and name.
    pub owner: String,
    pub name: String,
    /// Who opened the session.
    pub by: String,
    output: broadcast::Sender<bytes::Bytes>,
    input: mpsc::Sender<Vec<u8>>,
    typist: Mutex<Option<String>>,
    recent: Mutex<VecDeque<u8>>,
}

/// Removes its share when the session ends.
#[derive(Debug)]
pub struct Guard {
    shares: Shares,
    pub id: String,
    pub shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut m = self.shares.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.id);
    }
}

impl Shares {
    /// Shares a new session of `by` on `owner`'s workspace `name`: its guard
    /// and where viewers' granted keystrokes arrive.
    pub fn open(&self, owner: &str, name: &str, by: &str) -> (Guard, mpsc::Receiver<Vec<u8>>) {
        let (input, rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            owner: owner.into(),
            name: name.into(),
            by: by.into(),
            output: broadcast::channel(1024).0,
            input,
            typist: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        });
        let id = hex::encode(rand::random::<[u8; 16]>());
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(id.clone(), shared.clone());
        (
            Guard {
                shares: self.clone(),
                id,
                shared,
            },
            rx,
        )
    }

    fn get(&self, id: &str) -> Option<Arc<Shared>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).cloned()
    }
}

impl Shared {
    /// Output of the session, for its viewers.
    pub fn publish(&self, b: &[u8]) {
        {
            let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            r.extend(b);
            let extra = r.len().saturating_sub(RECENT);
            r.drain(..extra);
        }
        let _ = self.output.send(bytes::Bytes::copy_from_slice(b));
    }

    /// Who may type (the owner's `grant`), or nobody.
    pub fn grant(&self, user: Option<String>) {
        *self.typist.lock().unwrap_or_else(|p| p.into_inner()) = user;
    }

    fn may_type(&self, user: &str) -> bool {
        self.typist
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(user)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/terminal-shares/{id}", get(watch))
        .route("/w/shared/{id}", get(watch_page))
}

/// The page that watches a shared session (signed-in browsers).
async fn watch_page(
    AxState(s): AxState<AppState>,
    P(id): P<String>,
    headers: HeaderMap,
) -> Result<Response> {
    use axum::response::IntoResponse;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::not_found("no such shared terminal"));
    }
    if auth::optional(&s, &headers).await.ok().flatten().is_none() {
        return Ok(
            axum::response::Redirect::to(&format!("/w/login?next=/w/shared/{id}")).into_response(),
        );
    }
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        WATCH.replace("__ID__", &id),
    )
        .into_response())
}

const WATCH: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shared terminal · Berth</title>
<link rel="stylesheet" href="/w/assets/xterm.css">
<style>html,body{height:100%;margin:0;background:#000}#t{position:absolute;inset:32px 4px 4px 4px}
#bar{font:14px system-ui,sans-serif;color:#fff;background:#0d1b2a;padding:6px}</style>
</head><body><div id="bar">Watching a shared terminal; your keys reach it only while its owner lets you type.</div><div id="t"></div>
<script src="/w/assets/xterm.js"></script><script src="/w/assets/addon-fit.js"></script>
<script>
"use strict";
const term = new Terminal({scrollback: 5000});
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("t"));
fit.fit();
window.term = term;
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const sock = new WebSocket(`${scheme}//${location.host}/v1/terminal-shares/__ID__`);
sock.binaryType = "arraybuffer";
const enc = new TextEncoder();
sock.onopen = () => { window.berthConnected = true; term.focus(); };
sock.onmessage = (e) => { if (typeof e.data !== "string") term.write(new Uint8Array(e.data)); };
sock.onclose = () => term.write("
[the shared session ended]
");
term.onData((d) => { if (sock.readyState === 1) sock.send(enc.encode(d)); });
window.addEventListener("resize", () => fit.fit());
</script></body></html>"#;

/// Join a shared terminal session (a WebSocket): its output as binary
/// frames; keystrokes as binary frames, which reach the shell only while
/// the session's owner grants typing to the caller. For whoever may read
/// the workspace.
#[utoipa::path(get, path = "/v1/terminal-shares/{id}",
    params(("id" = String, Path)),
    responses((status = 101, description = "switched to the WebSocket"),
        (status = 401, body = berth_proto::api::ErrorBody), (status = 403, body = berth_proto::api::ErrorBody),
        (status = 404, body = berth_proto::api::ErrorBody), (status = 426, body = berth_proto::api::ErrorBody)))]
pub(super) async fn watch(
    AxState(s): AxState<AppState>,
    P(id): P<String>,
    headers: HeaderMap,
    ws: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let a = auth::websocket_caller(&s, &headers, "a shared terminal").await?;
    let shared = s.terminals.get(&id).ok_or_else(|| {
        Error::not_found(format!(
            "no shared terminal {id:?} (it ended, or another coordinator has it)"
        ))
    })?;
    let reader = a.admin
        || a.user == shared.owner
        || s.svc
            .may_access(&a.user, &shared.owner, &shared.name, Need::Read)
            .await
            .is_ok();
    if !reader {
        return Err(Error::forbidden(format!(
            "{} is not shared with you",
            shared.name
        )));
    }
    let ws =
        ws.map_err(|e| Error::upgrade_required(format!("a WebSocket upgrade is needed: {e}")))?;
    Ok(ws.on_upgrade(move |socket| viewer(shared, a.user, socket)))
}

async fn viewer(shared: Arc<Shared>, user: String, socket: WebSocket) {
    let (mut out, mut inp) = socket.split();
    let mut rx = shared.output.subscribe();
    let recent: Vec<u8> = {
        let r = shared.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().copied().collect()
    };
    if out.send(Message::Binary(recent.into())).await.is_err() {
        return;
    }
    let watch = async {
        loop {
            match rx.recv().await {
                Ok(b) => {
                    if out.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = out.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    };
    let keys = async {
        while let Some(Ok(m)) = inp.next().await {
            match m {
                Message::Binary(b) if shared.may_type(&user) => {
                    let sent = shared.input.send(b.to_vec()).await;
                    if sent.is_err() {
                        return;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    tokio::select! {
        () = watch => {}
        () = keys => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_keeps_recent_output_and_ends_with_its_session() {
        let shares = Shares::default();
        let (guard, _rx) = shares.open("alice", "box", "alice");
        guard.shared.publish(&vec![b'x'; RECENT + 10]);
        guard.shared.publish(b"tail");
        assert_eq!(guard.shared.recent.lock().unwrap().len(), RECENT);
        assert!(!guard.shared.may_type("carol"));
        guard.shared.grant(Some("carol".into()));
        assert!(guard.shared.may_type("carol") && !guard.shared.may_type("bob"));
        let id = guard.id.clone();
        assert!(shares.get(&id).is_some());
        drop(guard);
        assert!(shares.get(&id).is_none());
    }
}
