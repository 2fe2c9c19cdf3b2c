//! Tunnels: `berth port-forward`, `berth open` (a sign-in link for the
//! browser pages), `berth activity`; a stopped workspace is woken first.

use super::{request_then_wait, ws_path, Ui};
use crate::args::{Target, Wait};
use crate::client::{enc, Client};
use crate::output::{age, size, table};
use crate::{fail, Failure, Outcome};
use anyhow::Context;
use berth_proto::api::{Activity, Desired, LinkRequest, SignInLink, State, Workspace};
use berth_proto::units::now_ms;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// Wake on connect: a workspace that is not running is started, and the
/// wait shows progress (on standard error), before a tunnel is opened.
pub(crate) async fn ensure_running(
    c: &Client,
    ui: Ui,
    target: &Target,
) -> Result<Workspace, Failure> {
    let w: Workspace = c.get(&ws_path(target, "")).await?;
    if w.state == State::Running {
        return Ok(w);
    }
    let wait = Wait {
        no_wait: false,
        timeout: Duration::from_secs(600),
    };
    let start = ws_path(target, "/start");
    let current = w.clone();
    let request = async {
        if current.desired == Desired::Running {
            Ok(current)
        } else {
            c.post(&start, &json!({})).await
        }
    };
    request_then_wait(c, ui, target, State::Running, wait, request).await
}

pub(crate) async fn port_forward(
    c: &Client,
    ui: Ui,
    target: Target,
    ports: Vec<(u16, u16)>,
    address: std::net::IpAddr,
) -> Outcome {
    let w = ensure_running(c, ui, &target).await?;
    let mut listeners = Vec::new();
    for (local, remote) in ports {
        let l = tokio::net::TcpListener::bind((address, local))
            .await
            .with_context(|| format!("listen on {address}:{local}"))?;
        let at = l.local_addr().context("local address")?;
        if ui.json {
            println!(
                "{}",
                json!({"local": at.to_string(), "workspace": w.name, "port": remote})
            );
        } else {
            println!("Forwarding {at} -> {}:{remote}", w.name);
        }
        listeners.push((l, remote));
    }
    std::io::stdout().flush().ok();
    let mut tasks = tokio::task::JoinSet::new();
    for (l, remote) in listeners {
        let (c, path, quiet) = (
            c.clone(),
            ws_path(&target, &format!("/ports/{remote}")),
            ui.quiet,
        );
        tasks.spawn(async move {
            loop {
                let Ok((mut local, peer)) = l.accept().await else {
                    return;
                };
                let (c, path) = (c.clone(), path.clone());
                tokio::spawn(async move {
                    match c.upgrade(&path, "berth-tcp").await {
                        Ok(up) => {
                            let mut up = up;
                            let _ = tokio::io::copy_bidirectional_with_sizes(
                                &mut local,
                                &mut up,
                                256 << 10,
                                256 << 10,
                            )
                            .await;
                        }
                        Err(e) if !quiet => eprintln!("berth: {peer}: {}: {}", e.code, e.message),
                        Err(_) => {}
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(0),
        _ = tasks.join_next() => Err(fail("cli_error", "a listener stopped")),
    }
}

pub(crate) async fn activity(c: &Client, ui: Ui, t: Target) -> Outcome {
    let a: Activity = c.get(&ws_path(&t, "/activity")).await?;
    ui.print(&a, || {
        let rows: Vec<Vec<String>> = a
            .tunnels
            .iter()
            .map(|t| {
                let last = t.last_active_ms as i64;
                vec![
                    t.kind.clone(),
                    t.open.to_string(),
                    t.sessions.to_string(),
                    size(t.bytes_in),
                    size(t.bytes_out),
                    match last {
                        0 => "-".into(),
                        _ => age(last, now_ms()),
                    },
                ]
            })
            .collect();
        table(
            &["KIND", "OPEN", "SESSIONS", "IN", "OUT", "LAST ACTIVE"],
            &rows,
        )
    });
    Ok(0)
}

/// A one-time sign-in link to a workspace's terminal, editor or a port's
/// preview, or to the portal's workspaces page.
pub(crate) async fn open(
    c: &Client,
    ui: Ui,
    url: &str,
    name: Option<String>,
    port: Option<u16>,
    editor: bool,
) -> Outcome {
    let next = match (name, port) {
        (None, _) => "/w/".to_string(),
        (Some(name), Some(p)) => format!("/w/{}/{p}/", enc(&name)),
        (Some(name), None) if editor => format!("/w/{}/editor", enc(&name)),
        (Some(name), None) => format!("/w/{}/terminal", enc(&name)),
    };
    let link: SignInLink = c.post("/v1/sign-in-links", &LinkRequest { next }).await?;
    let url = format!("{}{}", url.trim_end_matches('/'), link.url);
    ui.print(&json!({"url": url}), || format!("{url}\n"));
    Ok(0)
}
