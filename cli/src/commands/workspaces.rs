//! `berth create`, `list`, `get`, `start`, `stop`, `delete`.

use super::{request_then_wait, ws_path, Ui};
use crate::args::{Change, CreateArgs, Target};
use crate::client::{enc, Client};
use crate::output::{age, cores, opt, short, size, table};
use crate::Outcome;
use berth_proto::api::{CreateWorkspace, Idle, Init, Repo, State, Workspace};
use berth_proto::units::now_ms;
use serde_json::json;

pub(crate) async fn create(c: &Client, ui: Ui, a: CreateArgs) -> Outcome {
    let body = CreateWorkspace {
        name: a.name.clone(),
        image: a.image,
        tier: a.tier,
        cpu_millis: a.cpu,
        memory_bytes: a.memory,
        disk_bytes: a.disk,
        pids: a.pids,
        env: Some(a.env.into_iter().collect()),
        node_selector: Some(a.selector.into_iter().collect()),
        start: Some(!a.no_start),
        team: a.team,
        repo: a.repo.map(|url| Repo {
            url,
            branch: a.branch,
            commit: a.commit,
            partial: a.partial,
            init_command: a.init_command,
        }),
    };
    let target = Target {
        name: a.name.clone(),
        owner: None,
    };
    // Created stopped, it is done once its node has made it.
    let want = match a.no_start {
        true => State::Stopped,
        false => State::Running,
    };
    let w = request_then_wait(
        c,
        ui,
        &target,
        want,
        a.wait,
        c.post("/v1/workspaces", &body),
    )
    .await?;
    ui.print(&w, || workspace_details(&w));
    Ok(0)
}

/// `verb` (start, stop or delete), then wait until `want`.
pub(crate) async fn change(c: &Client, ui: Ui, ch: Change, verb: &str, want: State) -> Outcome {
    let action = ws_path(&ch.target, &format!("/{verb}"));
    let body = json!({});
    let request = c.post(&action, &body);
    let w = request_then_wait(c, ui, &ch.target, want, ch.wait, request).await?;
    ui.print(&w, || format!("{}: {}\n", w.name, w.state));
    Ok(0)
}

/// Deletes a workspace (`force`: without the backup of its stop first).
pub(crate) async fn delete(c: &Client, ui: Ui, ch: Change, force: bool) -> Outcome {
    let mut path = ws_path(&ch.target, "");
    if force {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str("force=true");
    }
    let request = c.delete(&path);
    let w = request_then_wait(c, ui, &ch.target, State::Deleted, ch.wait, request).await?;
    ui.print(&w, || format!("{}: {}\n", w.name, w.state));
    Ok(0)
}

pub(crate) async fn list(
    c: &Client,
    ui: Ui,
    state: Option<String>,
    node: Option<String>,
    owner: Option<String>,
    all: bool,
) -> Outcome {
    let mut q = Vec::new();
    if let Some(s) = state {
        q.push(format!("state={}", enc(&s)));
    }
    if let Some(n) = node {
        q.push(format!("node={}", enc(&n)));
    }
    // `owner` is the query part choosing whose: owner=, team= or shared=.
    if all {
        q.push("owner=%2A".into());
    } else if let Some(o) = owner {
        q.push(o);
    }
    let path = match q.is_empty() {
        true => "/v1/workspaces".to_string(),
        false => format!("/v1/workspaces?{}", q.join("&")),
    };
    let list: Vec<Workspace> = c.get(&path).await?;
    ui.print(&list, || workspace_table(&list, all));
    Ok(0)
}

pub(crate) async fn get(c: &Client, ui: Ui, t: Target) -> Outcome {
    let w: Workspace = c.get(&ws_path(&t, "")).await?;
    ui.print(&w, || workspace_details(&w));
    Ok(0)
}

fn workspace_table(list: &[Workspace], with_owner: bool) -> String {
    let now = now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let mut r = vec![];
            if with_owner {
                r.push(w.owner.clone());
            }
            r.extend([
                w.name.clone(),
                w.state.to_string(),
                opt(w.node.as_deref()),
                cores(w.cpu_millis),
                size(w.memory_bytes),
                size(w.disk_bytes),
                age(w.created_at_ms, now),
                w.image.clone(),
            ]);
            r
        })
        .collect();
    let mut h = vec![];
    if with_owner {
        h.push("OWNER");
    }
    h.extend([
        "NAME", "STATE", "NODE", "CPU", "MEMORY", "DISK", "AGE", "IMAGE",
    ]);
    table(&h, &rows)
}

fn workspace_details(w: &Workspace) -> String {
    let now = now_ms();
    let mut rows = vec![
        ("Name", w.name.clone()),
        ("Owner", w.owner.clone()),
        ("State", format!("{} (wanted {})", w.state, w.desired)),
        ("Image", w.image.clone()),
        ("Node", opt(w.node.as_deref())),
        ("IP", opt(w.ip.as_deref())),
        (
            "Resources",
            format!(
                "{} CPU, {} memory, {} disk, {} pids",
                cores(w.cpu_millis),
                size(w.memory_bytes),
                size(w.disk_bytes),
                w.pids
            ),
        ),
        (
            "Uses",
            match &w.usage {
                Some(u) => format!(
                    "{} CPU, {} memory, {} disk (measured {} ago)",
                    cores(u.cpu_millis),
                    size(u.memory_bytes),
                    size(u.disk_bytes),
                    age(u.at_ms, now)
                ),
                None => "-".into(),
            },
        ),
        ("Generation", w.generation.to_string()),
        ("Created", format!("{} ago", age(w.created_at_ms, now))),
        ("Updated", format!("{} ago", age(w.updated_at_ms, now))),
        ("ID", w.id.clone()),
    ];
    if let Some(r) = w.reason.as_deref().filter(|r| !r.is_empty()) {
        rows.insert(3, ("Reason", r.to_string()));
    }
    if let Some(code) = w.exit_code {
        rows.insert(3, ("Exit code", code.to_string()));
    }
    if !w.env.is_empty() {
        let keys: Vec<&str> = w.env.keys().map(String::as_str).collect();
        rows.push(("Env", keys.join(", ")));
    }
    if !w.node_selector.is_empty() {
        let sel: Vec<String> = w
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rows.push(("Selector", sel.join(", ")));
    }
    if let Some(r) = &w.repo {
        let mut repo = r.url.clone();
        if let Some(b) = &r.branch {
            repo.push_str(&format!(" (branch {b})"));
        }
        rows.push(("Repo", repo));
    }
    if let Some(i) = &w.idle {
        rows.extend(idle_rows(i, now));
    }
    if let Some(b) = &w.backup {
        rows.push(("Backup", super::backups::summary(b, now)));
        rows.push((
            "Covers",
            "/workspace and home directories; not the rest of the root filesystem (apt installs, /tmp)".into(),
        ));
        if let Some(at) = b.delete_requested_at_ms {
            rows.push((
                "Deleting",
                format!(
                    "asked {} ago; once the backup of its stop is confirmed",
                    age(at, now)
                ),
            ));
        }
        if let Some(m) = &b.moved {
            let when = m.done_at_ms.unwrap_or(m.requested_at_ms);
            rows.push((
                "Moved",
                format!("from {} {} ago: {}", m.from_node, age(when, now), m.why),
            ));
        }
    }
    let mut out: String = rows
        .iter()
        .map(|(k, v)| format!("{:<11} {v}\n", format!("{k}:")))
        .collect();
    if let Some(init) = &w.init {
        out.push_str(&init_details(init));
    }
    out
}

/// Awake or idle, why, and when the idle policy stops it.
fn idle_rows(i: &Idle, now: i64) -> Vec<(&'static str, String)> {
    let mut rows = vec![("Activity", i.summary.clone())];
    if i.processes > 0 {
        rows.push((
            "Processes",
            format!("{} (newest: {})", i.processes, i.newest),
        ));
    }
    if let Some(until) = i.keepalive_until_ms {
        rows.push(("Keepalive", format!("for {}", age(now, until))));
    }
    match i.stops_at_ms {
        Some(at) if at > now => {
            rows.push(("Stops", format!("in {} if nothing happens", age(now, at))))
        }
        Some(_) => rows.push(("Stops", "now".into())),
        None if i.timeout_seconds == 0 => rows.push(("Stops", "never for idleness".into())),
        None => {}
    }
    rows
}

/// Holds a workspace from an idle stop for a while.
pub(crate) async fn keepalive(c: &Client, ui: Ui, t: Target, d: std::time::Duration) -> Outcome {
    let body = json!({ "seconds": d.as_secs() });
    let w: Workspace = c.post(&ws_path(&t, "/keepalive"), &body).await?;
    ui.print(&w, || {
        match w.idle.as_ref().and_then(|i| i.keepalive_until_ms) {
            Some(until) => format!(
                "{} kept running for {} (unless stopped by hand)\n",
                w.name,
                age(now_ms(), until)
            ),
            None => format!("{}: no keepalive\n", w.name),
        }
    });
    Ok(0)
}

/// Sets a workspace's own idle timeout (`default`: its tier's).
pub(crate) async fn idle_timeout(c: &Client, ui: Ui, t: Target, timeout: &str) -> Outcome {
    let seconds = match timeout {
        "default" => None,
        d => Some(
            berth_proto::units::parse_duration(d)
                .map_err(|e| crate::fail("usage", format!("idle-timeout {d:?}: {e}")))?
                .as_secs(),
        ),
    };
    let w: Workspace = c
        .post(
            &ws_path(&t, "/idle-timeout"),
            &json!({ "seconds": seconds }),
        )
        .await?;
    ui.print(&w, || {
        let s = w.idle.as_ref().map_or(0, |i| i.timeout_seconds);
        match s {
            0 => format!("{}: never stopped for being idle\n", w.name),
            s => format!("{}: stops after {} idle\n", w.name, age(0, s as i64 * 1000)),
        }
    });
    Ok(0)
}

/// A repository workspace's commit, configuration and steps.
fn init_details(i: &Init) -> String {
    let mut out = String::new();
    let line = |k: &str, v: &str| format!("{:<11} {v}\n", format!("{k}:"));
    if !i.commit.is_empty() {
        out.push_str(&line("Commit", &i.commit));
    }
    if !i.folder.is_empty() {
        out.push_str(&line("Folder", &i.folder));
    }
    if !i.source.is_empty() {
        out.push_str(&line("Config", &i.source));
    }
    if let Some(p) = &i.prebuild {
        let what = match p.outcome.as_str() {
            "missing" => format!("none ({}; wanted {})", p.note, short(&p.key)),
            _ => format!(
                "{} at {}, built {} ago ({})",
                short(&p.key),
                short(&p.commit),
                age(p.built_at_ms, now_ms()),
                p.note
            ),
        };
        out.push_str(&line("Prebuild", &what));
    }
    for p in &i.ports {
        let label = match p.label.as_str() {
            "" => String::new(),
            l => format!(" ({l})"),
        };
        out.push_str(&line("Port", &format!("{}{label}", p.port)));
    }
    for warning in &i.warnings {
        out.push_str(&line("Warning", warning));
    }
    if !i.steps.is_empty() {
        out.push_str("Init steps:\n");
        let rows: Vec<Vec<String>> = i
            .steps
            .iter()
            .map(|s| {
                let exit = match (s.exit_code, s.code.as_str()) {
                    (_, "") | (_, "exit_status") => {
                        s.exit_code.map(|c| c.to_string()).unwrap_or_default()
                    }
                    (Some(c), code) => format!("{c} ({code})"),
                    (None, code) => code.to_string(),
                };
                // A skipped step says why (ran in the prebuild, ...).
                let command = match (s.state.as_str(), s.tail.as_str()) {
                    ("skipped", why) if !why.is_empty() => format!("({why}) {}", s.command),
                    _ => s.command.clone(),
                };
                vec![
                    format!("  {}", s.name),
                    s.state.clone(),
                    format!("{:.1}s", s.duration_ms as f64 / 1000.0),
                    exit,
                    command,
                ]
            })
            .collect();
        out.push_str(&table(
            &["  STEP", "STATE", "TIME", "EXIT", "COMMAND"],
            &rows,
        ));
        for s in i
            .steps
            .iter()
            .filter(|s| s.state == "failed" && !s.tail.is_empty())
        {
            out.push_str(&format!("{} failed; its last lines:\n", s.name));
            for l in s.tail.lines() {
                out.push_str(&format!("  | {l}\n"));
            }
        }
    }
    out
}
