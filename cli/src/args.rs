//! The command line: subcommands, their arguments and the parsers of
//! argument values (clap).

use berth_proto::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

mod admin;
pub(crate) use admin::*;

/// A duration of at least one second, in whole seconds (what the API takes).
pub(crate) fn whole_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: expected whole seconds, at least 1s"));
    }
    Ok(d)
}

pub(crate) const AFTER_HELP: &str = "\
The coordinator and token come from --url/--token, else BERTH_URL/BERTH_TOKEN, else the
config file (BERTH_CONFIG, default ~/.config/berth/config.toml; `berth login` writes it).

Exit status: 0 on success, 1 when the API or the coordinator refused or failed (the
error's stable code is printed, see docs/errors.md), 2 for bad usage; `berth exec`
exits with the command's own status.";

/// Berth: cloud developer workspaces.
#[derive(Parser)]
#[command(name = "berth", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Coordinator API URL [default: from the config file, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "BERTH_URL")]
    pub(crate) url: Option<String>,
    /// API token [default: from the config file].
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Trust only this CA (PEM) for an https:// URL [default: the CA `berth
    /// login` pinned for the saved URL, else the usual public roots].
    #[arg(long, global = true, env = "BERTH_CA_FILE")]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// Print JSON instead of tables (errors too, on standard error).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress lines while waiting.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Check a URL and token and save them in the config file.
    Login {
        /// Token to save (default: --token / BERTH_TOKEN).
        #[arg(long = "with-token", conflicts_with = "oidc")]
        with_token: Option<String>,
        /// For an https:// URL whose certificate no usual root vouches for:
        /// the SHA-256 fingerprint (hex) of the coordinator's CA, which
        /// `berth login` then pins (the coordinator logs it at start;
        /// `berth-coordinator admin ca` prints it). Without it, login shows
        /// the fingerprint it found and saves nothing.
        #[arg(long = "ca-fingerprint", conflicts_with = "ca_file")]
        ca_fingerprint: Option<String>,
        /// Sign in with the coordinator's OIDC provider instead: prints a
        /// link to open in a browser, waits for the sign-in to come back to
        /// a listener on 127.0.0.1, and saves the token it gives (which
        /// expires; log in again then).
        #[arg(long)]
        oidc: bool,
    },
    /// Who the token belongs to.
    Whoami,
    /// Your limits (quotas) and what your workspaces use of them.
    Quota,
    /// Share a workspace read-only with USER (or stop: --remove); without
    /// USER, who it is shared with.
    Share {
        #[command(flatten)]
        target: Target,
        user: Option<String>,
        #[arg(long, requires = "user")]
        remove: bool,
    },
    /// Secrets given to your workspaces (or a team's) as environment
    /// variables or files under /run/secrets.
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Teams: list yours, make one (admins), manage members (its admins).
    Team {
        #[command(subcommand)]
        cmd: TeamCmd,
    },
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
        /// A team's workspaces (its members, any role).
        #[arg(long, conflicts_with_all = ["all", "owner"])]
        team: Option<String>,
        /// The workspaces shared with you (read-only).
        #[arg(long, conflicts_with_all = ["all", "owner", "team"])]
        shared: bool,
    },
    /// Show one workspace.
    Get(Target),
    /// Start a stopped workspace and wait until it runs.
    Start(Change),
    /// Stop a workspace (its /workspace volume is kept) and wait until it stopped.
    Stop(Change),
    /// Keep a workspace from being stopped for idleness for a while (its
    /// tier's idle policy: `berth get` shows when it would stop and why it
    /// is awake).
    Keepalive {
        #[command(flatten)]
        target: Target,
        /// How long: e.g. 2h, 90m (at most the tier's max_keepalive_seconds;
        /// 0s ends a keepalive).
        #[arg(long = "for", default_value = "1h", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Set how long a workspace may be idle before it stops: its own
    /// timeout, within its tier's bound (max_idle_timeout_seconds, else the
    /// tier's own timeout), or `default` for its tier's.
    #[command(name = "idle-timeout")]
    IdleTimeout {
        #[command(flatten)]
        target: Target,
        /// e.g. 10m, 2h (at least 1m), or `default`.
        timeout: String,
    },
    /// List a workspace's backups (newest first) and whether they are failing.
    Backups {
        #[command(flatten)]
        target: Target,
        /// Leave out of its backups what its repository's .gitignore files
        /// ignore (node_modules, build output), or back everything up again
        /// (the default: an ignored .env can matter).
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        exclude_ignored: Option<bool>,
    },
    /// Back a workspace up now (running or stopped); waits until the backup
    /// is confirmed.
    Backup(Target),
    /// Put a backup back into a stopped workspace: its /workspace and home
    /// directories become what they were then. Refused until what it holds
    /// now is backed up (its stop backs it up). A workspace whose node is
    /// lost (`unknown`) starts on another node from the backup instead,
    /// giving up what only the lost node holds.
    Restore {
        #[command(flatten)]
        target: Target,
        /// The newest backup taken at or before this time (RFC 3339, e.g.
        /// 2026-12-03T14:05:00Z; default: the newest).
        #[arg(long, conflicts_with = "id")]
        at: Option<String>,
        /// A backup by id (from `berth backups`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete a workspace and its volume, and wait until it is gone. What
    /// its backups do not hold yet is backed up first: a running workspace
    /// is stopped, and deleted once the backup of its stop is confirmed.
    #[command(alias = "rm")]
    Delete {
        #[command(flatten)]
        change: Change,
        /// Delete at once, without that backup: what was written since the
        /// newest backup is lost.
        #[arg(long)]
        force: bool,
    },
    /// Run a command in a running workspace; exits with the command's status.
    Exec(ExecArgs),
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
    /// Print a one-time sign-in link (good for 2 minutes) for a browser: to
    /// a workspace's web terminal, with --editor to its editor, with --port
    /// to a port's preview; without a workspace, to the portal's list.
    Open {
        /// Workspace name (none: the portal's workspaces page).
        name: Option<String>,
        /// The preview of this port instead of the terminal.
        #[arg(long, conflicts_with = "editor", requires = "name")]
        port: Option<u16>,
        /// The editor (files and Monaco, the terminal beside it).
        #[arg(long, requires = "name")]
        editor: bool,
    },
    /// The output of a repository workspace's clone and lifecycle commands.
    Logs {
        #[command(flatten)]
        target: Target,
        /// The init log (clone, onCreateCommand, ...); the only log so far.
        #[arg(long)]
        init: bool,
        /// Keep printing what is appended until the steps are done.
        #[arg(long, short)]
        follow: bool,
    },
    /// `git pull --rebase` (default) or `git push` of a repository
    /// workspace's repository, with your git credential for its host.
    Sync {
        #[command(flatten)]
        target: Target,
        /// Pull and rebase the workspace's commits on the remote's (the default).
        #[arg(long, conflicts_with = "push")]
        pull: bool,
        /// Push the workspace's branch.
        #[arg(long)]
        push: bool,
    },
    /// The ports a workspace's configuration forwards, with their labels,
    /// visibility and preview URLs.
    Ports(Target),
    /// Your git credentials: tokens for the hosts of your repositories.
    #[command(name = "git-credential")]
    GitCredential {
        #[command(subcommand)]
        cmd: GitCredentialCmd,
    },
    /// Your settings: `berth config` shows them; `berth config dotfiles URL`
    /// sets the dotfiles repository applied to each new workspace (cloned
    /// into ~/.dotfiles, then its install script run or its dotfiles
    /// linked), `--unset` clears it.
    Config {
        #[command(subcommand)]
        cmd: Option<ConfigCmd>,
    },
    /// Prebuilds: a repository's /workspace after onCreateCommand and
    /// updateContentCommand, kept as a layer new workspaces start from.
    Prebuild {
        #[command(subcommand)]
        cmd: PrebuildCmd,
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
pub(crate) struct CreateArgs {
    /// 1 to 40 of a-z, 0-9 and '-'.
    pub(crate) name: String,
    /// Image reference, host[:port]/repository[:tag] (default: the
    /// coordinator's default image, if it has one).
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Resource tier (`berth tiers` lists them; built in: small, medium, large).
    #[arg(long)]
    pub(crate) tier: Option<String>,
    /// The team it belongs to (you must be its admin or member): its
    /// members see and act on it by role.
    #[arg(long)]
    pub(crate) team: Option<String>,
    /// CPU cores, e.g. 2 or 0.5 (overrides the tier).
    #[arg(long, value_parser = parse_cores)]
    pub(crate) cpu: Option<u32>,
    /// Memory, e.g. 4G (overrides the tier).
    #[arg(long, value_parser = parse_size)]
    pub(crate) memory: Option<u64>,
    /// Size of the persistent /workspace volume, e.g. 20G (overrides the tier).
    #[arg(long, value_parser = parse_size)]
    pub(crate) disk: Option<u64>,
    /// Process limit (overrides the tier).
    #[arg(long)]
    pub(crate) pids: Option<u32>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long, short, value_parser = key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Node label the workspace needs, KEY=VALUE (repeatable).
    #[arg(long, value_parser = key_value)]
    pub(crate) selector: Vec<(String, String)>,
    /// Create it on a node but do not start it (from a repository: it runs
    /// for its clone and configuration, then stops).
    #[arg(long)]
    pub(crate) no_start: bool,
    /// Make it from this repository (http(s) URL): cloned into
    /// /workspace/NAME, configured by its devcontainer.json or by what it
    /// is (a Node or Python project, ...), running once ready.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// Branch to check out (default: the remote's).
    #[arg(long, requires = "repo")]
    pub(crate) branch: Option<String>,
    /// Commit to check out (default: the branch's head).
    #[arg(long, requires = "repo")]
    pub(crate) commit: Option<String>,
    /// A partial clone (blobs fetched when needed), for big repositories.
    #[arg(long, requires = "repo")]
    pub(crate) partial: bool,
    /// Run this instead of what was detected for a repository without
    /// devcontainer.json ("" runs nothing).
    #[arg(long = "init", requires = "repo")]
    pub(crate) init_command: Option<String>,
    #[command(flatten)]
    pub(crate) wait: Wait,
}

/// What `berth exec` runs, where and how.
#[derive(Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Environment variable for the command, KEY=VALUE (repeatable).
    #[arg(long, short, value_parser = key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Working directory (default /workspace).
    #[arg(long)]
    pub(crate) cwd: Option<String>,
    /// Send standard input to the command.
    #[arg(long, short = 'i')]
    pub(crate) stdin: bool,
    /// Kill the command after this long, 1s to 1h: exec_timeout.
    #[arg(long, default_value = "60s", value_parser = whole_seconds)]
    pub(crate) timeout: Duration,
    /// Run as root of the workspace's own user namespace (for apt-get and
    /// the like; not root on the node).
    #[arg(long)]
    pub(crate) root: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) argv: Vec<String>,
}

#[derive(Args)]
pub(crate) struct Target {
    /// Workspace name.
    pub(crate) name: String,
    /// Owner of the workspace (admins; default: you).
    #[arg(long)]
    pub(crate) owner: Option<String>,
}

#[derive(Args)]
pub(crate) struct Change {
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) wait: Wait,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("{other:?}: on or off")),
    }
}

#[derive(Args, Clone, Copy)]
pub(crate) struct Wait {
    /// Return once the request is accepted instead of waiting.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Set (or with --unset clear) your dotfiles repository.
    Dotfiles {
        /// The repository: an http(s) URL without credentials.
        #[arg(required_unless_present = "unset", value_name = "URL")]
        repository: Option<String>,
        #[arg(long, conflicts_with = "repository")]
        unset: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum SshKeyCmd {
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
pub(crate) enum PrebuildCmd {
    /// Build a prebuild of a repository's branch now and wait for it.
    Run {
        /// The repository (http(s) URL).
        #[arg(long)]
        repo: String,
        /// Branch (default: the remote's default branch).
        #[arg(long)]
        branch: Option<String>,
        /// Image of the build (default: the coordinator's default image).
        #[arg(long)]
        image: Option<String>,
        /// Tier whose resources the build gets.
        #[arg(long)]
        tier: Option<String>,
        /// Answer at once instead of waiting for the build.
        #[arg(long)]
        no_wait: bool,
    },
    /// List prebuilds, newest first.
    #[command(alias = "ls")]
    List {
        /// Only this repository's.
        #[arg(long)]
        repo: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum GitCredentialCmd {
    /// Keep a token for HOST's repositories (replacing the one kept).
    Add {
        /// host[:port], as in the repository URLs.
        host: String,
        /// The git token (default: read from standard input). Not `--token`:
        /// that is the API token of every command.
        #[arg(long, conflicts_with = "git_token_file")]
        git_token: Option<String>,
        /// Read the git token from this file.
        #[arg(long)]
        git_token_file: Option<std::path::PathBuf>,
        /// User name sent with it (default x-access-token).
        #[arg(long)]
        username: Option<String>,
    },
    /// List your git credentials (never the tokens).
    #[command(alias = "ls")]
    List,
    /// Forget the token for HOST.
    #[command(alias = "rm")]
    Remove { host: String },
}

#[derive(Subcommand)]
pub(crate) enum NodesCmd {
    /// List nodes (the default).
    List,
    /// Show one node.
    Get { id: String },
    /// Place nothing new on a node.
    Cordon { id: String },
    /// Undo cordon (and drain).
    Uncordon { id: String },
    /// Cordon a node and stop its running workspaces; with shared backups
    /// (S3, or a shared path) each then starts on another node from its
    /// stop's backup, else it stays stopped there. `berth nodes` shows it
    /// `drained` once nothing on it is needed.
    Drain {
        id: String,
        /// Warn its running workspaces (terminals, events) and let them run
        /// this long before they stop and move (e.g. 10m; at most 7d).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<Duration>,
    },
}

/// `3000` (the same port locally) or `8080:3000`.
pub(crate) fn port_pair(s: &str) -> Result<(u16, u16), String> {
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

pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Cores as millicores: `2`, `0.5`, `1.25`, or `500m`.
pub(crate) fn parse_cores(s: &str) -> Result<u32, String> {
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
}
