//! A prebuild survives its node's link breaking while it builds: the
//! coordinator waits for the node to come back and asks for the same
//! build again; the node answers with the build's outcome (it went on
//! building) instead of starting another.

use berth_tests::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

async fn prebuild_state(c: &Cluster, id: &str) -> Value {
    c.get(&format!("/v1/prebuilds/{id}")).await.1
}

async fn node_status(c: &Cluster) -> String {
    let (_, nodes) = c.get("/v1/nodes").await;
    nodes[0]["status"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_outlives_a_broken_link() {
    let (c, git, _dir) = berth_tests::git::repo_cluster().await;
    let config = json!({
        "image": format!("{}/dev:latest", c.registry.addr),
        "onCreateCommand": "sleep 8; echo built > built.txt",
    })
    .to_string();
    let url = git.repo("slow", &[(".devcontainer.json", &config)]);
    let (s, p) = c.post("/v1/prebuilds", json!({"repo": {"url": url}})).await;
    assert_eq!(s, 202, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    // Once its onCreateCommand runs, the link is cut until the coordinator
    // sees the node unreachable, then healed.
    for _ in 0..300 {
        if c.nodes[0].containers().contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.partition(0);
    for _ in 0..200 {
        if node_status(&c).await == "unreachable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node_status(&c).await, "unreachable");
    c.heal(0);
    let mut p = prebuild_state(&c, &id).await;
    for _ in 0..600 {
        if p["state"] != "building" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        p = prebuild_state(&c, &id).await;
    }
    assert_eq!(p["state"], "ready", "{p}\n{}", c.coordinator_log());
    // The link did break under the build (the control for this test), and
    // the build ran once.
    assert!(
        c.coordinator_log()
            .contains("prebuild: the link broke; asking again"),
        "{}",
        c.coordinator_log()
    );
    let log = c.nodes[0].agent_log();
    assert_eq!(log.matches("prebuild kept").count(), 1, "{log}");
    drop(git);
    c.finish().await;
}
