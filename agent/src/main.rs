//! `berth-agent`: the node daemon (`run`, the default) and a local client of
//! its control socket (`ctl`).

use anyhow::Context;
use berth_agent::client::Client;
use berth_proto::agent::{self as pb, request::Command, response::Result as R};
use berth_proto::units::parse_size;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Berth node agent: runs developer workspaces on containerd.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Agent configuration file (TOML). Without it every setting takes its default.
    #[arg(long, short, global = true, env = "BERTH_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The coordinator's link address, HOST:PORT[,HOST:PORT...] (overrides coordinator.address).
    #[arg(long, global = true, env = "BERTH_COORDINATOR")]
    coordinator: Option<String>,
    /// One-time join token (`berth admin join-token create`), used on first start.
    #[arg(long, global = true, env = "BERTH_JOIN_TOKEN")]
    join: Option<String>,
    /// Node id to ask for when joining (overrides node.id; default: host name).
    #[arg(long, global = true)]
    node_id: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (the default).
    Run,
    /// Print the effective configuration (defaults filled in) and exit.
    Config,
    /// Talk to a running agent over its control socket.
    Ctl(Box<Ctl>),
}

#[derive(Parser)]
struct Ctl {
    /// Control socket; defaults to the one in the configuration.
    #[arg(long, env = "BERTH_AGENT_SOCKET")]
    socket: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand)]
enum Op {
    /// Create a workspace and start it.
    Create {
        /// Workspace name: 1 to 40 of a-z, 0-9 and "-".
        name: String,
        /// Image reference, host[:port]/repository[:tag].
        #[arg(long)]
        image: String,
        /// CPU in millicores (1000 = one core).
        #[arg(long, default_value = "1000")]
        cpu_millis: u32,
        /// Memory limit, e.g. 512M or 2G.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        memory: u64,
        /// Maximum number of processes.
        #[arg(long, default_value = "1024")]
        pids: u32,
        /// Size of the /workspace volume, e.g. 10G.
        #[arg(long, default_value = "10G", value_parser = parse_size)]
        disk: u64,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Create only; do not start.
        #[arg(long)]
        no_start: bool,
        /// Allow nested user namespaces (rootless tools inside).
        #[arg(long)]
        nested_userns: bool,
        /// A private IPv4 range it may reach beyond the node's egress policy,
        /// e.g. 172.16.0.0/12 (repeatable).
        #[arg(long = "egress-allow")]
        egress_allow: Vec<String>,
        /// Registry user name for this pull.
        #[arg(long)]
        username: Option<String>,
        /// Registry password for this pull.
        #[arg(long, env = "BERTH_REGISTRY_PASSWORD")]
        password: Option<String>,
    },
    /// Start a stopped workspace.
    Start {
        /// Workspace name.
        name: String,
    },
    /// Stop a workspace: SIGTERM, then SIGKILL after the grace period.
    Stop {
        /// Workspace name: 1 to 40 of a-z, 0-9 and "-".
        name: String,
        /// Seconds before SIGKILL (0: the agent's default).
        #[arg(long, default_value = "0")]
        grace: u32,
    },
    /// Delete a workspace and its volume.
    Delete {
        /// Workspace name.
        name: String,
    },
    /// Show one workspace.
    Status {
        /// Workspace name.
        name: String,
    },
    /// List the node's workspaces.
    List,
    /// Pull an image into the node's cache.
    Pull {
        /// Image reference, host[:port]/repository[:tag].
        image: String,
        /// Registry user name.
        #[arg(long)]
        username: Option<String>,
        /// Registry password.
        #[arg(long, env = "BERTH_REGISTRY_PASSWORD")]
        password: Option<String>,
    },
    /// Run a command in a workspace; exits with its exit code.
    Exec {
        /// Workspace name: 1 to 40 of a-z, 0-9 and "-".
        name: String,
        /// Allocate a terminal.
        #[arg(long, short)]
        tty: bool,
        /// Run as root of the workspace's user namespace (not root on the node).
        #[arg(long)]
        root: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info,netlink_packet_route=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match berth_agent::config::load(cli.config.as_deref()) {
        Ok(mut c) => {
            if let Some(a) = cli.coordinator.clone() {
                c.file.coordinator.address = Some(a);
            }
            if let Some(n) = cli.node_id.clone() {
                c.file.node.id = Some(n);
            }
            c
        }
        Err(e) => {
            eprintln!("berth-agent: bad configuration: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => rt.block_on(async {
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            };
            berth_agent::run(cfg, cli.join.clone(), shutdown)
                .await
                .context("berth-agent")
        }),
        Cmd::Config => {
            println!("{:#?}", cfg.file);
            Ok(())
        }
        Cmd::Ctl(ctl) => {
            let socket = ctl.socket.clone().unwrap_or(cfg.control_socket);
            let code = rt.block_on(ctl_main(socket, *ctl))?;
            std::process::exit(code);
        }
    }
}

async fn ctl_main(socket: PathBuf, ctl: Ctl) -> anyhow::Result<i32> {
    let mut c = Client::connect(&socket)
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    let auth = |u: Option<String>, p: Option<String>| {
        u.map(|username| pb::RegistryAuth {
            username,
            password: p.unwrap_or_default(),
        })
    };
    let cmd = match ctl.op {
        Op::Create {
            name,
            image,
            cpu_millis,
            memory,
            pids,
            disk,
            env,
            no_start,
            nested_userns,
            egress_allow,
            username,
            password,
        } => {
            let mut envs = std::collections::BTreeMap::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                envs.insert(k.to_string(), v.to_string());
            }
            let spec = pb::WorkspaceSpec {
                name,
                image,
                cpu_millis,
                memory_bytes: memory,
                pids,
                disk_bytes: disk,
                env: envs,
                generation: 0,
                nested_userns,
                egress_allow,
                hostname: String::new(),
                repo: None,
                dotfiles: String::new(),
            };
            Command::Create(pb::CreateRequest {
                spec: Some(spec),
                auth: auth(username, password),
                start: !no_start,
                restore: None,
                secrets: None,
            })
        }
        Op::Start { name } => Command::Start(pb::StartRequest {
            name,
            generation: 0,
            secrets: None,
        }),
        Op::Stop { name, grace } => Command::Stop(pb::StopRequest {
            name,
            grace_seconds: grace,
            generation: 0,
        }),
        Op::Delete { name } => Command::Delete(pb::NameRequest {
            name,
            generation: 0,
        }),
        Op::Status { name } => Command::Status(pb::NameRequest {
            name,
            generation: 0,
        }),
        Op::List => Command::List(pb::ListRequest {}),
        Op::Pull {
            image,
            username,
            password,
        } => Command::Pull(pb::PullRequest {
            image,
            auth: auth(username, password),
        }),
        Op::Exec {
            name,
            tty,
            root,
            argv,
        } => return exec(c, name, tty, root, argv).await,
    };
    match c.call(cmd).await {
        Ok(r) => {
            print_result(&r, ctl.json)?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

fn state_name(s: i32) -> &'static str {
    match pb::State::try_from(s).unwrap_or(pb::State::Unspecified) {
        pb::State::Created => "created",
        pb::State::Running => "running",
        pb::State::Stopped => "stopped",
        pb::State::Deleted => "deleted",
        pb::State::Unspecified => "unknown",
    }
}

fn print_result(r: &R, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let rows = match r {
        R::Status(s) => vec![s.clone()],
        R::List(l) => l.workspaces.clone(),
        R::Pulled(p) => {
            println!(
                "{} {} (fetched {} layers, {} bytes; {} already here)",
                p.image, p.digest, p.layers_fetched, p.bytes_fetched, p.layers_present
            );
            return Ok(());
        }
        _ => return Ok(()),
    };
    println!(
        "{:<24} {:<9} {:>8} {:<15} {:>5} {:>4}  IMAGE",
        "NAME", "STATE", "PID", "IP", "EXIT", "OOM"
    );
    for s in rows {
        println!(
            "{:<24} {:<9} {:>8} {:<15} {:>5} {:>4}  {}",
            s.name,
            state_name(s.state),
            s.pid,
            s.ip,
            s.exit_code,
            s.oom_kills,
            s.image
        );
    }
    Ok(())
}

async fn exec(
    c: Client,
    name: String,
    tty: bool,
    root: bool,
    argv: Vec<String>,
) -> anyhow::Result<i32> {
    use pb::exec_input::Input;
    use tokio::io::AsyncReadExt;
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    let req = pb::ExecRequest {
        name,
        argv,
        env: Default::default(),
        tty,
        rows,
        cols,
        cwd: String::new(),
        activity: String::new(),
        user: if root { "root".into() } else { String::new() },
    };
    let raw = if tty { RawMode::enter() } else { None };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx
                        .send(pb::ExecInput {
                            input: Some(Input::CloseStdin(true)),
                        })
                        .await;
                    return;
                }
                Ok(n) => {
                    if tx
                        .send(pb::ExecInput {
                            input: Some(Input::Stdin(buf[..n].to_vec())),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let result = c
        .exec_stream(req, rx, |o| match o {
            pb::exec_output::Output::Stdout(b) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&b);
                let _ = out.flush();
            }
            pb::exec_output::Output::Stderr(b) => {
                let _ = std::io::stderr().write_all(&b);
            }
            _ => {}
        })
        .await;
    drop(raw);
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(126)
        }
    }
}

fn terminal_size() -> Option<(u32, u32)> {
    let ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let mut ws = ws;
    nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, nix::pty::Winsize);
    // SAFETY: TIOCGWINSZ writes one Winsize into the pointer we pass, which points at a live local.
    let r = unsafe { tiocgwinsz(libc::STDOUT_FILENO, &mut ws) };
    (r.is_ok() && ws.ws_row > 0).then(|| (u32::from(ws.ws_row), u32::from(ws.ws_col)))
}

/// Puts the controlling terminal in raw mode until dropped.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}
