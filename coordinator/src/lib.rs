//! berth-coordinator: keeps the desired state in SQL, schedules workspaces
//! onto agents over mutual-TLS QUIC and serves the REST API.
//!
//! Dependencies point one way: `http` (the API, thin adapters) → `service`
//! (the one writer: workspaces, intents, the reconcile loops) → `domain`
//! (pure decisions, `now` passed in), `store` (SQL), `link` (the agents,
//! behind the `NodeLink` trait). `auth`, `pki`, `config` and `error` sit
//! below them. This file only wires them together.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod link;
pub mod pki;
pub mod secrets;
pub mod service;
pub mod store;

pub use config::Config;

use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::sync::Arc;

/// A running coordinator's addresses.
#[derive(Debug, Clone)]
pub struct Bound {
    pub api: SocketAddr,
    /// The API is served over HTTPS.
    pub https: bool,
    pub link: SocketAddr,
}

/// Opens the store this configuration names.
pub async fn open_store(cfg: &Config) -> Result<store::Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::internal(format!("mkdir {}: {e}", cfg.data_dir.display())))?;
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

/// The secrets key (made on first start), checked against the store.
pub async fn secrets_sealer(cfg: &Config, store: &store::Store) -> Result<secrets::Sealer> {
    let path = cfg
        .secrets_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("secrets.key"));
    let sealer = secrets::Sealer::from_file(&path)?;
    let check = store.secrets_check_or_init(&sealer.check_value()).await?;
    if !sealer.matches(&check) {
        return Err(Error::internal(format!(
            "the secrets key {} is not the one this store was first used with: give every coordinator of a store the same --secrets-key-file",
            path.display()
        )));
    }
    Ok(sealer)
}

/// How long a stopping coordinator waits for the API requests in flight.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

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
    // The CA is public: clients of the API pin it (`berth --ca-file`).
    let ca_file = cfg.data_dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem)
        .map_err(|e| Error::internal(format!("write {}: {e}", ca_file.display())))?;
    let sealer = secrets_sealer(&cfg, &store).await?;
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
    let (link, link_events) = link::quic::QuicLink::new(ca.clone(), cfg.link.clone());
    let endpoint = link.bind()?;
    let svc = service::Service::new(service::Parts {
        id: cfg.id.clone(),
        store,
        link: Arc::new(link.clone()),
        timing: cfg.timing.clone(),
        tiers: cfg.tiers.clone(),
        default_image: cfg.default_image.clone(),
        ca_fingerprint: ca.fingerprint(),
        clock: service::system_clock(),
        sealer,
        prebuilds: cfg.prebuilds.clone(),
        backups: cfg.backups.clone(),
        cost: cfg.cost.clone(),
        quotas: cfg.quotas,
    });
    let state = http::AppState {
        svc: svc.clone(),
        ca_fingerprint: ca.fingerprint(),
        preview_domain: cfg.preview_domain.clone(),
        links: Default::default(),
        metrics: Default::default(),
        observe: true,
        oidc: cfg
            .oidc
            .clone()
            .map(http::oidc::Oidc::new)
            .transpose()?
            .map(Arc::new),
        terminals: Default::default(),
        https: cfg.api_tls.is_some(),
    };
    // The certificate is checked before anything listens.
    let certs = cfg
        .api_tls
        .clone()
        .map(|source| http::tls::Certs::new(source, &ca))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(|e| {
            Error::unavailable(
                "bind_failed",
                format!("bind API on {}: {e}", cfg.api_listen),
            )
        })?;
    let api = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let (listener, watch) = match &certs {
        Some(certs) => (
            http::ApiListener::Tls(
                http::tls::TlsListener::new(listener, certs.server_config()?)
                    .map_err(|e| Error::internal(e.to_string()))?,
            ),
            Some(certs.clone().watch(std::time::Duration::from_secs(1))),
        ),
        None => (http::ApiListener::Plain(listener), None),
    };
    let watch = async move {
        match watch {
            Some(w) => w.await,
            None => std::future::pending().await,
        }
    };
    let bound = Bound {
        api,
        https: certs.is_some(),
        link: endpoint
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?,
    };
    tracing::info!(api = %bound.api, link = %bound.link, ca = %ca.fingerprint(), "coordinator ready");
    on_bound(&bound);
    let (stop_api, api_stop) = tokio::sync::oneshot::channel::<()>();
    let server = http::serve(listener, state, async move {
        let _ = api_stop.await;
    });
    let link_serve = link.serve(endpoint.clone());
    let service = svc.run(link_events);
    tokio::pin!(server, link_serve, service, watch);
    tokio::select! {
        r = &mut server => r.map_err(|e| Error::internal(format!("API server: {e}")))?,
        _ = &mut link_serve => {}
        _ = &mut watch => {}
        _ = &mut service => {}
        _ = shutdown => tracing::info!("shutting down: no new API connections; finishing the requests in flight"),
    }
    // A rolling restart fails no request a client got through: the
    // listener closes (the client goes to another coordinator) and every
    // request in flight finishes, with the link and the service still
    // running for them, for up to DRAIN (event streams and terminals are
    // cut then).
    let _ = stop_api.send(());
    let drained = tokio::time::timeout(DRAIN, async {
        tokio::select! {
            _ = &mut server => {}
            _ = &mut link_serve => {}
            _ = &mut service => {}
        }
    })
    .await;
    tracing::info!(drained = drained.is_ok(), "API closed");
    endpoint.close(0u32.into(), b"coordinator shutting down");
    Ok(())
}

/// Writes a secret file readable by its owner only (atomically).
pub fn write_secret(path: &std::path::Path, text: &str) -> Result<()> {
    berth_proto::files::write_private(path, format!("{text}\n").as_bytes())
        .map_err(|e| Error::internal(format!("write {}: {e}", path.display())))
}

pub use berth_proto::units::parse_duration;
