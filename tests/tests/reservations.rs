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

/// Every node's allocation equals the sum of what its workspaces hold
/// (`capacity::held` of each one's state), read from the API.
async fn allocation_matches(c: &Cluster, step: &str) {
    use berth_coordinator::domain::capacity::held;
    use berth_coordinator::domain::lifecycle::State;
    use berth_coordinator::domain::scheduler::Resources;
    // A consistent read: the workspaces the same before and after the nodes.
    let (nodes, all) = loop {
        let (_, before) = c.get("/v1/workspaces?owner=*").await;
        let (_, nodes) = c.get("/v1/nodes").await;
        let (_, after) = c.get("/v1/workspaces?owner=*").await;
        if before == after {
            break (nodes, after);
        }
    };
    for n in nodes.as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        let (mut sum, mut slots) = (Resources::default(), 0u64);
        for w in all.as_array().unwrap() {
            let state = State::parse(w["state"].as_str().unwrap()).unwrap();
            let r = Resources {
                cpu_millis: w["cpu_millis"].as_u64().unwrap(),
                memory_bytes: w["memory_bytes"].as_u64().unwrap(),
                disk_bytes: w["disk_bytes"].as_u64().unwrap(),
            };
            let h = held(state, w["node"].as_str().filter(|x| *x == id), r);
            sum.cpu_millis += h.cpu_millis;
            sum.memory_bytes += h.memory_bytes;
            sum.disk_bytes += h.disk_bytes;
            slots += u64::from(h != Resources::default());
        }
        let a = &n["allocated"];
        assert_eq!(
            (
                a["cpu_millis"].as_u64(),
                a["memory_bytes"].as_u64(),
                a["disk_bytes"].as_u64(),
                a["workspaces"].as_u64()
            ),
            (
                Some(sum.cpu_millis),
                Some(sum.memory_bytes),
                Some(sum.disk_bytes),
                Some(slots)
            ),
            "{step}: node {id} allocation vs its workspaces: {n}\n{all}"
        );
    }
}

/// A workspace driven to `failed` through the API, by a permanent agent
/// error (an image that does not exist) and by the start timeout (a registry
/// that never answers), then started, stopped and deleted: the node's
/// allocation follows at every step and ends at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_workspaces_hold_only_what_their_state_says() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    // A registry that accepts connections and never answers.
    let silent = std::net::TcpListener::bind(format!("{}:0", c.host_ip)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--start-timeout".into(), "4s".into()]);
    c.start_coordinator();
    let body = |name: &str, image: String| {
        json!({"name": name, "image": image, "cpu_millis": 300, "memory_bytes": 64u64 << 20,
               "disk_bytes": 32u64 << 20, "pids": 64})
    };
    // Something running beside, holding its share all along.
    let (s, w) = c.post("/v1/workspaces", body("steady", c.tiny())).await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("steady", "running", T).await;
    allocation_matches(&c, "steady runs").await;

    // A permanent error: the image is not in the registry.
    let missing = format!("{}/nosuch:latest", c.registry.addr);
    let (s, w) = c.post("/v1/workspaces", body("lost", missing)).await;
    assert_eq!(s, 201, "{w}");
    let w = c.wait_state("lost", "failed", T).await;
    assert!(
        w["reason"]
            .as_str()
            .unwrap_or("")
            .contains("image_not_found"),
        "{w}"
    );
    allocation_matches(&c, "failed on image_not_found").await;
    // Started again: placed anew, failed again.
    let (s, w) = c.post("/v1/workspaces/lost/start", json!({})).await;
    assert!(s < 300, "{s} {w}");
    allocation_matches(&c, "start of a failed workspace").await;
    c.wait_state("lost", "failed", T).await;
    allocation_matches(&c, "failed again").await;
    let (s, w) = c.post("/v1/workspaces/lost/stop", json!({})).await;
    assert!(s < 300, "{s} {w}");
    allocation_matches(&c, "stop of a failed workspace").await;
    c.delete("/v1/workspaces/lost").await;
    c.wait_state("lost", "deleted", T).await;
    allocation_matches(&c, "failed, deleted").await;

    // The start timeout: the node waits on a registry that never answers.
    let (s, w) = c
        .post(
            "/v1/workspaces",
            body("stuck", format!("{silent_addr}/tiny:latest")),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    allocation_matches(&c, "stuck placed").await;
    let w = c.wait_state("stuck", "failed", T).await;
    assert!(
        w["reason"]
            .as_str()
            .unwrap_or("")
            .contains("timed out while scheduled"),
        "{w}"
    );
    allocation_matches(&c, "failed on the start timeout").await;
    c.delete("/v1/workspaces/stuck").await;
    c.wait_state("stuck", "deleted", T).await;
    allocation_matches(&c, "timed out, deleted").await;

    c.delete("/v1/workspaces/steady").await;
    c.wait_state("steady", "deleted", T).await;
    let (_, nodes) = c.get("/v1/nodes").await;
    assert_eq!(
        nodes[0]["allocated"],
        json!({"cpu_millis": 0, "memory_bytes": 0, "disk_bytes": 0, "workspaces": 0}),
        "{nodes}"
    );
    c.finish().await;
}
