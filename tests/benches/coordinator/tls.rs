//! api_tls: `POST /v1/workspaces` over HTTPS against plain HTTP, both
//! served by the coordinator's own listeners (`http::serve`: the TLS one
//! with a certificate the cluster CA issued) on loopback, on one SQLite
//! store, each through one kept-alive connection (the handshake is paid once,
//! before timing), interleaved.

use super::admin::{admin_store, state};
use super::*;
use berth_coordinator::http::tls::{Certs, Source, TlsListener};
use berth_coordinator::http::{serve, ApiListener};

pub(super) async fn api_tls() {
    let (_dir, _store, token, svc) = admin_store().await;
    let (cert, key) = Ca::generate().unwrap();
    let ca = Ca::load(&cert, &key).unwrap();
    let certs = Certs::new(
        Source::Issued {
            names: vec!["127.0.0.1".into()],
        },
        &ca,
    )
    .unwrap();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_at, tls_at) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let tls = TlsListener::new(tls, certs.server_config().unwrap()).unwrap();
    tokio::spawn(serve(
        ApiListener::Plain(plain),
        state(&svc, true),
        std::future::pending(),
    ));
    tokio::spawn(serve(
        ApiListener::Tls(tls),
        state(&svc, true),
        std::future::pending(),
    ));
    let one = |builder: reqwest::ClientBuilder| builder.pool_max_idle_per_host(1).build().unwrap();
    let http = one(reqwest::Client::builder());
    let https = one(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()));
    let sides = [
        (&http, format!("http://{plain_at}")),
        (&https, format!("https://{tls_at}")),
    ];
    let n = iters(300);
    let mut took = [Vec::new(), Vec::new()];
    for i in 0..n + 10 {
        for k in [i % 2, (i + 1) % 2] {
            let (client, base) = &sides[k];
            let t = Instant::now();
            let r = client
                .post(format!("{base}/v1/workspaces"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": format!("t{i}-{k}"), "image": "registry.bench/img:1"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.bytes().await.unwrap();
            if i >= 10 {
                took[k].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let [plain, tls] = took.map(sorted);
    let (a, b) = (percentile(&tls, 0.5), percentile(&plain, 0.5));
    println!(
        "\napi_tls: POST /v1/workspaces, {n} each, interleaved, kept-alive connections, SQLite"
    );
    println!("{:<40} {:>8} {:>8}", "", "p50 ms", "p90 ms");
    println!("{:<40} {:>8.2} {:>8.2}", "HTTPS", a, percentile(&tls, 0.9));
    println!(
        "{:<40} {:>8.2} {:>8.2}",
        "HTTP (baseline)",
        b,
        percentile(&plain, 0.9)
    );
    println!("{:<40} {:>8.3}   (goal <= 1 ms)", "added p50 ms", a - b);
    record("api_tls", "create_p50_added_ms", a - b, "ms", "<=1");
    record("api_tls", "create_p50_ratio_vs_http", a / b, "x", "info");
}
