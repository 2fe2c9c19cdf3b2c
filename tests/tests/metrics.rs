//! The coordinator's `/metrics` (docs/coordinator.md, "Metrics") on the
//! real components: the Prometheus Python client's strict OpenMetrics
//! parser (`scripts/openmetrics-check.sh`) reads the exposition, and the
//! values are what the API says: workspaces by state, nodes, each node's
//! allocation, and the API requests this test made. A member may not read
//! it. Control: the parser refuses a broken exposition.

use berth_tests::Cluster;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// The OpenMetrics parser's verdict on `text`: (success, what it said).
fn check(text: &str) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/openmetrics-check.sh"
    );
    let mut p = Command::new(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/openmetrics-check.sh");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn scrape(c: &Cluster, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", c.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_and_say_what_the_api_says() {
    let c = Cluster::start(Default::default()).await;
    for ws in ["m1", "m2"] {
        let (s, w) = c.create(ws).await;
        assert_eq!(s, 201, "{w}");
        c.wait_state(ws, "running", T).await;
    }
    let (s, _) = c.post("/v1/workspaces/m2/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("m2", "stopped", T).await;
    for _ in 0..3 {
        let (s, _) = c.get("/v1/workspaces/m1").await;
        assert_eq!(s, 200);
    }

    let (s, text) = scrape(&c, &c.admin_token).await;
    assert_eq!(s, 200, "{text}");
    let (ok, said) = check(&text);
    assert!(ok, "{said}\n{text}");
    assert_eq!(
        sample(&text, r#"berth_workspaces{state="running",tier="small"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"berth_workspaces{state="stopped",tier="small"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"berth_nodes{status="ready"}"#),
        Some(1.0),
        "{text}"
    );
    // Each node's allocation is the API's.
    let (_, n) = c.get("/v1/nodes/n0").await;
    for (resource, key) in [
        ("cpu_millis", "cpu_millis"),
        ("memory_bytes", "memory_bytes"),
        ("workspaces", "workspaces"),
    ] {
        for (family, side) in [
            ("node_allocated", "allocated"),
            ("node_allocatable", "capacity"),
        ] {
            let series = format!(r#"berth_{family}{{node="n0",resource="{resource}"}}"#);
            assert_eq!(
                sample(&text, &series),
                n[side][key].as_f64(),
                "{series}: {n}\n{text}"
            );
        }
    }
    // The requests this test made, by route template.
    let gets = sample(
        &text,
        r#"berth_api_requests_total{route="/v1/workspaces/{name}",method="GET",status="200"}"#,
    )
    .unwrap_or(0.0);
    assert!(gets >= 3.0, "{gets}\n{text}");
    assert!(
        text.contains(r#"berth_api_request_duration_seconds_bucket{le="0.001",route="/v1/workspaces/{name}",method="GET"}"#)
            || text.contains(r#"berth_api_request_duration_seconds_bucket{route="/v1/workspaces/{name}",method="GET",le="0.001"}"#),
        "{text}"
    );

    // Admins only.
    let (s, t) = c
        .post("/v1/tokens", json!({"user": "mia", "role": "member"}))
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, _) = scrape(&c, t["token"].as_str().unwrap()).await;
    assert_eq!(s, 403);
    // Control: the parser refuses what is not valid.
    let (ok, _) = check("berth_broken{ 1\n# EOF\n");
    assert!(!ok, "the parser accepts anything");
    c.finish().await;
}
