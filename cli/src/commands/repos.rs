//! Repository workspaces: `berth logs --init`, `berth sync`, `berth ports`
//! `berth git-credential add|list|remove` and `berth config`.

use super::{ws_path, Ui};
use crate::args::{ConfigCmd, GitCredentialCmd, Target};
use crate::client::{enc, Client};
use crate::output::{age, table};
use crate::{fail, Outcome};
use anyhow::Context;
use berth_proto::api::{
    AddGitCredential, GitCredential, PortVisibility, SyncBody, SyncResult, UserConfig, Workspace,
};
use berth_proto::units::now_ms;
use std::io::Read;

pub(crate) async fn logs(c: &Client, t: Target, init: bool, follow: bool) -> Outcome {
    if !init {
        return Err(fail(
            "usage",
            "give --init: the init log (clone and lifecycle commands) is the log there is",
        ));
    }
    let mut path = ws_path(&t, "/init-log");
    if follow {
        path.push_str(if path.contains('?') {
            "&follow=true"
        } else {
            "?follow=true"
        });
    }
    c.get_stream(&path, &mut std::io::stdout()).await?;
    Ok(0)
}

pub(crate) async fn sync(c: &Client, ui: Ui, t: Target, push: bool) -> Outcome {
    let r: SyncResult = c.post(&ws_path(&t, "/sync"), &SyncBody { push }).await?;
    ui.print(&r, || {
        let mut out = format!("{}: {}", t.name, r.outcome.replace('_', " "));
        if !r.commit.is_empty() {
            out.push_str(&format!(" at {}", &r.commit[..r.commit.len().min(12)]));
        }
        out.push('\n');
        for f in &r.files {
            out.push_str(&format!("  {f}\n"));
        }
        if !r.message.is_empty() && r.outcome != "up_to_date" {
            out.push_str(&format!("{}\n", r.message));
        }
        out
    });
    // A sync that did not happen is a failure for scripts.
    Ok(match r.outcome.as_str() {
        "conflict" | "rejected" | "failed" => 1,
        _ => 0,
    })
}

pub(crate) async fn ports(c: &Client, ui: Ui, base: &str, t: Target) -> Outcome {
    let w: Workspace = c.get(&ws_path(&t, "")).await?;
    let public: Vec<PortVisibility> = c.get(&ws_path(&t, "/public-ports")).await?;
    let ports = w.init.map(|i| i.ports).unwrap_or_default();
    ui.print(&ports, || {
        if ports.is_empty() {
            return format!("{}: its configuration forwards no ports\n", t.name);
        }
        let rows: Vec<Vec<String>> = ports
            .iter()
            .map(|p| {
                let open = public.iter().any(|v| v.port == p.port && v.public);
                vec![
                    p.port.to_string(),
                    p.label.clone(),
                    if open { "public" } else { "private" }.into(),
                    format!("{}/w/{}/{}/", base.trim_end_matches('/'), w.name, p.port),
                ]
            })
            .collect();
        table(&["PORT", "LABEL", "VISIBILITY", "PREVIEW"], &rows)
    });
    Ok(0)
}

/// `berth config [dotfiles URL | --unset]`.
pub(crate) async fn config(c: &Client, ui: Ui, cmd: Option<ConfigCmd>) -> Outcome {
    let cfg: UserConfig = match cmd {
        None => c.get("/v1/config").await?,
        Some(ConfigCmd::Dotfiles { repository, .. }) => {
            let body = serde_json::json!({ "url": repository });
            c.put("/v1/config/dotfiles", &body).await?
        }
    };
    ui.print(&cfg, || match &cfg.dotfiles {
        Some(u) => format!("dotfiles: {u}\n"),
        None => "dotfiles: none\n".into(),
    });
    Ok(0)
}

pub(crate) async fn git_credential(c: &Client, ui: Ui, cmd: GitCredentialCmd) -> Outcome {
    match cmd {
        GitCredentialCmd::Add {
            host,
            git_token,
            git_token_file,
            username,
        } => {
            let token = match (git_token, git_token_file) {
                (Some(t), _) => t,
                (None, Some(p)) => {
                    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?
                }
                (None, None) => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("read the token from standard input")?;
                    s
                }
            };
            let add = AddGitCredential {
                host,
                token: token.trim().to_string(),
                username,
            };
            let g: GitCredential = c.post("/v1/git-credentials", &add).await?;
            ui.print(&g, || {
                format!("Kept a token for {} (user {})\n", g.host, g.username)
            });
            Ok(0)
        }
        GitCredentialCmd::List => {
            let list: Vec<GitCredential> = c.get("/v1/git-credentials").await?;
            ui.print(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|g| {
                        vec![
                            g.host.clone(),
                            g.username.clone(),
                            age(g.created_at_ms, now_ms()),
                        ]
                    })
                    .collect();
                table(&["HOST", "USER", "ADDED"], &rows)
            });
            Ok(0)
        }
        GitCredentialCmd::Remove { host } => {
            c.delete_empty(&format!("/v1/git-credentials/{}", enc(&host)))
                .await?;
            if !ui.quiet {
                eprintln!("Removed the token for {host}");
            }
            Ok(0)
        }
    }
}
