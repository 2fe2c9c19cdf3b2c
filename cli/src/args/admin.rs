//! `berth admin`'s arguments: tokens, the audit log, the reports.

use super::whole_seconds;
use berth_proto::units::parse_duration;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum AdminCmd {
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
    /// Per node what is allocatable, allocated and cached and its price;
    /// per tier how many more fit (packed with the scheduler's rules) and
    /// what is stranded; the cost per hour; when each resource runs out.
    Capacity(CapacityArgs),
    /// Workspace hours and cost over a window, with the share while idle.
    Usage(UsageArgs),
    /// A user's limits and usage, or set them.
    Quota {
        #[command(subcommand)]
        cmd: QuotaCmd,
    },
    /// The audit log, oldest first (with --json: one entry per line, for
    /// export), or `verify` to check its HMAC chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
        /// Only entries of this user.
        #[arg(long)]
        actor: Option<String>,
        /// Only actions starting with this, e.g. "POST /v1/workspaces".
        #[arg(long)]
        action: Option<String>,
        /// Only resources starting with this, e.g. /v1/workspaces/ws1.
        #[arg(long)]
        resource: Option<String>,
        /// Only entries newer than this (e.g. 1h, 30d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Args)]
pub(crate) struct CapacityArgs {
    /// Only this tier.
    #[arg(long)]
    pub(crate) tier: Option<String>,
    /// Also say how many nodes hold this many more of each tier.
    #[arg(long)]
    pub(crate) more: Option<u64>,
    /// The node those would be like (default: the largest).
    #[arg(long, requires = "more")]
    pub(crate) like: Option<String>,
}

#[derive(Args)]
pub(crate) struct UsageArgs {
    /// The window: this far back (e.g. 24h, 30d), from the hour.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub(crate) since: Duration,
    /// user, team, tier or workspace.
    #[arg(long, default_value = "user")]
    pub(crate) by: String,
    /// Print CSV (the export format).
    #[arg(long)]
    pub(crate) csv: bool,
}

#[derive(Subcommand)]
pub(crate) enum TeamCmd {
    /// Your teams and their members (admins: every team).
    #[command(alias = "ls")]
    List,
    /// Make a team (admins).
    Create { name: String },
    /// Add a member or change their role (the team's admins).
    Set {
        team: String,
        user: String,
        /// admin (manages members), member (acts on the team's
        /// workspaces) or viewer (reads them).
        #[arg(long)]
        role: String,
    },
    /// Remove a member (the team's admins).
    #[command(alias = "rm")]
    Remove { team: String, user: String },
}

#[derive(Subcommand)]
pub(crate) enum QuotaCmd {
    /// A user's (or, with --team, a team's) limits in force and what is used.
    Get {
        user: String,
        /// USER names a team.
        #[arg(long)]
        team: bool,
    },
    /// Set a user's limits (a limit not given is the configured default),
    /// or with --team a team's (a limit not given is none).
    Set {
        user: String,
        /// USER names a team.
        #[arg(long)]
        team: bool,
        /// Workspaces wanting to run at once.
        #[arg(long)]
        running: Option<u64>,
        /// Workspaces kept.
        #[arg(long)]
        workspaces: Option<u64>,
        /// CPU cores of the workspaces wanting to run, e.g. 8 or 0.5.
        #[arg(long, value_parser = super::parse_cores)]
        cpu: Option<u32>,
        /// Memory of the workspaces wanting to run, e.g. 32G.
        #[arg(long, value_parser = berth_proto::units::parse_size)]
        memory: Option<u64>,
        /// Disk of every workspace kept, e.g. 200G.
        #[arg(long, value_parser = berth_proto::units::parse_size)]
        disk: Option<u64>,
        /// What running workspaces may cost in a calendar month.
        #[arg(long)]
        budget: Option<f64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Check the chain: a changed, removed or inserted entry is named, and
    /// the command exits non-zero.
    Verify,
}

#[derive(Subcommand)]
pub(crate) enum JoinTokenCmd {
    /// Make a join token: `berth-agent --coordinator HOST:7443 --join TOKEN`.
    /// One-time unless --uses says more (a Kubernetes DaemonSet's Secret:
    /// docs/install.md).
    Create {
        /// Lifetime, 1s to 7d.
        #[arg(long, default_value = "1h", value_parser = whole_seconds)]
        ttl: Duration,
        /// How many nodes may join with it (1 to 10000).
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Revoke a join token (its id, the first part of the token, or the
    /// token): no node joins with it from now on; nodes it joined stay.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Make an API token for a user (shown once).
    Create {
        #[arg(long)]
        user: String,
        /// admin or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SecretCmd {
    /// Your secrets (or, with --team, the team's), without their values.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        team: Option<String>,
    },
    /// Set a secret, its value read from standard input (a trailing
    /// newline dropped) or, with --file, from a file. An environment
    /// variable takes effect at each workspace's next start; a file
    /// (/run/secrets/NAME) at once in running workspaces.
    Set {
        /// An environment variable's name: letters, digits and _.
        name: String,
        /// A team's secret, given to the team's workspaces (its admins).
        #[arg(long)]
        team: Option<String>,
        /// Read the value from this file, and give it as a file (unless
        /// --as env).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// How workspaces get it: env or file.
        #[arg(long = "as", value_parser = ["env", "file"])]
        kind: Option<String>,
        /// Also give it to the repository prebuilds you run (which see no
        /// other secret).
        #[arg(long)]
        prebuild: bool,
    },
    /// Remove a secret.
    #[command(alias = "rm")]
    Remove {
        name: String,
        #[arg(long)]
        team: Option<String>,
    },
}
