//! berth-coordinator: keeps the desired state in SQL, schedules workspaces
//! onto agents over mutual-TLS QUIC and serves the REST API.
//!
//! Pure logic (`scheduler`, `lifecycle`, `validate`) is sans-IO; `store`,
//! `agents` and `api` are the boundaries; `controller` connects them.

pub mod agents;
pub mod api;
pub mod auth;
pub mod capacity;
pub mod config;
pub mod controller;
pub mod error;
pub mod lifecycle;
pub mod pki;
pub mod previews;
pub mod scheduler;
pub mod signin;
pub mod store;
pub mod terminal;
pub mod tunnels;
pub mod validate;

use crate::error::{ApiError, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a coordinator needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite store and the first admin token live.
    pub data_dir: PathBuf,
    /// `sqlite:///...` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub api_listen: SocketAddr,
    pub link: agents::LinkConfig,
    pub timing: controller::Timing,
    /// This coordinator's name in placement records.
    pub id: String,
    /// Wildcard domain of previews: `{port}-{workspace}.{domain}`.
    pub preview_domain: Option<String>,
    /// Image of a workspace created without one.
    pub default_image: Option<String>,
    /// The resource tiers (from the configuration file, or the built-in three).
    pub tiers: config::Tiers,
}

/// A running coordinator's addresses.
#[derive(Debug, Clone)]
pub struct Bound {
    pub api: SocketAddr,
    pub link: SocketAddr,
}

/// Opens the store this configuration names.
pub async fn open_store(cfg: &Config) -> Result<store::Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ApiError::internal(format!("mkdir {}: {e}", cfg.data_dir.display())))?;
    let url = cfg
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", cfg.data_dir.join("berth.db").display()));
    store::Store::open(&url).await
}

/// The cluster CA, made on first start.
pub async fn cluster_ca(store: &store::Store) -> Result<pki::Ca> {
    let (cert, key) = store.ca_or_init(pki::Ca::generate).await?;
    pki::Ca::load(&cert, &key)
}

/// Runs the coordinator until `shutdown` completes. `on_bound` is called
/// once both listeners are bound.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    on_bound: impl FnOnce(&Bound),
) -> Result<()> {
    let store = open_store(&cfg).await?;
    for fix in store.repair_allocations().await? {
        tracing::warn!(node = %fix.node, was = ?fix.was, now = ?fix.now, "node allocation repaired from its workspaces");
    }
    let ca = cluster_ca(&store).await?;
    if !store.has_admin().await? {
        let token = auth::create_api_token(&store, "admin", true).await?;
        let path = cfg.data_dir.join("admin.token");
        write_secret(&path, &token)?;
        // Only where it is: logs are often kept and read by more than the admin.
        println!(
            "First start: the admin API token is in {} (mode 0600)",
            path.display()
        );
    }
    let (agents, link_events) = agents::Agents::new(store.clone(), ca.clone(), cfg.link.clone());
    let endpoint = agents.bind()?;
    let ctl =
        controller::Controller::new(cfg.id.clone(), store, agents.clone(), cfg.timing.clone());
    let state = api::AppState {
        ctl: ctl.clone(),
        tiers: Arc::new(cfg.tiers.clone()),
        ca_fingerprint: ca.fingerprint(),
        preview_domain: cfg.preview_domain.clone(),
        default_image: cfg.default_image.clone(),
        links: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(|e| {
            ApiError::unavailable(
                "bind_failed",
                format!("bind API on {}: {e}", cfg.api_listen),
            )
        })?;
    let bound = Bound {
        api: listener
            .local_addr()
            .map_err(|e| ApiError::internal(e.to_string()))?,
        link: endpoint
            .local_addr()
            .map_err(|e| ApiError::internal(e.to_string()))?,
    };
    tracing::info!(api = %bound.api, link = %bound.link, ca = %ca.fingerprint(), "coordinator ready");
    on_bound(&bound);
    // Host-routed previews are rewritten before routing, so the layer wraps the router.
    let app = tower::Layer::layer(
        &axum::middleware::from_fn_with_state(state.clone(), previews::by_host),
        api::router(state),
    );
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
    tokio::select! {
        r = axum::serve(listener, app) => r.map_err(|e| ApiError::internal(format!("API server: {e}")))?,
        _ = agents.serve(endpoint.clone()) => {}
        _ = ctl.run(link_events) => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    endpoint.close(0u32.into(), b"coordinator shutting down");
    Ok(())
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
    writeln!(f, "{text}").map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))
}

pub use berth_proto::units::parse_duration;
