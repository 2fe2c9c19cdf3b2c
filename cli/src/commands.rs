//! What each subcommand does: `run` dispatches to one file per noun;
//! what several share (output mode, workspace paths, waiting for a state)
//! is here.

mod admin;
mod backups;
mod exec;
mod nodes;
mod oidc;
mod prebuilds;
mod reports;
mod repos;
mod secrets;
mod ssh;
mod ssh_keys;
mod trust;
mod tunnels;
mod workspaces;

use crate::args::{Cli, Cmd, NodesCmd, Target, Wait};
use crate::client::{self, enc, Client};
use crate::{config, fail, Failure, Outcome};
use berth_proto::api::{Desired, Progress, State, Workspace, WorkspaceEvent};
use std::time::{Duration, Instant};

/// How to print: JSON or tables, and whether progress goes to stderr.
#[derive(Clone, Copy)]
pub(crate) struct Ui {
    pub json: bool,
    pub quiet: bool,
}

impl Ui {
    /// Prints `v` as JSON, or `human()`.
    pub fn print<T: serde::Serialize>(&self, v: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", human());
        }
    }

    /// A progress line on standard error, unless quiet.
    pub fn progress(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

/// Runs the command line.
pub(crate) async fn run(cli: Cli) -> Outcome {
    let cfg_path = config::path();
    let file = match &cfg_path {
        Some(p) => config::load(p)?,
        None => config::File::default(),
    };
    let resolved = config::resolve(
        cli.url.clone(),
        cli.token.clone(),
        cli.ca_file.as_deref(),
        &file,
    )?;
    let ui = Ui {
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.cmd {
        Cmd::Login {
            oidc,
            with_token,
            ca_fingerprint,
        } => {
            let resolved = trust::establish(resolved, ca_fingerprint.as_deref()).await?;
            return match oidc {
                true => oidc::login(ui, &resolved, cfg_path).await,
                false => admin::login(ui, &resolved, cfg_path, with_token).await,
            };
        }
        Cmd::ConfigSsh {
            ssh_config,
            dry_run,
        } => {
            let path = ssh_config
                .or_else(ssh::default_config)
                .ok_or_else(|| fail("cli_error", "no HOME: pass --ssh-config"))?;
            return ssh::config_ssh(&path, dry_run);
        }
        _ => {}
    }
    if resolved.token.is_none() {
        return Err(fail(
            "no_token",
            format!(
                "no API token: pass --token, set BERTH_TOKEN or run `berth login` (coordinator {})",
                resolved.url
            ),
        ));
    }
    let c = Client::new(
        resolved.url.clone(),
        resolved.token.clone(),
        resolved.ca.as_deref(),
    )?;
    match cli.cmd {
        Cmd::Login { .. } | Cmd::ConfigSsh { .. } => unreachable!("handled above"),
        Cmd::Ssh {
            target,
            stdio,
            known_hosts,
            argv,
        } => match (stdio, known_hosts) {
            (true, _) => ssh::stdio(&c, target).await,
            (_, true) => ssh::known_hosts(&c, target).await,
            _ => ssh::exec_ssh(
                target,
                argv,
                &resolved.url,
                resolved.token.as_deref(),
                cli.ca_file.as_deref(),
            ),
        },
        Cmd::SshKey { cmd } => ssh_keys::run(&c, ui, cmd).await,
        Cmd::Activity(t) => tunnels::activity(&c, ui, t).await,
        Cmd::Whoami => admin::whoami(&c, ui).await,
        Cmd::Quota => reports::quota(&c, ui, None).await,
        Cmd::Share {
            target,
            user,
            remove,
        } => reports::share(&c, ui, target, user, remove).await,
        Cmd::Team { cmd } => reports::team(&c, ui, cmd).await,
        Cmd::Secret { cmd } => secrets::run(&c, ui, cmd).await,
        Cmd::Create(a) => workspaces::create(&c, ui, a).await,
        Cmd::List {
            state,
            node,
            owner,
            all,
            team,
            shared,
        } => {
            let owner = match (team, shared) {
                (Some(t), _) => Some(format!("team={}", crate::client::enc(&t))),
                (None, true) => Some("shared=true".into()),
                (None, false) => owner.map(|o| format!("owner={}", crate::client::enc(&o))),
            };
            workspaces::list(&c, ui, state, node, owner, all).await
        }
        Cmd::Get(t) => workspaces::get(&c, ui, t).await,
        Cmd::Start(ch) => workspaces::change(&c, ui, ch, "start", State::Running).await,
        Cmd::Stop(ch) => workspaces::change(&c, ui, ch, "stop", State::Stopped).await,
        Cmd::Keepalive { target, duration } => {
            workspaces::keepalive(&c, ui, target, duration).await
        }
        Cmd::IdleTimeout { target, timeout } => {
            workspaces::idle_timeout(&c, ui, target, &timeout).await
        }
        Cmd::Backups {
            target,
            exclude_ignored,
        } => backups::list(&c, ui, target, exclude_ignored).await,
        Cmd::Backup(t) => backups::now(&c, ui, t).await,
        Cmd::Restore { target, at, id } => backups::restore(&c, ui, target, id, at).await,
        Cmd::Delete { change, force } => workspaces::delete(&c, ui, change, force).await,
        Cmd::Exec(x) => exec::run(&c, ui, x).await,
        Cmd::PortForward {
            target,
            ports,
            address,
        } => tunnels::port_forward(&c, ui, target, ports, address).await,
        Cmd::Events => admin::events(&c, ui).await,
        Cmd::Logs {
            target,
            init,
            follow,
        } => repos::logs(&c, target, init, follow).await,
        Cmd::Sync { target, push, .. } => repos::sync(&c, ui, target, push).await,
        Cmd::Ports(t) => repos::ports(&c, ui, &resolved.url, t).await,
        Cmd::GitCredential { cmd } => repos::git_credential(&c, ui, cmd).await,
        Cmd::Config { cmd } => repos::config(&c, ui, cmd).await,
        Cmd::Prebuild { cmd } => prebuilds::run(&c, ui, cmd).await,
        Cmd::Open { name, port, editor } => {
            tunnels::open(&c, ui, &resolved.url, name, port, editor).await
        }
        Cmd::Tiers => admin::tiers(&c, ui).await,
        Cmd::Nodes { cmd } => nodes::run(&c, ui, cmd.unwrap_or(NodesCmd::List)).await,
        Cmd::Admin { cmd } => admin::run(&c, ui, cmd).await,
    }
}

/// The API path of a workspace (and what follows), with its owner.
pub(crate) fn ws_path(t: &Target, suffix: &str) -> String {
    let owner = t
        .owner
        .as_deref()
        .map(|o| format!("?owner={}", enc(o)))
        .unwrap_or_default();
    format!("/v1/workspaces/{}{suffix}{owner}", enc(&t.name))
}

/// Sends `request` and, unless told not to wait, follows the workspace it
/// answers with until it is `want`. The event stream is opened first, so no
/// change made by the request is missed.
pub(crate) async fn request_then_wait(
    c: &Client,
    ui: Ui,
    target: &Target,
    want: State,
    wait: Wait,
    request: impl std::future::Future<Output = client::Result<Workspace>>,
) -> Result<Workspace, Failure> {
    let events = if wait.no_wait {
        None
    } else {
        c.events().await.ok()
    };
    let w = request.await?;
    if wait.no_wait {
        return Ok(w);
    }
    wait_for(c, ui, events, target, w, want, wait.timeout).await
}

/// The desired state a wait for `want` expects the workspace to keep.
fn desired_of(want: State) -> Desired {
    match want {
        State::Deleted => Desired::Deleted,
        State::Stopped => Desired::Stopped,
        _ => Desired::Running,
    }
}

/// Follows a workspace until it reaches `want`, printing each state it
/// passes. Events come from the SSE stream when it is open (they are those of
/// the coordinator serving it), with a poll each second as the fallback.
async fn wait_for(
    c: &Client,
    ui: Ui,
    mut events: Option<tokio::sync::mpsc::Receiver<WorkspaceEvent>>,
    target: &Target,
    mut w: Workspace,
    want: State,
    timeout: Duration,
) -> Result<Workspace, Failure> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown = String::new();
    let mut pulled = String::new();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A new line for a new state, and for a new reason in the same
        // state (why a workspace stays pending, why a start waits).
        let now_showing = format!("{}\u{0}{}", w.state, w.reason.as_deref().unwrap_or(""));
        if now_showing != shown {
            let mut line = format!(
                "{}: {:<9} {:>6.2}s",
                w.name,
                w.state.as_str(),
                started.elapsed().as_secs_f64()
            );
            if let Some(n) = &w.node {
                line.push_str(&format!("  node {n}"));
            }
            if let Some(r) = w.reason.as_deref().filter(|r| !r.is_empty()) {
                line.push_str(&format!("  ({r})"));
            }
            ui.progress(&line);
            shown = now_showing;
        }
        if let Some(p) = &w.progress {
            let (step, line) = pull_line(p);
            if step != pulled {
                ui.progress(&format!(
                    "{}: {:<9} {:>6.2}s  {line}",
                    w.name,
                    w.state.as_str(),
                    started.elapsed().as_secs_f64()
                ));
                pulled = step;
            }
        }
        if w.state == want {
            return Ok(w);
        }
        match (want, w.state) {
            (_, State::Failed) if want != State::Deleted && want != State::Stopped => {
                return Err(fail(
                    "workspace_failed",
                    format!(
                        "workspace {} failed: {}",
                        w.name,
                        w.reason.as_deref().unwrap_or("no reason given")
                    ),
                ))
            }
            (State::Stopped, State::Failed) => return Ok(w),
            _ => {}
        }
        // A delete that would lose work stops the workspace first and goes
        // once the backup of that stop is confirmed (docs/backups.md).
        let delete_waits = want == State::Deleted && w.desired == Desired::Stopped;
        if w.desired != desired_of(want) && !delete_waits {
            return Err(fail(
                "superseded",
                format!(
                    "workspace {} is now wanted {} (someone else changed it)",
                    w.name, w.desired
                ),
            ));
        }
        let next = async {
            match events.as_mut() {
                Some(rx) => loop {
                    match rx.recv().await {
                        Some(ev) if ev.id == w.id => return Some(ev),
                        Some(_) => continue,
                        None => return None,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = next => match ev {
                Some(ev) => {
                    w.state = ev.state;
                    w.desired = ev.desired;
                    w.node = ev.node;
                    w.reason = ev.reason;
                    w.generation = ev.generation;
                    w.progress = ev.progress;
                    if w.state == want && want != State::Deleted {
                        // The final record (ip, timestamps) comes from a read.
                        w = refresh(c, target, &w).await?;
                    }
                }
                None => events = None,
            },
            _ = poll.tick() => w = refresh(c, target, &w).await?,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(fail(
                    "timeout",
                    format!("workspace {} is still {} after {:?} (it may still get there: `berth get {}`)",
                        w.name, w.state, timeout, w.name),
                ))
            }
        }
    }
}

/// A size as people read it: "1.2 GiB", "340.0 MiB".
fn human_bytes(b: u64) -> String {
    let gib = b as f64 / f64::from(1u32 << 30);
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    }
}

/// A pull's progress as a line, and the step it is at (a line is shown
/// once per step: a tenth of the bytes, a layer, a phase).
fn pull_line(p: &Progress) -> (String, String) {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let percent = (p.done_bytes * 100)
        .checked_div(p.total_bytes)
        .unwrap_or(100);
    let line = match p.phase.as_str() {
        "unpacking" => format!(
            "unpacking {} {}: {}/{} layers",
            p.what, p.reference, p.done_layers, p.total_layers
        ),
        // A workspace moved to this node from its backup.
        "restoring" => format!(
            "restoring {} from {} {}",
            human_bytes(p.total_bytes),
            p.what,
            &p.reference[..p.reference.len().min(8)]
        ),
        _ => format!(
            "pulling {} {}: {percent}% ({:.1}/{:.1} MiB, {}/{} layers)",
            p.what,
            p.reference,
            mib(p.done_bytes),
            mib(p.total_bytes),
            p.done_layers,
            p.total_layers
        ),
    };
    let step = format!(
        "{} {} {} {}",
        p.reference,
        p.phase,
        percent / 10,
        p.done_layers
    );
    (step, line)
}

/// The workspace's current record; gone (404) means deleted.
async fn refresh(c: &Client, target: &Target, w: &Workspace) -> Result<Workspace, Failure> {
    match c.get::<Workspace>(&ws_path(target, "")).await {
        Ok(n) if n.id == w.id => Ok(n),
        Ok(_) => Ok(Workspace {
            state: State::Deleted,
            ..w.clone()
        }),
        Err(e) if e.not_found() => Ok(Workspace {
            state: State::Deleted,
            ..w.clone()
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_shows_one_line_per_tenth_layer_and_phase() {
        let p = |phase: &str, done: u64, layers: u32| Progress {
            what: "image".into(),
            reference: "r/dev:latest".into(),
            phase: phase.into(),
            done_bytes: done,
            total_bytes: 100 << 20,
            done_layers: layers,
            total_layers: 2,
        };
        let (a, line) = pull_line(&p("fetching", 43 << 20, 0));
        assert_eq!(
            line,
            "pulling image r/dev:latest: 43% (43.0/100.0 MiB, 0/2 layers)"
        );
        assert_eq!(a, pull_line(&p("fetching", 49 << 20, 0)).0, "same tenth");
        assert_ne!(a, pull_line(&p("fetching", 50 << 20, 0)).0);
        assert_ne!(a, pull_line(&p("fetching", 43 << 20, 1)).0, "a layer done");
        let (_, line) = pull_line(&p("unpacking", 100 << 20, 1));
        assert_eq!(line, "unpacking image r/dev:latest: 1/2 layers");
        let empty = Progress {
            total_bytes: 0,
            ..p("fetching", 0, 0)
        };
        assert!(pull_line(&empty).1.contains("100%"));
        let restoring = Progress {
            what: "backup".into(),
            reference: "1a2b3c4d5e6f".into(),
            total_bytes: 1288 << 20,
            ..p("restoring", 0, 0)
        };
        assert_eq!(
            pull_line(&restoring).1,
            "restoring 1.3 GiB from backup 1a2b3c4d"
        );
    }

    #[test]
    fn paths_encode_names_and_owner() {
        let t = Target {
            name: "a b".into(),
            owner: Some("x/y".into()),
        };
        assert_eq!(
            ws_path(&t, "/exec"),
            "/v1/workspaces/a%20b/exec?owner=x%2Fy"
        );
    }
}
