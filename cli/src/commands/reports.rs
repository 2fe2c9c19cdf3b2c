//! `berth admin capacity` and `berth admin usage`: the coordinator's
//! capacity and cost reports (`docs/admin.md`).

use super::Ui;
use crate::args::{CapacityArgs, UsageArgs};
use crate::args::{Target, TeamCmd};
use crate::client::{enc, Client};
use crate::output::{cores, size, table};
use crate::Outcome;
use berth_proto::api::{
    CapacityReport, CreateTeam, NodeResources, Quota, SetTeamMember, Shares, Team, UsageReport,
};

/// "used/total" of one resource.
fn of(used: String, total: String) -> String {
    format!("{used}/{total}")
}

fn money(v: f64) -> String {
    format!("{v:.4}")
}

fn stranded(r: &NodeResources) -> String {
    format!(
        "{} CPU, {} mem, {} disk",
        cores(r.cpu_millis),
        size(r.memory_bytes),
        size(r.disk_bytes)
    )
}

pub(crate) async fn capacity(c: &Client, ui: Ui, a: CapacityArgs) -> Outcome {
    let mut q = Vec::new();
    if let Some(t) = &a.tier {
        q.push(format!("tier={}", enc(t)));
    }
    if let Some(m) = a.more {
        q.push(format!("more={m}"));
    }
    if let Some(l) = &a.like {
        q.push(format!("like={}", enc(l)));
    }
    let r: CapacityReport = c
        .get(&format!("/v1/admin/capacity?{}", q.join("&")))
        .await?;
    ui.print(&r, || {
        let nodes: Vec<Vec<String>> = r
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.state.clone(),
                    of(
                        cores(n.allocated.cpu_millis),
                        cores(n.allocatable.cpu_millis),
                    ),
                    of(
                        size(n.allocated.memory_bytes),
                        size(n.allocatable.memory_bytes),
                    ),
                    of(size(n.allocated.disk_bytes), size(n.allocatable.disk_bytes)),
                    of(
                        n.allocated.workspaces.to_string(),
                        n.allocatable.workspaces.to_string(),
                    ),
                    n.used.as_ref().map_or("-".into(), |u| {
                        format!(
                            "{} CPU, {} mem, {} disk",
                            cores(u.cpu_millis),
                            size(u.memory_bytes),
                            size(u.disk_bytes)
                        )
                    }),
                    money(n.hourly),
                    format!(
                        "{} images, {} prebuilds",
                        n.cached_images.len(),
                        n.cached_prebuilds
                    ),
                ]
            })
            .collect();
        let tiers: Vec<Vec<String>> = r
            .tiers
            .iter()
            .map(|t| {
                vec![
                    t.tier.clone(),
                    t.fits.to_string(),
                    stranded(&t.stranded),
                    t.hourly.map_or("-".into(), money),
                    t.needed.as_ref().map_or("-".into(), |n| match n.nodes {
                        Some(k) => format!("{k} like {} for {} more", n.like, n.more),
                        None => format!("a node like {} takes none", n.like),
                    }),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "NODE",
                "STATE",
                "CPU",
                "MEMORY",
                "DISK",
                "WORKSPACES",
                "USED",
                "PER HOUR",
                "CACHED",
            ],
            &nodes,
        );
        out.push('\n');
        out.push_str(&table(
            &["TIER", "FITS NOW", "STRANDED", "PER HOUR", "NODES NEEDED"],
            &tiers,
        ));
        out.push_str(&format!(
            "\nCost per hour: {} for the nodes, {} reserved by workspaces, {} idle\n",
            money(r.cost.hourly),
            money(r.cost.allocated_hourly),
            money(r.cost.idle_hourly)
        ));
        for f in &r.forecast {
            out.push_str(&format!(
                "Forecast {}: {} of {} allocated; {}\n",
                f.resource,
                f.allocated,
                f.allocatable,
                match f.runs_out_in_hours {
                    Some(h) => format!(
                        "runs out in {h:.0} h at the trend of {} hourly samples",
                        f.samples
                    ),
                    None => format!("not growing ({} hourly samples)", f.samples),
                }
            ));
        }
        out
    });
    Ok(0)
}

pub(crate) async fn usage(c: &Client, ui: Ui, a: UsageArgs) -> Outcome {
    let since_ms = berth_proto::units::now_ms() - a.since.as_millis() as i64;
    let path = format!("/v1/admin/usage?since_ms={since_ms}&by={}", enc(&a.by));
    if a.csv {
        c.get_stream(&format!("{path}&format=csv"), &mut std::io::stdout())
            .await?;
        return Ok(0);
    }
    let r: UsageReport = c.get(&path).await?;
    ui.print(&r, || {
        let rows: Vec<Vec<String>> = r
            .rows
            .iter()
            .map(|u| {
                vec![
                    u.key.clone(),
                    u.workspaces.to_string(),
                    format!("{:.2}", u.hours),
                    format!("{:.2}", u.idle_hours),
                    money(u.cost),
                    money(u.idle_cost),
                ]
            })
            .collect();
        table(
            &[
                &r.by.to_uppercase(),
                "WORKSPACES",
                "HOURS",
                "IDLE HOURS",
                "COST",
                "IDLE COST",
            ],
            &rows,
        )
    });
    Ok(0)
}

/// `berth quota` (the caller's) and `berth admin quota get` (its path).
pub(crate) async fn quota(c: &Client, ui: Ui, path: Option<String>) -> Outcome {
    let path = path.unwrap_or_else(|| "/v1/quota".to_string());
    let q: Quota = c.get(&path).await?;
    ui.print(&q, || quota_text(&q));
    Ok(0)
}

/// A quota as a table: each limit, what is used, whose limit it is.
pub(crate) fn quota_text(q: &Quota) -> String {
    let (l, u, own) = (&q.limits, &q.usage, &q.set_for_user);
    let limit = |v: Option<u64>, f: fn(u64) -> String| v.map_or("none".to_string(), f);
    let whose = |set: bool| {
        match (set, q.team) {
            (true, false) => "set for user",
            (true, true) => "set for team",
            (false, false) => "default",
            (false, true) => "none",
        }
        .to_string()
    };
    let n = |v: u64| v.to_string();
    let rows = vec![
        vec![
            "running workspaces".into(),
            n(u.running),
            limit(l.running, n),
            whose(own.running.is_some()),
        ],
        vec![
            "workspaces".into(),
            n(u.workspaces),
            limit(l.workspaces, n),
            whose(own.workspaces.is_some()),
        ],
        vec![
            "CPU".into(),
            cores(u.cpu_millis),
            limit(l.cpu_millis, cores),
            whose(own.cpu_millis.is_some()),
        ],
        vec![
            "memory".into(),
            size(u.memory_bytes),
            limit(l.memory_bytes, size),
            whose(own.memory_bytes.is_some()),
        ],
        vec![
            "disk".into(),
            size(u.disk_bytes),
            limit(l.disk_bytes, size),
            whose(own.disk_bytes.is_some()),
        ],
        vec![
            "cost this month".into(),
            money(q.spent_this_month),
            l.monthly_budget.map_or("none".to_string(), money),
            whose(own.monthly_budget.is_some()),
        ],
    ];
    let whose = if q.team { "team " } else { "" };
    format!(
        "Quota of {whose}{}\n{}",
        q.user,
        table(&["", "USED", "LIMIT", "LIMIT FROM"], &rows)
    )
}

/// `berth team …`.
pub(crate) async fn team(c: &Client, ui: Ui, cmd: TeamCmd) -> Outcome {
    let teams: Vec<Team> = match cmd {
        TeamCmd::List => c.get("/v1/teams").await?,
        TeamCmd::Create { name } => vec![c.post("/v1/teams", &CreateTeam { name }).await?],
        TeamCmd::Set { team, user, role } => vec![
            c.put(
                &format!("/v1/teams/{}/members/{}", enc(&team), enc(&user)),
                &SetTeamMember { role },
            )
            .await?,
        ],
        TeamCmd::Remove { team, user } => vec![
            c.delete(&format!("/v1/teams/{}/members/{}", enc(&team), enc(&user)))
                .await?,
        ],
    };
    ui.print(&teams, || {
        let rows: Vec<Vec<String>> = teams
            .iter()
            .flat_map(|t| {
                let members: Vec<Vec<String>> = t
                    .members
                    .iter()
                    .map(|m| vec![t.name.clone(), m.user.clone(), m.role.clone()])
                    .collect();
                if members.is_empty() {
                    vec![vec![t.name.clone(), "-".into(), "-".into()]]
                } else {
                    members
                }
            })
            .collect();
        table(&["TEAM", "USER", "ROLE"], &rows)
    });
    Ok(0)
}

/// `berth share NAME [USER] [--remove]`.
pub(crate) async fn share(
    c: &Client,
    ui: Ui,
    t: Target,
    user: Option<String>,
    remove: bool,
) -> Outcome {
    let s: Shares = match &user {
        None => c.get(&super::ws_path(&t, "/shares")).await?,
        Some(u) => {
            let path = super::ws_path(&t, &format!("/shares/{}", enc(u)));
            match remove {
                true => c.delete(&path).await?,
                false => c.put(&path, &serde_json::json!({})).await?,
            }
        }
    };
    ui.print(&s, || match s.users.is_empty() {
        true => format!("{} is shared with nobody\n", t.name),
        false => format!(
            "{} is shared (read-only) with {}\n",
            t.name,
            s.users.join(", ")
        ),
    });
    Ok(0)
}
