//! `berth secret list|set|remove`: secrets given to your workspaces (or a
//! team's) as environment variables or files (`docs/admin.md`, "Secrets").

use super::Ui;
use crate::args::SecretCmd;
use crate::client::{enc, Client};
use crate::output::{age, size, table};
use crate::Outcome;
use anyhow::Context;
use base64::Engine;
use berth_proto::api::{Secret, SecretChange, SecretInput, SecretKind};
use berth_proto::units::now_ms;
use std::io::Read;

/// The API path of a secret (or, without a name, the list).
fn path(team: Option<&str>, name: Option<&str>) -> String {
    let base = match team {
        Some(t) => format!("/v1/teams/{}/secrets", enc(t)),
        None => "/v1/secrets".to_string(),
    };
    match name {
        Some(n) => format!("{base}/{}", enc(n)),
        None => base,
    }
}

pub(crate) async fn run(c: &Client, ui: Ui, cmd: SecretCmd) -> Outcome {
    match cmd {
        SecretCmd::List { team } => {
            let list: Vec<Secret> = c.get(&path(team.as_deref(), None)).await?;
            let now = now_ms();
            ui.print(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            kind(s.kind).into(),
                            if s.prebuild { "yes" } else { "no" }.into(),
                            size(s.bytes),
                            s.version.to_string(),
                            format!("{} by {}", age(s.updated_at_ms, now), s.updated_by),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "AS", "PREBUILD", "SIZE", "VERSION", "CHANGED"],
                    &rows,
                )
            });
        }
        SecretCmd::Set {
            name,
            team,
            file,
            kind: as_kind,
            prebuild,
        } => {
            let value = match &file {
                Some(p) => std::fs::read(p).with_context(|| format!("read {}", p.display()))?,
                None => {
                    let mut v = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut v)
                        .context("read the value from standard input")?;
                    if v.ends_with(b"\n") {
                        v.pop();
                        if v.ends_with(b"\r") {
                            v.pop();
                        }
                    }
                    v
                }
            };
            let kind = match (as_kind.as_deref(), &file) {
                (Some("file"), _) | (None, Some(_)) => SecretKind::File,
                _ => SecretKind::Env,
            };
            let input = SecretInput {
                value: None,
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(&value)),
                kind,
                prebuild,
            };
            let change: SecretChange = c.put(&path(team.as_deref(), Some(&name)), &input).await?;
            ui.print(&change, || describe(&name, &change));
        }
        SecretCmd::Remove { name, team } => {
            let change: SecretChange = c.delete(&path(team.as_deref(), Some(&name))).await?;
            ui.print(&change, || describe(&name, &change));
        }
    }
    Ok(0)
}

fn kind(k: SecretKind) -> &'static str {
    match k {
        SecretKind::Env => "env",
        SecretKind::File => "file",
    }
}

/// What a change did, for people.
fn describe(name: &str, c: &SecretChange) -> String {
    let mut out = match &c.secret {
        Some(s) => format!("{name}: version {} ({})\n", s.version, kind(s.kind)),
        None => format!("{name}: removed\n"),
    };
    if !c.updated.is_empty() {
        out.push_str(&format!("changed now in: {}\n", c.updated.join(", ")));
    }
    if !c.at_next_start.is_empty() {
        out.push_str(&format!(
            "changes at the next start of: {}\n",
            c.at_next_start.join(", ")
        ));
    }
    out
}
