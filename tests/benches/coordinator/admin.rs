//! The admin side's costs, in process on a SQLite store (WAL,
//! synchronous=FULL) like the placement bench:
//!
//! - api_audit: `POST /v1/workspaces` through the coordinator's router with
//!   the audit log and the request metrics on, against the same router with
//!   them off, interleaved on one store.
//! - metrics_scrape: `GET /metrics` with 5,000 simulated agents and 20,000
//!   placed workspaces: time and size.
//! - capacity_report: the capacity report (all tiers, with `more`) on the
//!   same.

use super::placement::{seed_nodes, seed_workspaces, service};
use super::*;
use axum::body::Body;
use berth_coordinator::http::{router, AppState};
use tower::ServiceExt;

pub(super) fn state(svc: &Service, observe: bool) -> AppState {
    AppState {
        svc: svc.clone(),
        ca_fingerprint: String::new(),
        preview_domain: None,
        links: Default::default(),
        metrics: Default::default(),
        observe,
        oidc: None,
        terminals: Default::default(),
        https: false,
    }
}

async fn call(app: &axum::Router, req: axum::http::Request<Body>) -> (u16, usize) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.len())
}

/// A SQLite store in a temporary directory (kept while the first is), an
/// admin's token in it, and a service on it.
pub(super) async fn admin_store() -> (tempfile::TempDir, Store, String, Service) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = Store::open(&url).await.unwrap();
    let token = berth_coordinator::auth::create_api_token(&store, "bench", true)
        .await
        .unwrap();
    let svc = service(store.clone());
    (dir, store, token, svc)
}

pub(super) async fn api_audit() {
    let (_dir, store, token, svc) = admin_store().await;
    let (on, off) = (router(state(&svc, true)), router(state(&svc, false)));
    let n = iters(200);
    let create = |name: String| {
        axum::http::Request::post("/v1/workspaces")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({"name": name, "image": "registry.bench/img:1"}).to_string(),
            ))
            .unwrap()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..n + 10 {
        // Alternate which goes first.
        for (k, app) in [(i % 2, &on), ((i + 1) % 2, &off)] {
            let t = Instant::now();
            let (s, _) = call(app, create(format!("a{i}-{k}"))).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(s, 201);
            if i >= 10 {
                if std::ptr::eq(app, &on) {
                    with.push(ms);
                } else {
                    without.push(ms);
                }
            }
        }
    }
    let entries = store
        .audit_entries(&berth_coordinator::store::AuditFilter {
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(entries, n + 10, "one entry per audited create");
    let (with, without) = (sorted(with), sorted(without));
    let (a, b) = (percentile(&with, 0.5), percentile(&without, 0.5));
    println!("\napi_audit: POST /v1/workspaces, {n} each, interleaved, SQLite synchronous=FULL");
    println!("{:<40} {:>8} {:>8}", "", "p50 ms", "p90 ms");
    println!(
        "{:<40} {:>8.2} {:>8.2}",
        "audit + metrics on",
        a,
        percentile(&with, 0.9)
    );
    println!(
        "{:<40} {:>8.2} {:>8.2}",
        "off (baseline)",
        b,
        percentile(&without, 0.9)
    );
    println!(
        "{:<40} {:>8.2}   (goal <= 1.05, or <= 1 ms added)",
        "ratio on / off",
        a / b
    );
    record(
        "api_audit",
        "p50_ratio_audit_on_vs_off",
        a / b,
        "x",
        "<=1.05 or +1ms",
    );
    record("api_audit", "added_p50_ms", a - b, "ms", "<=1");
}

/// 5,000 nodes and 20,000 workspaces placed by the coordinator's own passes.
async fn fleet() -> (tempfile::TempDir, Store, Service) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = Store::open(&url).await.unwrap();
    let now = now_ms();
    seed_nodes(&store, now).await;
    seed_workspaces(&store, 20_000, now).await;
    let svc = service(store.clone());
    while svc.schedule_once().await.unwrap() > 0 {}
    (dir, store, svc)
}

pub(super) async fn scrape_and_report() {
    let (_dir, store, svc) = fleet().await;
    let token = berth_coordinator::auth::create_api_token(&store, "bench", true)
        .await
        .unwrap();
    let app = router(state(&svc, true));
    let n = iters(20);
    let (mut scrape, mut bytes) = (Vec::new(), 0);
    for _ in 0..n + 2 {
        let t = Instant::now();
        let (s, len) = call(
            &app,
            axum::http::Request::get("/metrics")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200);
        scrape.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = len;
    }
    let mut report = Vec::new();
    for _ in 0..n + 2 {
        let t = Instant::now();
        let r = svc.capacity_report(None, Some(1000), None).await.unwrap();
        report.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.nodes.len(), 5000);
    }
    let (scrape, report) = (sorted(scrape[2..].to_vec()), sorted(report[2..].to_vec()));
    println!("\nmetrics_scrape and capacity_report: 5,000 simulated agents, 20,000 placed workspaces, {n} runs");
    println!("{:<36} {:>8} {:>8}", "", "p50 ms", "p90 ms");
    println!(
        "{:<36} {:>8.1} {:>8.1}   (goal <= 200 ms; {} KiB)",
        "GET /metrics",
        percentile(&scrape, 0.5),
        percentile(&scrape, 0.9),
        bytes / 1024
    );
    println!(
        "{:<36} {:>8.1} {:>8.1}   (goal <= 500 ms)",
        "capacity report (3 tiers, more)",
        percentile(&report, 0.5),
        percentile(&report, 0.9)
    );
    record(
        "metrics_scrape",
        "scrape_ms",
        percentile(&scrape, 0.5),
        "ms",
        "<=200",
    );
    record(
        "metrics_scrape",
        "scrape_bytes",
        bytes as f64,
        "bytes",
        "bounded",
    );
    record(
        "capacity_report",
        "report_ms",
        percentile(&report, 0.5),
        "ms",
        "<=500",
    );
}
