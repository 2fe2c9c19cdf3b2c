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

    // What the service counted: both workspaces asked to run and ran,
    // were placed and inserted; one agent is connected.
    let at_least = |series: &str, n: f64| {
        let v = sample(&text, series).unwrap_or(0.0);
        assert!(v >= n, "{series} = {v}\n{text}");
    };
    at_least("berth_workspace_start_duration_seconds_count", 2.0);
    at_least("berth_placements_total", 2.0);
    at_least(
        r#"berth_store_commit_duration_seconds_count{op="insert"}"#,
        2.0,
    );
    at_least(
        r#"berth_store_commit_duration_seconds_count{op="place"}"#,
        1.0,
    );
    assert_eq!(sample(&text, "berth_link_connections"), Some(1.0), "{text}");
    // A workspace no node can take counts as a placement failure by reason.
    let (s, w) = c
        .post(
            "/v1/workspaces",
            json!({"name": "huge", "image": c.tiny(), "cpu_millis": 64000}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let mut failures = None;
    for _ in 0..50 {
        let (_, text) = scrape(&c, &c.admin_token).await;
        failures = sample(&text, r#"berth_placement_failures_total{reason="cpu"}"#);
        if failures.is_some() {
            assert!(check(&text).0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failures, Some(1.0));

    // The Grafana dashboard in docs/ is built on these names: every metric
    // its queries use is in the scrape, and promtool parses every query.
    dashboard_holds(&text);

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

/// Checks docs/grafana/berth-coordinator.json against a scrape: each
/// `berth_*` name in its queries is a family the coordinator exports (a
/// counter's `_total`, a histogram's `_bucket`), and each query is valid
/// PromQL (`promtool check rules` on the queries as recording rules).
fn dashboard_holds(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/berth-coordinator.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("berth_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_total", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                scrape.contains(&format!("# TYPE {family} ")),
                "the dashboard's {name} ({e}) is not exported"
            );
        }
    }
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    // JSON is YAML.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian's prometheus package; make deps)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scrape_agent(ip: &str) -> String {
    let r = reqwest::get(format!("http://{ip}:9464/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// The agent's `/metrics` (docs/agent.md, "Metrics"): valid OpenMetrics; the
/// node's allocatable and allocated are what the coordinator's API says;
/// a workspace's CPU, memory, disk and network series follow what it did;
/// its series go with it; `per_workspace = false` leaves them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_follow_the_node_and_its_workspaces() {
    let mut c = Cluster::start(Default::default()).await;
    let (s, w) = c.create("am").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("am", "running", T).await;
    let id = w["id"].as_str().unwrap().to_string();
    c.exec_ok(
        "am",
        "head -c 8388608 /dev/urandom > /workspace/blob && sync && i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
    )
    .await;
    let ip = c.nodes[0].ip.clone();
    let text = scrape_agent(&ip).await;
    let (ok, said) = check(&text);
    assert!(ok, "{said}\n{text}");
    let (_, n) = c.get("/v1/nodes/n0").await;
    for (resource, key) in [
        ("cpu_millis", "cpu_millis"),
        ("memory_bytes", "memory_bytes"),
        ("workspaces", "workspaces"),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!(r#"berth_node_allocatable{{resource="{resource}"}}"#)
            ),
            n["capacity"][key].as_f64(),
            "{resource}: {n}\n{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"berth_node_allocated{{resource="{resource}"}}"#)
            ),
            n["allocated"][key].as_f64(),
            "{resource}: {n}\n{text}"
        );
    }
    let ws = |name: &str| format!(r#"{name}{{workspace="{id}"}}"#);
    let cpu = sample(&text, &ws("container_cpu_usage_seconds_total")).unwrap();
    assert!(cpu > 0.0, "{text}");
    let disk = sample(&text, &ws("container_fs_usage_bytes")).unwrap();
    assert!(disk >= 8.0 * 1048576.0, "{disk}\n{text}");
    assert!(sample(&text, &ws("container_memory_working_set_bytes")).unwrap() > 0.0);
    assert!(sample(&text, &ws("container_network_receive_bytes_total")).is_some());
    assert_eq!(sample(&text, &ws("container_oom_events_total")), Some(0.0));
    // Counters only grow.
    c.exec_ok("am", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
        .await;
    let later = sample(
        &scrape_agent(&ip).await,
        &ws("container_cpu_usage_seconds_total"),
    )
    .unwrap();
    assert!(later > cpu, "{later} after {cpu}");

    // Deleted: its series are gone.
    let (s, _) = c.delete("/v1/workspaces/am?force=true").await;
    assert_eq!(s, 202);
    c.wait_state("am", "deleted", T).await;
    let text = scrape_agent(&ip).await;
    assert!(!text.contains(&id), "{text}");
    assert_eq!(
        sample(&text, r#"berth_node_allocated{resource="workspaces"}"#),
        Some(0.0)
    );

    // Per-workspace series off.
    let (s, _) = c.create("am2").await;
    assert_eq!(s, 201);
    c.wait_state("am2", "running", T).await;
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    std::fs::write(
        &c.nodes[0].config,
        cfg.replace("[metrics]\n", "[metrics]\nper_workspace = false\n"),
    )
    .unwrap();
    c.nodes[0].kill_agent();
    c.nodes[0].start_agent(None);
    let text = berth_tests::eventually(Duration::from_secs(30), || async {
        reqwest::get(format!("http://{ip}:9464/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await
    .unwrap();
    assert!(check(&text).0);
    assert!(!text.contains("container_"), "{text}");
    assert_eq!(
        sample(&text, r#"berth_node_allocated{resource="workspaces"}"#),
        Some(1.0)
    );
    c.finish().await;
}
