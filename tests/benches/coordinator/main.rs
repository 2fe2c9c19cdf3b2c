//! Coordinator benchmarks, each printed as a table and appended as JSON lines
//! to target/bench/<bench>.jsonl:
//!
//! - placement: placements per second with durable commits (SQLite WAL with
//!   synchronous=FULL; PostgreSQL with fsync and synchronous_commit on) against
//!   5,000 simulated agents (registered, ready node rows with capacity, labels
//!   and cached images), by the coordinator's own scheduling pass; decision
//!   latency of the pure scheduler; baseline: the same number of rows written
//!   in the same batches by bare UPDATEs, with the same durability.
//! - link_handshake: full mutual-TLS QUIC handshakes per second against a
//!   coordinator process; baseline: server-authenticated-only handshakes to the
//!   same endpoint (the join ALPN) in the same run.
//! - link_memory: the coordinator's RSS with 5,000 idle agents connected,
//!   registered and heartbeating, against its RSS with none.
//! - api_overhead: create→running through the API (POST to SSE "running")
//!   against the agent alone (its control socket) on the same node and image,
//!   interleaved.
//! - forward: `berth port-forward` throughput and round trip vs direct TCP
//!   from the node to the same servers in the workspace, with `ssh -L`
//!   through an OpenSSH sshd on the node and through Berth's SSH beside it.
//! - keystroke: SSH keystroke echo through Berth vs an OpenSSH sshd on
//!   loopback, same SSH client.
//!
//! - files: the file API's 1 MiB read and write and 200-entry listing
//!   against OpenSSH's sftp through `berth ssh --stdio` (`files.rs`).
//! - api_audit: create latency through the router with the audit log and
//!   request metrics on vs off; metrics_scrape and capacity_report: a
//!   scrape and the capacity report with 5,000 simulated agents and 20,000
//!   placed workspaces (`admin.rs`).
//! - api_tls: create latency over HTTPS against plain HTTP, kept-alive
//!   connections, the coordinator's own listeners (`tls.rs`).
//!
//! `cargo bench --bench coordinator -- placement handshake memory api forward keystroke admin files api_tls` runs a
//! subset (`link` is handshake + memory); BERTH_BENCH_AGENTS sets the number
//! of idle agents (default 5000).

use berth_coordinator::domain::scheduler::{self, Request, Resources, Strategy};
use berth_coordinator::link::{Duplex, LinkError, NodeLink};
use berth_coordinator::pki::Ca;
use berth_coordinator::service::{Parts, Service, Timing};
use berth_coordinator::store::Store;
use berth_proto::agent as pb;
use berth_proto::units::now_ms;
use berth_tests::bench::{iters, percentile, record, rss_kib, sorted};
use berth_tests::{free_port, wait_listening, Cluster, ClusterOptions, Coordinator, Postgres};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod admin;
mod api;
mod files;
mod forward;
mod keystroke;
mod link;
mod placement;
mod tls;

use api::api_overhead;
use forward::{forward, tcp_client};
use keystroke::keystroke;
use link::{bare_quic_server, link_handshake, link_memory};
use placement::placement;

/// OpenSSH set up for `berth.*` (config-ssh) with a key registered for the
/// admin: the client and the key.
async fn berth_ssh_setup(c: &Cluster) -> (berth_tests::openssh::Client, std::path::PathBuf) {
    let dir = c.dir.join("berth-ssh");
    let key = dir.join("key");
    std::fs::create_dir_all(&dir).unwrap();
    berth_tests::openssh::keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (s, v) = c
        .post("/v1/ssh-keys", serde_json::json!({"public_key": public}))
        .await;
    assert!(s == 201 || s == 409, "{v}");
    let config = dir.join("config");
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &["config-ssh", "--ssh-config", config.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let client = berth_tests::openssh::Client {
        home: dir,
        config,
        api: c.api.clone(),
    };
    (client, key)
}

fn main() {
    if let Ok(spec) = std::env::var("BERTH_BENCH_TCP_CLIENT") {
        tcp_client(&spec);
    }
    if let Some(dir) = std::env::var_os("BERTH_BENCH_BARE_QUIC") {
        bare_quic_server(std::path::Path::new(&dir));
    }
    let only = berth_tests::bench::Selection::from_args();
    let want = |b: &str| only.wanted(b);
    berth_tests::bench::runtime().block_on(async {
        if want("placement") {
            let dir = tempfile::tempdir().unwrap();
            placement(
                "sqlite",
                &format!("sqlite://{}", dir.path().join("berth.db").display()),
            )
            .await;
            let pg = Postgres::start();
            placement("postgres", &pg.database("bench")).await;
        }
        if want("link") || want("handshake") {
            link_handshake().await;
        }
        if want("link") || want("memory") {
            link_memory().await;
        }
        if want("api") {
            api_overhead().await;
        }
        if want("forward") {
            forward().await;
        }
        if want("keystroke") {
            keystroke().await;
        }
        if want("files") {
            files::files().await;
        }
        if want("api_tls") {
            tls::api_tls().await;
        }
        if want("api_audit") || want("admin") {
            admin::api_audit().await;
        }
        if want("metrics_scrape") || want("capacity_report") || want("admin") {
            admin::scrape_and_report().await;
        }
    });
}
