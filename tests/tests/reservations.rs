//! What workspaces hold on their node, end to end through the API: a stopped
//! workspace frees its CPU and memory and keeps its disk; starting it again
//! reserves anew, and waits with the reason shown while its node is full;
//! CPU is overcommitted by the configured ratio, memory never.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn node(c: &Cluster) -> Value {
    let (_, nodes) = c.get("/v1/nodes").await;
    nodes[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_frees_cpu_and_memory_and_a_start_waits_for_room() {
    let c = Cluster::start(ClusterOptions {
        node_cpu_millis: 1000,
        cpu_overcommit: 2.0,
        ..Default::default()
    })
    .await;
    // The node offers 1000m; with an overcommit of 2, 2000m can be reserved.
    assert_eq!(node(&c).await["capacity"]["cpu_millis"], 2000);
    let body = |name: &str, cpu: u64| {
        json!({"name": name, "image": c.tiny(), "cpu_millis": cpu, "memory_bytes": 64u64 << 20,
               "disk_bytes": 32u64 << 20, "pids": 64})
    };
    let (s, w) = c.post("/v1/workspaces", body("a", 1500)).await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("a", "running", T).await;
    assert_eq!(node(&c).await["allocated"]["cpu_millis"], 1500);

    // Stopped: CPU and memory are free, the disk is still held.
    c.post("/v1/workspaces/a/stop", json!({})).await;
    c.wait_state("a", "stopped", T).await;
    let n = node(&c).await;
    assert_eq!(n["allocated"]["cpu_millis"], 0, "{n}");
    assert_eq!(n["allocated"]["memory_bytes"], 0, "{n}");
    assert_eq!(n["allocated"]["disk_bytes"], 32u64 << 20, "{n}");

    // Another workspace takes 1000m; starting the first (1500m) has to wait.
    let (s, w) = c.post("/v1/workspaces", body("b", 1000)).await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("b", "running", T).await;
    let (s, w) = c.post("/v1/workspaces/a/start", json!({})).await;
    assert!(s < 300, "{s} {w}");
    let waiting = berth_tests::eventually(Duration::from_secs(10), || async {
        let (_, w) = c.get("/v1/workspaces/a").await;
        let reason = w["reason"].as_str().unwrap_or("").to_string();
        (w["state"] == "stopped" && reason.contains("500m CPU short")).then_some(w)
    })
    .await;
    assert!(waiting.is_some(), "{}", c.get("/v1/workspaces/a").await.1);
    assert_eq!(
        node(&c).await["allocated"]["cpu_millis"],
        1000,
        "nothing over capacity"
    );

    // Room again: the start goes ahead by itself.
    let (s, _) = c.delete("/v1/workspaces/b").await;
    assert!(s < 300);
    c.wait_state("a", "running", T).await;
    assert_eq!(node(&c).await["allocated"]["cpu_millis"], 1500);
    let (s, _) = c.delete("/v1/workspaces/a").await;
    assert!(s < 300);
    c.wait_state("a", "deleted", T).await;
    let n = node(&c).await;
    assert_eq!(
        (&n["allocated"]["cpu_millis"], &n["allocated"]["disk_bytes"]),
        (&json!(0), &json!(0)),
        "{n}"
    );
    c.finish().await;
}
