//! Tunnels to a workspace (its ports, SSH, a terminal), waking it first if
//! it is stopped, and the activity its agent counts.

use super::{Change, Service};
use crate::domain::lifecycle::{Desired, State};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::link::{self, Duplex};
use berth_proto::agent as pb;
use berth_proto::api::TunnelActivity;
use berth_proto::codes::{self, Code};
use std::time::Duration;

impl Service {
    /// Opens a tunnel of `command` to the (running or woken) workspace.
    async fn tunnel(
        &self,
        w: WorkspaceRow,
        command: impl FnOnce(&WorkspaceRow) -> pb::request::Command,
    ) -> Result<Duplex> {
        let w = match w.state {
            State::Running => w,
            _ => self.wake_up(w).await?,
        };
        let node = w.node.clone().unwrap_or_default();
        match link::tunnel(&*self.inner.link, &node, command(&w)).await? {
            Ok(duplex) => Ok(duplex),
            Err(e) if codes::of(&e) == Some(Code::PortClosed) => {
                Err(Error::node("port_closed", e.message))
            }
            Err(e) => Err(Error::conflict(
                "not_running",
                format!("{}: {}", e.code, e.message),
            )),
        }
    }

    /// A TCP connection to `port` of the workspace, counted by the agent
    /// as a tunnel of `kind` (`port` or `preview`).
    pub async fn port(&self, w: WorkspaceRow, port: u16, kind: &str) -> Result<Duplex> {
        self.tunnel(w, |w| {
            pb::request::Command::Connect(pb::ConnectRequest {
                name: w.id.clone(),
                port: u32::from(port),
                kind: kind.into(),
            })
        })
        .await
    }

    /// An SSH session to the workspace, authenticated with its owner's keys
    /// (whoever connects: an admin reaching another user's workspace still
    /// logs in with a key the owner registered).
    pub async fn ssh(&self, w: WorkspaceRow) -> Result<Duplex> {
        let keys: Vec<String> = self
            .inner
            .store
            .ssh_keys(&w.owner)
            .await?
            .into_iter()
            .map(|k| k.public_key)
            .collect();
        if keys.is_empty() {
            return Err(Error::conflict(
                "no_ssh_key",
                format!(
                    "{} has no SSH key registered: add one with `berth ssh-key add`",
                    w.owner
                ),
            ));
        }
        self.tunnel(w, |w| {
            pb::request::Command::Ssh(pb::SshRequest {
                name: w.id.clone(),
                authorized_keys: keys,
            })
        })
        .await
    }

    /// A login shell under a PTY of `cols` × `rows` in a running workspace
    /// (counted as a terminal tunnel): the stream of its exec frames, or the
    /// agent's refusal.
    pub async fn terminal(
        &self,
        w: &WorkspaceRow,
        cols: u32,
        rows: u32,
    ) -> Result<Result<Duplex, pb::Error>> {
        let node = w.node.clone().unwrap_or_default();
        let req = pb::ExecRequest {
            name: w.id.clone(),
            argv: berth_proto::login_shell(),
            env: [("TERM".to_string(), "xterm-256color".to_string())].into(),
            tty: true,
            rows,
            cols,
            cwd: String::new(),
            activity: "terminal".into(),
            user: String::new(),
        };
        Ok(link::exec_stream(&*self.inner.link, &node, req).await?)
    }

    /// Wake on connect: starts a stopped (or still starting) workspace and
    /// waits until it runs, for up to two minutes; the connection is then
    /// made as if it had been running. Events of this coordinator end the
    /// wait early; a read each half second covers changes made elsewhere.
    pub async fn wake_up(&self, w: WorkspaceRow) -> Result<WorkspaceRow> {
        let name = w.name.clone();
        let not_running =
            |state: &str| Error::conflict("not_running", format!("workspace {name} is {state}"));
        let mut events = self.subscribe();
        if w.desired != Desired::Running {
            match self.request_start(&w).await {
                Ok(_) => {}
                Err(Change::Store(e)) => return Err(e),
                Err(_) => return Err(not_running(w.state.as_str())),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.inner.store.workspace(&w.id).await? {
                Some(now) if now.state == State::Running => return Ok(now),
                Some(now)
                    if matches!(now.state, State::Failed | State::Deleted | State::Deleting) =>
                {
                    return Err(not_running(now.state.as_str()))
                }
                Some(now) if now.desired != Desired::Running => {
                    return Err(not_running(now.state.as_str()))
                }
                Some(_) => {}
                None => return Err(Error::not_found(format!("no workspace named {name:?}"))),
            }
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(ev) if ev.id == w.id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::unavailable(
                        "start_timeout",
                        format!("workspace {name} did not start within 2 minutes"),
                    ))
                }
            }
        }
    }

    /// Open tunnel sessions and bytes per kind, as the workspace's agent
    /// counts them; none when it is not on a reachable node.
    pub async fn activity(&self, w: &WorkspaceRow) -> Result<Vec<TunnelActivity>> {
        let Some(node) = w.node.clone().filter(|n| self.inner.link.is_connected(n)) else {
            return Ok(Vec::new());
        };
        let cmd = pb::request::Command::Status(pb::NameRequest {
            name: w.id.clone(),
            generation: 0,
        });
        match self
            .inner
            .link
            .call(&node, cmd, Duration::from_secs(10))
            .await?
        {
            pb::response::Result::Status(st) => Ok(st
                .tunnels
                .into_iter()
                .map(|t| TunnelActivity {
                    kind: t.kind,
                    open: t.open,
                    sessions: t.sessions,
                    bytes_in: t.bytes_in,
                    bytes_out: t.bytes_out,
                    last_active_ms: t.last_active_ms,
                })
                .collect()),
            pb::response::Result::Error(e) if codes::of(&e) == Some(Code::NotFound) => {
                Ok(Vec::new())
            }
            pb::response::Result::Error(e) => Err(Error::node(
                "node_error",
                format!("{}: {}", e.code, e.message),
            )),
            other => Err(Error::node(
                "node_error",
                format!("unexpected answer {other:?}"),
            )),
        }
    }
}
