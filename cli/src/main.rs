//! `berth`, the command line for users and admins. It talks to the
//! coordinator's REST API (`/v1`); see `berth --help` and docs/cli.md.
#![forbid(unsafe_code)]

mod client;
mod config;
mod output;
mod ssh;

use anyhow::Context;
use berth_proto::units::{parse_duration, parse_size};

use clap::{Args, Parser, Subcommand};
use client::{enc, Client, ExecResult, Node, Workspace};
use output::{age, cores, now_ms, opt, size, table};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A duration of at least one second, in whole seconds (what the API takes).
fn whole_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: expected whole seconds, at least 1s"));
    }
    Ok(d)
}

const AFTER_HELP: &str = "\
The coordinator and token come from --url/--token, else BERTH_URL/BERTH_TOKEN, else the
config file (BERTH_CONFIG, default ~/.config/berth/config.toml; `berth login` writes it).

Exit status: 0 on success, 1 when the API or the coordinator refused or failed (the
error's stable code is printed, see docs/errors.md), 2 for bad usage; `berth exec`
exits with the command's own status.";

/// Berth: cloud developer workspaces.
#[derive(Parser)]
#[command(name = "berth", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Coordinator API URL [default: from the config file, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "BERTH_URL")]
    url: Option<String>,
    /// API token [default: from the config file].
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables (errors too, on standard error).
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines while waiting.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a URL and token and save them in the config file.
    Login {
        /// Token to save (default: --token / BERTH_TOKEN).
        #[arg(long = "with-token")]
        with_token: Option<String>,
    },
    /// Who the token belongs to.
    Whoami,
    /// Create a workspace and wait until it runs (or, with --no-start, exists on its node).
    Create(CreateArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List {
        /// Only this state (pending, scheduled, starting, running, stopping, stopped, failed, unknown, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only this node (admins).
        #[arg(long)]
        node: Option<String>,
        /// Another user's workspaces (admins).
        #[arg(long, conflicts_with = "all")]
        owner: Option<String>,
        /// Everyone's workspaces (admins).
        #[arg(long, short)]
        all: bool,
    },
    /// Show one workspace.
    Get(Target),
    /// Start a stopped workspace and wait until it runs.
    Start(Change),
    /// Stop a workspace (its /workspace volume is kept) and wait until it stopped.
    Stop(Change),
    /// Delete a workspace and its volume, and wait until it is gone.
    #[command(alias = "rm")]
    Delete(Change),
    /// Run a command in a running workspace; exits with the command's status.
    Exec {
        #[command(flatten)]
        target: Target,
        /// Environment variable for the command, KEY=VALUE (repeatable).
        #[arg(long, short, value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Working directory (default /workspace).
        #[arg(long)]
        cwd: Option<String>,
        /// Send standard input to the command.
        #[arg(long, short = 'i')]
        stdin: bool,
        /// Kill the command after this long, 1s to 1h: exec_timeout.
        #[arg(long, default_value = "60s", value_parser = whole_seconds)]
        timeout: Duration,
        /// Run as root of the workspace's own user namespace (for apt-get and
        /// the like; not root on the node).
        #[arg(long)]
        root: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Forward local TCP ports to a workspace's ports, through the coordinator
    /// (each connection its own stream), until interrupted. A stopped
    /// workspace is started first.
    #[command(name = "port-forward")]
    PortForward {
        #[command(flatten)]
        target: Target,
        /// REMOTE, or LOCAL:REMOTE (LOCAL 0 picks a free port); repeatable.
        #[arg(required = true, value_parser = port_pair)]
        ports: Vec<(u16, u16)>,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
    },
    /// SSH into a workspace with OpenSSH's `ssh` (a shell, or CMD), through
    /// the coordinator; a stopped workspace is started first. Log in with a
    /// key registered by `berth ssh-key add`.
    Ssh {
        #[command(flatten)]
        target: Target,
        /// Be OpenSSH's ProxyCommand: carry the SSH connection on standard
        /// input and output (NAME may be berth.NAME).
        #[arg(long, conflicts_with = "known_hosts")]
        stdio: bool,
        /// Be OpenSSH's KnownHostsCommand: print the workspace's host key.
        #[arg(long)]
        known_hosts: bool,
        /// The command to run instead of a shell.
        #[arg(last = true)]
        argv: Vec<String>,
    },
    /// Write `Host berth.*` into ~/.ssh/config so that `ssh berth.NAME`, scp,
    /// sftp and VS Code Remote-SSH reach workspace NAME (idempotent).
    #[command(name = "config-ssh")]
    ConfigSsh {
        /// The ssh config file to edit.
        #[arg(long)]
        ssh_config: Option<std::path::PathBuf>,
        /// Print the resulting file instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Your SSH public keys (what `berth ssh` logs in with).
    #[command(name = "ssh-key")]
    SshKey {
        #[command(subcommand)]
        cmd: SshKeyCmd,
    },
    /// Tunnel activity of a workspace: open sessions and bytes per kind.
    Activity(Target),
    /// Print a one-time sign-in link (good for 2 minutes) to a workspace's
    /// web terminal, or with --port to its preview, for a browser.
    Open {
        /// Workspace name.
        name: String,
        /// The preview of this port instead of the terminal.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Follow workspace state changes (one line each) until interrupted.
    Events,
    /// The resource tiers.
    Tiers,
    /// Nodes (admins): list, or one of the subcommands.
    Nodes {
        #[command(subcommand)]
        cmd: Option<NodesCmd>,
    },
    /// Administration (admins).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// 1 to 40 of a-z, 0-9 and '-'.
    name: String,
    /// Image reference, host[:port]/repository[:tag] (default: the
    /// coordinator's default image, if it has one).
    #[arg(long)]
    image: Option<String>,
    /// Resource tier (`berth tiers` lists them; built in: small, medium, large).
    #[arg(long)]
    tier: Option<String>,
    /// CPU cores, e.g. 2 or 0.5 (overrides the tier).
    #[arg(long, value_parser = parse_cores)]
    cpu: Option<u32>,
    /// Memory, e.g. 4G (overrides the tier).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Size of the persistent /workspace volume, e.g. 20G (overrides the tier).
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// Process limit (overrides the tier).
    #[arg(long)]
    pids: Option<u32>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long, short, value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Node label the workspace needs, KEY=VALUE (repeatable).
    #[arg(long, value_parser = key_value)]
    selector: Vec<(String, String)>,
    /// Create it on a node but do not start it.
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
struct Target {
    /// Workspace name.
    name: String,
    /// Owner of the workspace (admins; default: you).
    #[arg(long)]
    owner: Option<String>,
}

#[derive(Args)]
struct Change {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args, Clone, Copy)]
struct Wait {
    /// Return once the request is accepted instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum SshKeyCmd {
    /// Register a public key (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).
    Add {
        /// The public key file, or - for standard input.
        file: Option<std::path::PathBuf>,
        /// A label (default: the key's comment).
        #[arg(long)]
        name: Option<String>,
    },
    /// List your keys.
    #[command(alias = "ls")]
    List,
    /// Remove a key, by id or SHA256 fingerprint.
    #[command(alias = "rm")]
    Remove { key: String },
}

#[derive(Subcommand)]
enum NodesCmd {
    /// List nodes (the default).
    List,
    /// Show one node.
    Get { id: String },
    /// Place nothing new on a node.
    Cordon { id: String },
    /// Undo cordon (and drain).
    Uncordon { id: String },
    /// Cordon a node and stop its workspaces.
    Drain { id: String },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Join tokens for new agents.
    #[command(name = "join-token")]
    JoinToken {
        #[command(subcommand)]
        cmd: JoinTokenCmd,
    },
    /// API tokens for users.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum JoinTokenCmd {
    /// Make a one-time join token: `berth-agent --coordinator HOST:7443 --join TOKEN`.
    Create {
        /// Lifetime, 1s to 7d.
        #[arg(long, default_value = "1h", value_parser = whole_seconds)]
        ttl: Duration,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make an API token for a user (shown once).
    Create {
        #[arg(long)]
        user: String,
        /// admin or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
}

/// `3000` (the same port locally) or `8080:3000`.
fn port_pair(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected REMOTE or LOCAL:REMOTE ports, got {s:?}");
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    match s.split_once(':') {
        Some((l, r)) => {
            let r = port(r)?;
            if r == 0 {
                return Err(bad());
            }
            Ok((port(l)?, r))
        }
        None => {
            let p = port(s)?;
            if p == 0 {
                return Err(bad());
            }
            Ok((p, p))
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Cores as millicores: `2`, `0.5`, `1.25`, or `500m`.
fn parse_cores(s: &str) -> Result<u32, String> {
    let bad = || format!("bad CPU amount {s:?}: expected e.g. 2, 0.5 or 500m");
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().map_err(|_| bad());
    }
    let v: f64 = s.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v > 4096.0 {
        return Err(bad());
    }
    Ok((v * 1000.0).round() as u32)
}

/// An error that ends the command with status 1 (or the given one).
struct Failure {
    code: String,
    message: String,
    status: i32,
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Self {
        Self {
            code: e.code,
            message: e.message,
            status: 1,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self {
            code: "cli_error".into(),
            message: format!("{e:#}"),
            status: 1,
        }
    }
}

/// A failure; `usage` (the command line is wrong) exits 2, as clap does.
fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.into(),
        message: message.into(),
        status: if code == "usage" { 2 } else { 1 },
    }
}

type Outcome = Result<i32, Failure>;

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => {
            if json {
                eprintln!("{}", json!({"code": f.code, "message": f.message}));
            } else {
                eprintln!("berth: {}: {}", f.code, f.message);
            }
            f.status
        }
    };
    // Flush before exiting: process::exit skips destructors.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

async fn run(cli: Cli) -> Outcome {
    let cfg_path = config::path();
    let file = match &cfg_path {
        Some(p) => config::load(p)?,
        None => config::File::default(),
    };
    let resolved = config::resolve(cli.url.clone(), cli.token.clone(), &file)?;
    let ui = Ui {
        json: cli.json,
        quiet: cli.quiet,
    };
    if let Cmd::Login { with_token } = &cli.cmd {
        let token = with_token
            .clone()
            .or(resolved.token.clone())
            .ok_or_else(|| {
                fail(
                    "usage",
                    "give the token with --with-token, --token or BERTH_TOKEN",
                )
            })?;
        let c = Client::new(resolved.url.clone(), Some(token.clone()))?;
        let me: serde_json::Value = c.get("/v1/whoami").await?;
        let path = cfg_path.ok_or_else(|| fail("cli_error", "no HOME to keep the config in"))?;
        config::save(
            &path,
            &config::File {
                url: Some(resolved.url.clone()),
                token: Some(token),
            },
        )?;
        if ui.json {
            println!("{me}");
        } else {
            println!(
                "Logged in to {} as {} ({}); saved in {}",
                resolved.url,
                me["user"].as_str().unwrap_or("?"),
                me["role"].as_str().unwrap_or("?"),
                path.display()
            );
        }
        return Ok(0);
    }
    if let Cmd::ConfigSsh {
        ssh_config,
        dry_run,
    } = &cli.cmd
    {
        let path = ssh_config
            .clone()
            .or_else(ssh::default_config)
            .ok_or_else(|| fail("cli_error", "no HOME: pass --ssh-config"))?;
        return ssh::config_ssh(&path, *dry_run);
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
    let c = Client::new(resolved.url.clone(), resolved.token.clone())?;
    match cli.cmd {
        Cmd::Login { .. } | Cmd::ConfigSsh { .. } => unreachable!("handled above"),
        Cmd::Ssh {
            target,
            stdio,
            known_hosts,
            argv,
        } => {
            if stdio {
                ssh::stdio(&c, target).await
            } else if known_hosts {
                ssh::known_hosts(&c, target).await
            } else {
                ssh::exec_ssh(target, argv, &resolved.url, resolved.token.as_deref())
            }
        }
        Cmd::SshKey { cmd } => ssh_key(&c, ui, cmd).await,
        Cmd::Activity(t) => {
            let a: serde_json::Value = c.get(&ws_path(&t, "/activity")).await?;
            ui.print(&a, || {
                let rows: Vec<Vec<String>> = a["tunnels"]
                    .as_array()
                    .map(|v| v.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        let last = t["last_active_ms"].as_i64().unwrap_or(0);
                        vec![
                            t["kind"].as_str().unwrap_or("").to_string(),
                            t["open"].as_u64().unwrap_or(0).to_string(),
                            t["sessions"].as_u64().unwrap_or(0).to_string(),
                            size(t["bytes_in"].as_u64().unwrap_or(0)),
                            size(t["bytes_out"].as_u64().unwrap_or(0)),
                            if last == 0 {
                                "-".into()
                            } else {
                                age(last, now_ms())
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
        Cmd::Whoami => {
            let me: serde_json::Value = c.get("/v1/whoami").await?;
            ui.print(&me, || {
                format!(
                    "{} ({})\n",
                    me["user"].as_str().unwrap_or("?"),
                    me["role"].as_str().unwrap_or("?")
                )
            });
            Ok(0)
        }
        Cmd::Create(a) => create(&c, ui, a).await,
        Cmd::List {
            state,
            node,
            owner,
            all,
        } => {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(format!("state={}", enc(&s)));
            }
            if let Some(n) = node {
                q.push(format!("node={}", enc(&n)));
            }
            if all {
                q.push("owner=%2A".into());
            } else if let Some(o) = owner {
                q.push(format!("owner={}", enc(&o)));
            }
            let path = if q.is_empty() {
                "/v1/workspaces".to_string()
            } else {
                format!("/v1/workspaces?{}", q.join("&"))
            };
            let list: Vec<Workspace> = c.get(&path).await?;
            ui.print(&list, || workspace_table(&list, all));
            Ok(0)
        }
        Cmd::Get(t) => {
            let w: Workspace = c.get(&ws_path(&t, "")).await?;
            ui.print(&w, || workspace_details(&w));
            Ok(0)
        }
        Cmd::Start(ch) => change(&c, ui, ch, "start", "running").await,
        Cmd::Stop(ch) => change(&c, ui, ch, "stop", "stopped").await,
        Cmd::Delete(ch) => change(&c, ui, ch, "delete", "deleted").await,
        Cmd::Exec {
            target,
            env,
            cwd,
            stdin,
            timeout,
            root,
            argv,
        } => {
            let input = if stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("read standard input")?;
                Some(s)
            } else {
                None
            };
            let body = json!({
                "argv": argv,
                "env": env.into_iter().collect::<BTreeMap<_, _>>(),
                "cwd": cwd,
                "stdin": input,
                "timeout_seconds": timeout.as_secs(),
                "user": if root { "root" } else { "user" },
            });
            if ui.json {
                // One JSON answer: each stream cut at 1 MiB (`truncated`).
                let r: ExecResult = c.post(&ws_path(&target, "/exec"), &body).await?;
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
                return Ok(r.exit_code);
            }
            exec_streamed(&c, &ws_path(&target, "/exec/stream"), &body).await
        }
        Cmd::PortForward {
            target,
            ports,
            address,
        } => port_forward(&c, ui, target, ports, address).await,
        Cmd::Events => {
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
        Cmd::Open { name, port } => {
            let next = match port {
                Some(p) => format!("/w/{}/{p}/", enc(&name)),
                None => format!("/w/{}/terminal", enc(&name)),
            };
            let link: serde_json::Value =
                c.post("/v1/sign-in-links", &json!({"next": next})).await?;
            let url = format!(
                "{}{}",
                resolved.url.trim_end_matches('/'),
                link["url"].as_str().unwrap_or_default()
            );
            ui.print(&json!({"url": url}), || format!("{url}\n"));
            Ok(0)
        }
        Cmd::Tiers => {
            let tiers: Vec<serde_json::Value> = c.get("/v1/tiers").await?;
            ui.print(&tiers, || {
                let rows: Vec<Vec<String>> = tiers
                    .iter()
                    .map(|t| {
                        vec![
                            t["name"].as_str().unwrap_or("").to_string(),
                            cores(t["cpu_millis"].as_u64().unwrap_or(0)),
                            size(t["memory_bytes"].as_u64().unwrap_or(0)),
                            size(t["disk_bytes"].as_u64().unwrap_or(0)),
                            t["pids"].as_u64().unwrap_or(0).to_string(),
                            grants(t),
                        ]
                    })
                    .collect();
                table(&["TIER", "CPU", "MEMORY", "DISK", "PIDS", "GRANTS"], &rows)
            });
            Ok(0)
        }
        Cmd::Nodes { cmd } => nodes(&c, ui, cmd.unwrap_or(NodesCmd::List)).await,
        Cmd::Admin { cmd } => admin(&c, ui, cmd).await,
    }
}

#[derive(Clone, Copy)]
struct Ui {
    json: bool,
    quiet: bool,
}

impl Ui {
    fn print<T: serde::Serialize>(&self, v: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", human());
        }
    }

    fn progress(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

fn ws_path(t: &Target, suffix: &str) -> String {
    let owner = t
        .owner
        .as_deref()
        .map(|o| format!("?owner={}", enc(o)))
        .unwrap_or_default();
    format!("/v1/workspaces/{}{suffix}{owner}", enc(&t.name))
}

async fn create(c: &Client, ui: Ui, a: CreateArgs) -> Outcome {
    let body = json!({
        "name": a.name,
        "image": a.image,
        "tier": a.tier,
        "cpu_millis": a.cpu,
        "memory_bytes": a.memory,
        "disk_bytes": a.disk,
        "pids": a.pids,
        "env": a.env.into_iter().collect::<BTreeMap<_, _>>(),
        "node_selector": a.selector.into_iter().collect::<BTreeMap<_, _>>(),
        "start": !a.no_start,
    });
    let target = Target {
        name: a.name.clone(),
        owner: None,
    };
    // Created stopped, it is done once its node has made it.
    let want = if a.no_start { "stopped" } else { "running" };
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

async fn change(c: &Client, ui: Ui, ch: Change, verb: &str, want: &str) -> Outcome {
    let path = ws_path(&ch.target, "");
    let action = ws_path(&ch.target, &format!("/{verb}"));
    let request = async {
        if verb == "delete" {
            c.delete(&path).await
        } else {
            c.post(&action, &json!({})).await
        }
    };
    let w = request_then_wait(c, ui, &ch.target, want, ch.wait, request).await?;
    ui.print(&w, || format!("{}: {}\n", w.name, w.state));
    Ok(0)
}

/// Sends `request` and, unless told not to wait, follows the workspace it
/// answers with until it is `want`. The event stream is opened first, so no
/// change made by the request is missed.
async fn request_then_wait(
    c: &Client,
    ui: Ui,
    target: &Target,
    want: &str,
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

/// Follows a workspace until it reaches `want`, printing each state it
/// passes. Events come from the SSE stream when it is open (they are those of
/// the coordinator serving it), with a poll each second as the fallback.
async fn wait_for(
    c: &Client,
    ui: Ui,
    mut events: Option<tokio::sync::mpsc::Receiver<client::WorkspaceEvent>>,
    target: &Target,
    mut w: Workspace,
    want: &str,
    timeout: Duration,
) -> Result<Workspace, Failure> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown = String::new();
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
                w.state,
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
        if w.state == want {
            return Ok(w);
        }
        match (want, w.state.as_str()) {
            (_, "failed") if want != "deleted" && want != "stopped" => {
                return Err(fail(
                    "workspace_failed",
                    format!(
                        "workspace {} failed: {}",
                        w.name,
                        w.reason.as_deref().unwrap_or("no reason given")
                    ),
                ))
            }
            ("stopped", "failed") => return Ok(w),
            _ => {}
        }
        if w.desired != want {
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
                    if w.state == want && want != "deleted" {
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

/// The workspace's current record; gone (404) means deleted.
async fn refresh(c: &Client, target: &Target, w: &Workspace) -> Result<Workspace, Failure> {
    match c.get::<Workspace>(&ws_path(target, "")).await {
        Ok(n) if n.id == w.id => Ok(n),
        Ok(_) => Ok(Workspace {
            state: "deleted".into(),
            ..w.clone()
        }),
        Err(e) if e.not_found() => Ok(Workspace {
            state: "deleted".into(),
            ..w.clone()
        }),
        Err(e) => Err(e.into()),
    }
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
                w.state.clone(),
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
    rows.iter()
        .map(|(k, v)| format!("{:<11} {v}\n", format!("{k}:")))
        .collect()
}

async fn ssh_key(c: &Client, ui: Ui, cmd: SshKeyCmd) -> Outcome {
    match cmd {
        SshKeyCmd::Add { file, name } => {
            let text = match file.or_else(ssh::default_public_key) {
                Some(p) if p.as_os_str() == "-" => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("read standard input")?;
                    s
                }
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("read {}", p.display()))?,
                None => {
                    return Err(fail(
                        "usage",
                        "no ~/.ssh/id_ed25519.pub (or id_ecdsa.pub, id_rsa.pub): give the public key file",
                    ))
                }
            };
            let k: serde_json::Value = c
                .post(
                    "/v1/ssh-keys",
                    &json!({"public_key": text.trim(), "name": name}),
                )
                .await?;
            ui.print(&k, || {
                format!(
                    "Added {} {} ({})\n",
                    k["fingerprint"].as_str().unwrap_or("?"),
                    k["name"].as_str().unwrap_or(""),
                    k["id"].as_str().unwrap_or("?")
                )
            });
            Ok(0)
        }
        SshKeyCmd::List => {
            let keys: Vec<serde_json::Value> = c.get("/v1/ssh-keys").await?;
            ui.print(&keys, || {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k["id"].as_str().unwrap_or("").to_string(),
                            k["fingerprint"].as_str().unwrap_or("").to_string(),
                            k["name"].as_str().unwrap_or("").to_string(),
                            age(k["created_at_ms"].as_i64().unwrap_or(0), now_ms()),
                        ]
                    })
                    .collect();
                table(&["ID", "FINGERPRINT", "NAME", "ADDED"], &rows)
            });
            Ok(0)
        }
        SshKeyCmd::Remove { key } => {
            c.delete_empty(&format!("/v1/ssh-keys/{}", enc(&key)))
                .await?;
            if !ui.quiet {
                eprintln!("Removed {key}");
            }
            Ok(0)
        }
    }
}

/// Wake on connect: a workspace that is not running is started, and the
/// wait shows progress (on standard error), before a tunnel is opened.
async fn ensure_running(c: &Client, ui: Ui, target: &Target) -> Result<Workspace, Failure> {
    let w: Workspace = c.get(&ws_path(target, "")).await?;
    if w.state == "running" {
        return Ok(w);
    }
    let wait = Wait {
        no_wait: false,
        timeout: Duration::from_secs(600),
    };
    let start = ws_path(target, "/start");
    let current = w.clone();
    let request = async {
        if current.desired == "running" {
            Ok(current)
        } else {
            c.post(&start, &json!({})).await
        }
    };
    request_then_wait(c, ui, target, "running", wait, request).await
}

async fn port_forward(
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

async fn nodes(c: &Client, ui: Ui, cmd: NodesCmd) -> Outcome {
    let one = |id: &str, verb: &str| format!("/v1/nodes/{}{verb}", enc(id));
    let node: Node = match cmd {
        NodesCmd::List => {
            let list: Vec<Node> = c.get("/v1/nodes").await?;
            ui.print(&list, || node_table(&list));
            return Ok(0);
        }
        NodesCmd::Get { id } => c.get(&one(&id, "")).await?,
        NodesCmd::Cordon { id } => c.post(&one(&id, "/cordon"), &json!({})).await?,
        NodesCmd::Uncordon { id } => c.post(&one(&id, "/uncordon"), &json!({})).await?,
        NodesCmd::Drain { id } => c.post(&one(&id, "/drain"), &json!({})).await?,
    };
    ui.print(&node, || node_table(std::slice::from_ref(&node)));
    Ok(0)
}

fn node_table(list: &[Node]) -> String {
    let now = now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let mut flags = vec![];
            if n.cordoned {
                flags.push("cordoned");
            }
            if n.draining {
                flags.push("draining");
            }
            vec![
                n.id.clone(),
                n.status.clone(),
                if flags.is_empty() {
                    "-".into()
                } else {
                    flags.join(",")
                },
                format!("{}/{}", n.allocated.workspaces, n.capacity.workspaces),
                format!(
                    "{}/{}",
                    cores(n.allocated.cpu_millis),
                    cores(n.capacity.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    size(n.allocated.memory_bytes),
                    size(n.capacity.memory_bytes)
                ),
                format!(
                    "{}/{}",
                    size(n.allocated.disk_bytes),
                    size(n.capacity.disk_bytes)
                ),
                n.cached_images.len().to_string(),
                if n.last_seen_ms > 0 {
                    age(n.last_seen_ms, now)
                } else {
                    "-".into()
                },
                n.agent_version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "STATUS",
            "FLAGS",
            "WORKSPACES",
            "CPU",
            "MEMORY",
            "DISK",
            "IMAGES",
            "SEEN",
            "VERSION",
        ],
        &rows,
    )
}

async fn admin(c: &Client, ui: Ui, cmd: AdminCmd) -> Outcome {
    match cmd {
        AdminCmd::JoinToken {
            cmd: JoinTokenCmd::Create { ttl },
        } => {
            let r: serde_json::Value = c
                .post("/v1/join-tokens", &json!({"ttl_seconds": ttl.as_secs()}))
                .await?;
            ui.print(&r, || {
                format!("{}\n", r["token"].as_str().unwrap_or_default())
            });
        }
        AdminCmd::Token {
            cmd: TokenCmd::Create { user, role },
        } => {
            let r: serde_json::Value = c
                .post("/v1/tokens", &json!({"user": user, "role": role}))
                .await?;
            ui.print(&r, || {
                format!("{}\n", r["token"].as_str().unwrap_or_default())
            });
        }
    }
    Ok(0)
}

/// What a tier grants beyond the security defaults, for the tiers table.
fn grants(t: &serde_json::Value) -> String {
    let mut g = Vec::new();
    if t["nested_userns"] == true {
        g.push("nested user namespaces".to_string());
    }
    if let Some(ranges) = t["egress_allow"].as_array().filter(|r| !r.is_empty()) {
        let ranges: Vec<&str> = ranges.iter().filter_map(|r| r.as_str()).collect();
        g.push(format!("egress to {}", ranges.join(", ")));
    }
    match g.is_empty() {
        true => "-".into(),
        false => g.join("; "),
    }
}

/// Runs an exec through the streaming endpoint, writing the command's
/// output as it comes; its exit status, or the API's error.
async fn exec_streamed(c: &Client, path: &str, body: &serde_json::Value) -> Outcome {
    use berth_proto::exec_stream::Frame;
    let mut end = None;
    c.post_exec_stream(path, body, |f| match f {
        Frame::Stdout(b) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&b).and_then(|()| out.flush());
        }
        Frame::Stderr(b) => {
            let _ = std::io::stderr().write_all(&b);
        }
        Frame::Exit(code) => end = Some(Ok(code)),
        Frame::Error { code, message } => end = Some(Err((code, message))),
    })
    .await?;
    match end {
        Some(Ok(code)) => Ok(code),
        Some(Err((code, message))) => Err(Failure {
            code,
            message,
            status: 1,
        }),
        None => Err(Failure {
            code: "unreachable".into(),
            message: "the exec stream broke off before the command ended".into(),
            status: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_and_pairs_parse() {
        assert_eq!(parse_cores("2"), Ok(2000));
        assert_eq!(parse_cores("0.5"), Ok(500));
        assert_eq!(parse_cores("250m"), Ok(250));
        assert!(parse_cores("-1").is_err());
        assert!(parse_cores("NaN").is_err());
        assert!(parse_cores("x").is_err());
        assert_eq!(key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
        assert_eq!(port_pair("3000"), Ok((3000, 3000)));
        assert_eq!(port_pair("0:3000"), Ok((0, 3000)));
        assert_eq!(port_pair("8080:80"), Ok((8080, 80)));
        for bad in ["0", "3000:0", "x", "1:2:3", "70000", ":80"] {
            assert!(port_pair(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
