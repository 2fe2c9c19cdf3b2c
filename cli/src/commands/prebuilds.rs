//! `berth prebuild run|list`.

use super::Ui;
use crate::args::PrebuildCmd;
use crate::client::{enc, Client};
use crate::output::{age, opt, short, size, table};
use crate::Outcome;
use berth_proto::api::{Prebuild, Repo, RunPrebuild};
use berth_proto::units::now_ms;
use std::time::Duration;

pub(crate) async fn run(c: &Client, ui: Ui, cmd: PrebuildCmd) -> Outcome {
    match cmd {
        PrebuildCmd::Run {
            repo,
            branch,
            image,
            tier,
            no_wait,
        } => {
            let req = RunPrebuild {
                repo: Repo {
                    url: repo,
                    branch,
                    ..Default::default()
                },
                image,
                tier,
            };
            let mut p: Prebuild = c.post("/v1/prebuilds", &req).await?;
            let show_log = !ui.quiet && !ui.json;
            if show_log {
                eprintln!("prebuild {} of {}: {}", p.id, p.repo_url, p.state);
            }
            let path = format!("/v1/prebuilds/{}", enc(&p.id));
            let mut streamed = false;
            while !no_wait && matches!(p.state.as_str(), "queued" | "building") {
                // Its log on standard error while it builds (once its
                // build workspace is there to read it from).
                if show_log && !streamed && p.state == "building" {
                    let log = c
                        .get_stream(&format!("{path}/log?follow=true"), &mut std::io::stderr())
                        .await;
                    streamed = log.is_ok();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                p = c.get(&path).await?;
            }
            ui.print(&p, || details(&p));
            Ok(if p.state == "failed" { 1 } else { 0 })
        }
        PrebuildCmd::List { repo } => {
            let path = match &repo {
                Some(r) => format!("/v1/prebuilds?repo={}", enc(r)),
                None => "/v1/prebuilds".into(),
            };
            let list: Vec<Prebuild> = c.get(&path).await?;
            let now = now_ms();
            ui.print(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.repo_url.clone(),
                            opt(Some(&p.branch)),
                            p.state.clone(),
                            opt(Some(short(&p.key))),
                            opt(Some(short(&p.commit))),
                            size(p.bytes),
                            age(p.created_at_ms, now),
                            opt(Some(&p.node)),
                            match (p.nodes.is_empty(), p.source.is_empty()) {
                                (true, true) => "-".to_string(),
                                (true, false) => "registry".to_string(),
                                (false, true) => p.nodes.join(","),
                                (false, false) => format!("{},registry", p.nodes.join(",")),
                            },
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "REPO", "BRANCH", "STATE", "KEY", "COMMIT", "SIZE", "AGE",
                        "BUILT ON", "HELD BY",
                    ],
                    &rows,
                )
            });
            Ok(0)
        }
    }
}

fn details(p: &Prebuild) -> String {
    let mut out = format!("prebuild {} of {}: {}\n", p.id, p.repo_url, p.state);
    if p.state == "ready" {
        out.push_str(&format!(
            "  key {} at {}, {} in {} files, built on {}\n",
            p.key,
            short(&p.commit),
            size(p.bytes),
            p.files,
            p.node
        ));
        if !p.nodes.is_empty() {
            out.push_str(&format!("  held by {}\n", p.nodes.join(", ")));
        }
        if !p.source.is_empty() {
            out.push_str(&format!("  in the registry as {}\n", p.source));
        }
    }
    for s in &p.steps {
        out.push_str(&format!(
            "  {:<22} {:<8} {:.1}s\n",
            s.name,
            s.state,
            s.duration_ms as f64 / 1000.0
        ));
    }
    if !p.error.is_empty() {
        out.push_str(&format!("  error {}: {}\n", p.error_code, p.error));
    }
    out
}
