//! Cluster tests: a coordinator and agents in their own network namespaces,
//! each with its own containerd (see tests/src/cluster.rs).

use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_workspaces_over_three_agents_within_capacity() {
    let c = Cluster::start(ClusterOptions {
        agents: 3,
        node_cpu_millis: 2000,
        ..Default::default()
    })
    .await;
    let cr = &c;
    let tasks = (0..20).map(|i| async move {
        let name = format!("w{i}");
        (name.clone(), cr.create(&name).await)
    });
    for (name, (s, w)) in futures::future::join_all(tasks).await {
        assert_eq!(s, 201, "{name}: {w}");
    }
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..20 {
        let w = c.wait_state(&format!("w{i}"), "running", T).await;
        per_node
            .entry(w["node"].as_str().unwrap().to_string())
            .or_default()
            .push(w["id"].as_str().unwrap().to_string());
    }
    // Within capacity: 2000 millicores per node, 200 per workspace.
    let (_, nodes) = c.get("/v1/nodes").await;
    for n in nodes.as_array().unwrap() {
        let cap = n["capacity"]["cpu_millis"].as_u64().unwrap();
        let used = n["allocated"]["cpu_millis"].as_u64().unwrap();
        assert!(used <= cap, "node over capacity: {n}");
        let id = n["id"].as_str().unwrap();
        let on = per_node.get(id).map_or(0, Vec::len) as u64;
        assert_eq!(used, on * 200, "allocation of {id} matches its workspaces");
    }
    assert!(per_node.len() >= 2, "20 × 200m cannot fit one 2000m node: {per_node:?}");
    // Each workspace runs exactly where the coordinator says, once.
    for node in &c.nodes {
        let mut running = node.running_tasks();
        running.sort();
        let mut want = per_node.get(&node.id).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(running, want, "tasks on {}", node.id);
    }
    // Exec through the API, stop / start, delete.
    let (s, out) = c
        .post("/v1/workspaces/w3/exec", json!({"argv": ["sh", "-c", "echo hi; id -u; exit 3"]}))
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["stdout"], "hi\n1000\n");
    assert_eq!(out["exit_code"], 3);
    let (s, _) = c.post("/v1/workspaces/w3/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("w3", "stopped", T).await;
    let (s, e) = c.post("/v1/workspaces/w3/exec", json!({"argv": ["true"]})).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("not_running")));
    c.post("/v1/workspaces/w3/start", json!({})).await;
    c.wait_state("w3", "running", T).await;
    for i in 0..20 {
        let (s, _) = c.delete(&format!("/v1/workspaces/w{i}")).await;
        assert_eq!(s, 202);
    }
    for i in 0..20 {
        c.wait_state(&format!("w{i}"), "deleted", T).await;
    }
    for node in &c.nodes {
        assert!(node.containers().is_empty(), "containers left on {}", node.id);
    }
    let (_, nodes) = c.get("/v1/nodes").await;
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["allocated"]["cpu_millis"], 0, "reservations released: {n}");
    }
}

