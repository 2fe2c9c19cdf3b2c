//! `berth-coordinator`: runs the coordinator (`run`, the default) and
//! offers offline admin commands against its store.

use berth_coordinator::domain::scheduler::Strategy;
use berth_coordinator::http::tls::Source;
use berth_coordinator::link::quic::LinkConfig;
use berth_coordinator::service::Timing;
use berth_coordinator::{parse_duration, Config};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Berth coordinator: desired state, scheduling, agent link and REST API.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Args, Clone)]
struct Opts {
    /// Data directory (SQLite store, first admin token).
    #[arg(
        long,
        global = true,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth/coordinator"
    )]
    data_dir: PathBuf,
    /// Store URL: sqlite:///path or postgres://user@host/db (default: SQLite in the data directory).
    #[arg(long, global = true, env = "BERTH_DATABASE_URL")]
    database: Option<String>,
    /// Address of the REST API.
    #[arg(
        long,
        global = true,
        env = "BERTH_API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    api: SocketAddr,
    /// Serve the API over HTTPS with this certificate chain (PEM, leaf
    /// first), re-read when it or the key changes on disk.
    #[arg(long, global = true, env = "BERTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, global = true, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API over HTTPS with a certificate the cluster CA issues for
    /// this DNS name or IP address (repeatable; renewed before it expires).
    /// Clients pin the CA: `berth login` shows its fingerprint.
    #[arg(
        long = "tls-name",
        global = true,
        env = "BERTH_TLS_NAMES",
        value_delimiter = ',',
        conflicts_with = "tls_cert"
    )]
    tls_names: Vec<String>,
    /// UDP address of the agent link (QUIC).
    #[arg(
        long,
        global = true,
        env = "BERTH_LINK_LISTEN",
        default_value = "0.0.0.0:7443"
    )]
    link: SocketAddr,
    /// Extra DNS name for the link certificate (repeatable).
    #[arg(long = "server-name", global = true)]
    server_names: Vec<String>,
    /// How often agents send heartbeats.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    heartbeat: std::time::Duration,
    /// A node silent this long is unreachable (nothing new placed on it).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    unreachable_after: std::time::Duration,
    /// A node silent this long is lost: its workspaces become unknown. Also the
    /// grace period after a coordinator start before any node is declared lost.
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    lost_after: std::time::Duration,
    /// Lifetime of node certificates (agents renew at two thirds).
    #[arg(long, global = true, default_value = "24h", value_parser = parse_duration)]
    cert_lifetime: std::time::Duration,
    /// A workspace whose node cannot reach the image's registry this long
    /// after placement has failed (registry_unreachable).
    #[arg(long, global = true, default_value = "2m", value_parser = parse_duration)]
    registry_timeout: std::time::Duration,
    /// A workspace not running this long after placement has failed.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration)]
    start_timeout: std::time::Duration,
    /// CPU that can be reserved per CPU a node offers (CPU limits are
    /// ceilings, mostly idle in developer workspaces); memory is never
    /// overcommitted. 1 to 64.
    #[arg(long, global = true, default_value = "4", value_parser = parse_overcommit)]
    cpu_overcommit: f64,
    /// Placement among nodes that fit equally well on the image: binpack or spread.
    #[arg(long, global = true, default_value = "binpack", value_parser = parse_strategy)]
    strategy: Strategy,
    /// Name of this coordinator in placement records (default: host name).
    #[arg(long, global = true)]
    id: Option<String>,
    /// Wildcard domain for HTTP previews: {port}-{workspace}.DOMAIN reaches
    /// the port (its DNS must point at this API). Path previews under /w/
    /// work without it.
    #[arg(long, global = true, env = "BERTH_PREVIEW_DOMAIN")]
    preview_domain: Option<String>,
    /// Image of a workspace created without one (e.g. the local registry's dev image).
    #[arg(long, global = true, env = "BERTH_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// Configuration file (TOML): the resource tiers and what each grants
    /// (docs/coordinator.md, "Configuration file").
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// The key users' git tokens are sealed with (64 hex digits), made on
    /// first start; coordinators sharing a store need the same file.
    /// Default: <data-dir>/secrets.key.
    #[arg(long, global = true, env = "BERTH_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Root of the workspaces' backup repositories (an absolute path on
    /// each node, or s3:URL); overrides the configuration's `[backups]
    /// repository`.
    #[arg(long, global = true, env = "BERTH_BACKUP_REPOSITORY")]
    backup_repository: Option<String>,
    /// Whether a delete waits for the backup of the workspace stopped
    /// (true, the default) or deletes at once; overrides the
    /// configuration's `[backups] before_delete`.
    #[arg(long, global = true, env = "BERTH_BACKUP_BEFORE_DELETE")]
    backup_before_delete: Option<bool>,
}

fn parse_overcommit(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (1.0..=64.0).contains(r))
        .ok_or_else(|| format!("{s:?}: expected a ratio from 1 to 64"))
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "binpack" => Ok(Strategy::BinPack),
        "spread" => Ok(Strategy::Spread),
        _ => Err("binpack or spread".into()),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the coordinator in the foreground (the default).
    Run,
    /// Offline administration against the store.
    #[command(subcommand)]
    Admin(Admin),
}

#[derive(Subcommand)]
enum Admin {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Node join tokens.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinCmd),
    /// Print the cluster CA: its SHA-256 fingerprint (what `berth login
    /// --ca-fingerprint` takes) on the first line, then the certificate (PEM,
    /// what `berth --ca-file` takes).
    Ca,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token and print it (shown once).
    Create {
        #[arg(long)]
        user: String,
        /// admin or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
}

#[derive(Subcommand)]
enum JoinCmd {
    /// Create a node join token and print it: one-time unless --uses says
    /// more (a Kubernetes DaemonSet's Secret: one use per node it may run on).
    Create {
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// How many nodes may join with it (1 to 10000).
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Revoke a join token (its id, or the token): no node joins with it
    /// from now on; the nodes it joined stay.
    Revoke { id: String },
}

fn config(o: &Opts) -> Result<Config, String> {
    let file =
        berth_coordinator::config::load(o.config.as_deref()).map_err(|e| match &o.config {
            Some(p) => format!("{}: {e}", p.display()),
            None => e.to_string(),
        })?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "coordinator".into());
    Ok(Config {
        data_dir: o.data_dir.clone(),
        database_url: o.database.clone(),
        api_listen: o.api,
        api_tls: match (&o.tls_cert, &o.tls_key) {
            (Some(cert), Some(key)) => Some(Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if !o.tls_names.is_empty() => Some(Source::Issued {
                names: o.tls_names.clone(),
            }),
            _ => None,
        },
        link: LinkConfig {
            listen: o.link,
            cert_lifetime: o.cert_lifetime,
            heartbeat: o.heartbeat,
            idle_timeout: (o.heartbeat * 4).max(std::time::Duration::from_secs(2)),
            server_names: o.server_names.clone(),
            cpu_overcommit: o.cpu_overcommit,
        },
        timing: Timing {
            unreachable_after: o.unreachable_after,
            lost_after: o.lost_after,
            start_timeout: o.start_timeout,
            registry_timeout: o.registry_timeout,
            strategy: o.strategy,
            ..Timing::default()
        },
        id: o.id.clone().unwrap_or(host),
        default_image: o.default_image.clone(),
        preview_domain: o
            .preview_domain
            .as_ref()
            .map(|d| d.trim_matches('.').to_ascii_lowercase()),
        tiers: file.tiers,
        prebuilds: file.prebuilds,
        backups: {
            let mut b = file.backups;
            if let Some(r) = &o.backup_repository {
                berth_coordinator::domain::backup::check_repository(r)
                    .map_err(|e| format!("--backup-repository {r:?}: {e}"))?;
                b.repository = r.clone();
            }
            if let Some(before) = o.backup_before_delete {
                b.before_delete = before;
            }
            b
        },
        secrets_key_file: o.secrets_key_file.clone(),
        cost: file.cost,
        quotas: file.quotas,
        oidc: file.oidc,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = match config(&cli.opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-coordinator: config: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => {
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            Box::pin(berth_coordinator::run(cfg, shutdown, |_| {})).await
        }
        Cmd::Admin(a) => admin(&cfg, a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-coordinator: {}: {}", e.code, e.message);
            std::process::ExitCode::from(1)
        }
    }
}

async fn admin(cfg: &Config, a: Admin) -> berth_coordinator::error::Result<()> {
    use berth_coordinator::{auth, cluster_ca, domain::validate, open_store};
    let store = open_store(cfg).await?;
    match a {
        Admin::Token(TokenCmd::Create { user, role }) => {
            validate::user_name(&user)?;
            let role = berth_proto::api::Role::parse(&role).ok_or_else(|| {
                berth_coordinator::error::Error::invalid(
                    "invalid_role",
                    "role must be admin or member",
                )
            })?;
            let admin = role == berth_proto::api::Role::Admin;
            println!("{}", auth::create_api_token(&store, &user, admin).await?);
        }
        Admin::JoinToken(JoinCmd::Create { ttl, uses }) => {
            let ca = cluster_ca(&store).await?;
            let (t, _) = auth::create_join_token(
                &store,
                &ca.fingerprint(),
                "admin-cli",
                ttl.as_secs().max(1),
                uses,
                berth_proto::units::now_ms(),
            )
            .await?;
            println!("{t}");
        }
        Admin::JoinToken(JoinCmd::Revoke { id }) => {
            let id = berth_proto::tls::JoinToken::parse(&id).map_or(id, |t| t.id);
            if !store
                .revoke_join_token(&id, berth_proto::units::now_ms())
                .await?
            {
                return Err(berth_coordinator::error::Error::not_found(format!(
                    "no join token {id:?}"
                ))
                .with_code("join_token_not_found"));
            }
            println!("revoked {id}");
        }
        Admin::Ca => {
            let ca = cluster_ca(&store).await?;
            print!("{}\n{}", ca.fingerprint(), ca.cert_pem);
        }
    }
    Ok(())
}
