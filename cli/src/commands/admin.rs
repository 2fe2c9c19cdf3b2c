//! `berth login`, `whoami`, `events`, `tiers`, and `admin` (join tokens,
//! API tokens).

use super::Ui;
use crate::args::{AdminCmd, AuditCmd, JoinTokenCmd, QuotaCmd, TokenCmd};
use crate::client::enc;
use crate::client::Client;
use crate::output::{cores, opt, size, table};
use crate::{config, fail, Outcome};
use berth_proto::api::{
    ApiTokenCreated, AuditEntry, AuditPage, AuditVerification, CreateApiToken, CreateJoinToken,
    JoinTokenCreated, Quota, QuotaLimits, Tier, WhoAmI,
};
use std::io::Write;
use std::path::PathBuf;

/// Checks a URL and token against the coordinator and saves them.
pub(crate) async fn login(
    ui: Ui,
    resolved: &config::Resolved,
    cfg_path: Option<PathBuf>,
    with_token: Option<String>,
) -> Outcome {
    let token = with_token.or(resolved.token.clone()).ok_or_else(|| {
        fail(
            "usage",
            "give the token with --with-token, --token or BERTH_TOKEN (or sign in with --oidc)",
        )
    })?;
    save_login(ui, resolved, cfg_path, token).await
}

/// Checks `token` against the coordinator and saves it with the URL.
pub(crate) async fn save_login(
    ui: Ui,
    resolved: &config::Resolved,
    cfg_path: Option<PathBuf>,
    token: String,
) -> Outcome {
    let c = Client::new(
        resolved.url.clone(),
        Some(token.clone()),
        resolved.ca.as_deref(),
    )?;
    let me: WhoAmI = c.get("/v1/whoami").await?;
    let path = cfg_path.ok_or_else(|| fail("cli_error", "no HOME to keep the config in"))?;
    config::save(
        &path,
        &config::File {
            url: Some(resolved.url.clone()),
            token: Some(token),
            ca: resolved.ca.clone(),
        },
    )?;
    if ui.json {
        println!("{}", serde_json::to_string(&me).unwrap_or_default());
    } else {
        println!(
            "Logged in to {} as {} ({}); saved in {}",
            resolved.url,
            me.user,
            me.role,
            path.display()
        );
    }
    Ok(0)
}

pub(crate) async fn whoami(c: &Client, ui: Ui) -> Outcome {
    let me: WhoAmI = c.get("/v1/whoami").await?;
    ui.print(&me, || format!("{} ({})\n", me.user, me.role));
    Ok(0)
}

/// Follows workspace changes, a line each, until interrupted.
pub(crate) async fn events(c: &Client, ui: Ui) -> Outcome {
    let mut rx = c.events().await?;
    if !ui.quiet {
        // The stream is open: from here on no change is missed.
        eprintln!("berth: following workspace events (Ctrl-C ends)");
    }
    while let Some(ev) = rx.recv().await {
        if ui.json {
            println!("{}", serde_json::to_string(&ev).unwrap_or_default());
        } else {
            println!(
                "{}  {}/{}  {}  node={}  gen={}{}",
                berth_proto::units::rfc3339(ev.at_ms.div_euclid(1000)),
                ev.owner,
                ev.name,
                ev.state,
                opt(ev.node.as_deref()),
                ev.generation,
                ev.reason.map(|r| format!("  ({r})")).unwrap_or_default()
            );
        }
        std::io::stdout().flush().ok();
    }
    Err(fail(
        "stream_closed",
        "the coordinator closed the event stream",
    ))
}

pub(crate) async fn tiers(c: &Client, ui: Ui) -> Outcome {
    let tiers: Vec<Tier> = c.get("/v1/tiers").await?;
    ui.print(&tiers, || {
        let rows: Vec<Vec<String>> = tiers
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    cores(u64::from(t.cpu_millis)),
                    size(t.memory_bytes),
                    size(t.disk_bytes),
                    t.pids.to_string(),
                    grants(t),
                ]
            })
            .collect();
        table(&["TIER", "CPU", "MEMORY", "DISK", "PIDS", "GRANTS"], &rows)
    });
    Ok(0)
}

/// What a tier grants beyond the security defaults, for the tiers table.
fn grants(t: &Tier) -> String {
    let mut g = Vec::new();
    if t.nested_userns {
        g.push("nested user namespaces".to_string());
    }
    if !t.egress_allow.is_empty() {
        g.push(format!("egress to {}", t.egress_allow.join(", ")));
    }
    match g.is_empty() {
        true => "-".into(),
        false => g.join("; "),
    }
}

pub(crate) async fn run(c: &Client, ui: Ui, cmd: AdminCmd) -> Outcome {
    match cmd {
        AdminCmd::JoinToken {
            cmd: JoinTokenCmd::Create { ttl, uses },
        } => {
            let body = CreateJoinToken {
                ttl_seconds: Some(ttl.as_secs()),
                uses: Some(uses),
            };
            let r: JoinTokenCreated = c.post("/v1/join-tokens", &body).await?;
            ui.print(&r, || format!("{}\n", r.token));
        }
        AdminCmd::JoinToken {
            cmd: JoinTokenCmd::Revoke { id },
        } => {
            let id = id.split('.').next().unwrap_or_default().to_string();
            c.delete_empty(&format!("/v1/join-tokens/{}", enc(&id)))
                .await?;
            ui.progress(&format!("Revoked join token {id}"));
        }
        AdminCmd::Token {
            cmd: TokenCmd::Create { user, role },
        } => {
            let r: ApiTokenCreated = c.post("/v1/tokens", &CreateApiToken { user, role }).await?;
            ui.print(&r, || format!("{}\n", r.token));
        }
        AdminCmd::Capacity(a) => return super::reports::capacity(c, ui, a).await,
        AdminCmd::Usage(a) => return super::reports::usage(c, ui, a).await,
        AdminCmd::Quota {
            cmd: QuotaCmd::Get { user, team },
        } => return super::reports::quota(c, ui, Some(quota_path(&user, team))).await,
        AdminCmd::Quota {
            cmd:
                QuotaCmd::Set {
                    user,
                    team,
                    running,
                    workspaces,
                    cpu,
                    memory,
                    disk,
                    budget,
                },
        } => {
            let limits = QuotaLimits {
                running,
                workspaces,
                cpu_millis: cpu.map(u64::from),
                memory_bytes: memory,
                disk_bytes: disk,
                monthly_budget: budget,
            };
            let q: Quota = c.put(&quota_path(&user, team), &limits).await?;
            ui.print(&q, || super::reports::quota_text(&q));
        }
        AdminCmd::Audit {
            cmd: Some(AuditCmd::Verify),
            ..
        } => {
            let v: AuditVerification = c.get("/v1/admin/audit/verify").await?;
            ui.print(&v, || match &v.problem {
                None => format!("ok: {} entries, chain intact\n", v.checked),
                Some(p) => format!("BROKEN: {p}\n"),
            });
            if let Some(p) = v.problem {
                return Err(fail("audit_chain_broken", p));
            }
        }
        AdminCmd::Audit {
            cmd: None,
            actor,
            action,
            resource,
            since,
            limit,
        } => {
            let mut query = Vec::new();
            for (k, v) in [("actor", actor), ("action", action), ("resource", resource)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", enc(&v)));
                }
            }
            if let Some(d) = since {
                let since_ms = berth_proto::units::now_ms() - d.as_millis() as i64;
                query.push(format!("since_ms={since_ms}"));
            }
            let entries = audit_entries(c, &query, limit).await?;
            if ui.json {
                // One entry per line: the export format.
                for e in &entries {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                }
            } else if !ui.quiet {
                print!("{}", audit_table(&entries));
            }
        }
    }
    Ok(0)
}

/// The API path of a user's quota, or a team's.
fn quota_path(name: &str, team: bool) -> String {
    match team {
        true => format!("/v1/teams/{}/quota", enc(name)),
        false => format!("/v1/admin/quotas/{}", enc(name)),
    }
}

/// Up to `limit` entries the filters in `query` select, page by page.
async fn audit_entries(
    c: &Client,
    query: &[String],
    limit: u64,
) -> Result<Vec<AuditEntry>, crate::Failure> {
    let mut out = Vec::new();
    let mut after = 0;
    while (out.len() as u64) < limit {
        let page_size = (limit - out.len() as u64).min(1000);
        let mut q = query.to_vec();
        q.push(format!("after={after}"));
        q.push(format!("limit={page_size}"));
        let page: AuditPage = c.get(&format!("/v1/admin/audit?{}", q.join("&"))).await?;
        out.extend(page.entries);
        match page.next_after {
            Some(a) => after = a,
            None => break,
        }
    }
    Ok(out)
}

fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                berth_proto::units::rfc3339(e.at_ms.div_euclid(1000)),
                if e.actor.is_empty() {
                    "-".into()
                } else {
                    e.actor.clone()
                },
                e.action.clone(),
                e.resource.clone(),
                e.status.to_string(),
                opt(Some(e.error_code.as_str()).filter(|c| !c.is_empty())),
                e.request_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "STATUS", "ERROR", "REQUEST",
        ],
        &rows,
    )
}
