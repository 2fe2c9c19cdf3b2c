//! The agent's container image (`images/component.sh`), run on two nodes
//! as the DaemonSet in `deploy/kubernetes/agent.yaml` says, by the
//! kubelet's steps done with `ctr` from the manifest itself
//! (`berth_tests::kubelet`): privileged, in the host's PID namespace and the
//! node's network, with the host paths, propagation, ConfigMap, Secret and
//! arguments it names. Both nodes join with the one multi-use join token
//! the Secret holds; a workspace runs and answers; a restart of its node's
//! agent container (SIGTERM, a new container, as a rollout does) leaves the
//! workspace running, the same process, and the new agent adopts it.

use berth_tests::kubelet::{kind, manifest, KubeNode, Pod};
use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemonset_agent_runs_a_workspace_and_a_restart_keeps_it() {
    let image = berth_tests::component_image("agent");
    let c = Cluster::start(ClusterOptions {
        agents: 0,
        ..Default::default()
    })
    .await;
    let agent_yaml = manifest("agent.yaml");
    let ds = kind(&agent_yaml, "DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let env_value = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {name} value"))
            .to_string()
    };
    let secret = kind(&manifest("join-token.yaml"), "Secret").clone();
    let grace = Duration::from_secs(
        ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30),
    );

    // The Secret's token: one for every node (here two).
    let (s, t) = c
        .post("/v1/join-tokens", json!({"ttl_seconds": 600, "uses": 2}))
        .await;
    assert_eq!(s, 201, "{t}");
    // The ConfigMap's agent.toml, plus what this machine needs: its registry
    // (plain HTTP), a cgroup parent of the test's own, short stops.
    let parent = format!("bk{}", std::process::id());
    let agent_toml = format!(
        "{}\n[cgroup]\nparent = \"{parent}\"\n[workspace]\nstop_grace_seconds = 2\n\
         [[registry]]\nhost = \"{}\"\ninsecure = true\n",
        kind(&agent_yaml, "ConfigMap")["data"]["agent.toml"]
            .as_str()
            .unwrap(),
        c.registry.addr
    );
    let pod = Pod {
        workload: ds,
        config_maps: BTreeMap::from([(
            "berth-agent".to_string(),
            BTreeMap::from([("agent.toml".to_string(), agent_toml)]),
        )]),
        secrets: BTreeMap::from([(
            secret["metadata"]["name"].as_str().unwrap().to_string(),
            BTreeMap::from([(
                "token".to_string(),
                t["token"].as_str().unwrap().to_string(),
            )]),
        )]),
        // Cluster DNS: the link Service is the coordinator's link address.
        services: BTreeMap::from([(env_value("BERTH_COORDINATOR"), c.link_addr())]),
        image: format!("{}/{image}", c.registry.addr),
        network: None,
        replica: "agent".into(),
    };

    let mut nodes = Vec::new();
    let mut ids = Vec::new();
    for (i, name) in ["k1", "k2"].iter().enumerate() {
        let (netns, ip) = c.wire_netns(40 + i);
        let mut node = KubeNode::start(&c.dir, name, &netns, &ip);
        ids.push(node.run(&pod));
        nodes.push(node);
    }
    let ready = berth_tests::eventually(Duration::from_secs(60), || async {
        let (_, n) = c.get("/v1/nodes").await;
        let ready: Vec<&str> = n
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "ready")
            .filter_map(|n| n["id"].as_str())
            .collect();
        (ready == ["k1", "k2"]).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "the DaemonSet's agents did not join: {}\n{}",
        c.get("/v1/nodes").await.1,
        c.coordinator_log()
    );
    for (node, id) in nodes.iter().zip(&ids) {
        assert!(node.ready(id, container), "{id}'s readiness probe fails");
    }

    // A workspace, on one of them.
    let (s, w) = c.create("d1").await;
    assert_eq!(s, 201, "{w}");
    let w = c.wait_state("d1", "running", Duration::from_secs(60)).await;
    let at = nodes
        .iter()
        .position(|n| Some(n.name.as_str()) == w["node"].as_str())
        .unwrap_or_else(|| panic!("d1 on no DaemonSet node: {w}"));
    c.exec_ok("d1", "echo kept > /workspace/kept").await;
    let box_id = nodes[at].containers_in("berth");
    assert_eq!(box_id.len(), 1, "{box_id:?}");
    let pid = nodes[at]
        .task_pid("berth", &box_id[0])
        .expect("the workspace's task runs");

    // Restart the agent's container, as a rollout does.
    nodes[at].stop(&ids[at], grace);
    assert_eq!(
        nodes[at].task_pid("berth", &box_id[0]),
        Some(pid),
        "the workspace stopped with its agent's container"
    );
    ids[at] = nodes[at].run(&pod);
    let back = berth_tests::eventually(Duration::from_secs(60), || async {
        let (s, out) = c
            .post(
                "/v1/workspaces/d1/exec",
                json!({"argv": ["cat", "/workspace/kept"]}),
            )
            .await;
        (s == 200 && out["stdout"] == "kept\n").then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "d1 does not answer after the agent's restart"
    );
    assert!(nodes[at].ready(&ids[at], container));
    assert_eq!(
        nodes[at].task_pid("berth", &box_id[0]),
        Some(pid),
        "the new agent replaced the workspace instead of adopting it"
    );
    let (_, n) = c.get("/v1/nodes").await;
    assert_eq!(n.as_array().unwrap().len(), 2, "a node joined again: {n}");

    // Deleted through the API: nothing of it is left on the node.
    let (s, out) = c.delete("/v1/workspaces/d1").await;
    assert!(s == 202 || s == 204 || s == 200, "{s} {out}");
    c.wait_state("d1", "deleted", Duration::from_secs(60)).await;
    for n in &nodes {
        assert!(
            n.containers_in("berth").is_empty(),
            "{:?}",
            n.containers_in("berth")
        );
    }
    let (_, left, _) = berth_tests::sh(&format!(
        "find /sys/fs/cgroup/*/{parent} -mindepth 1 -type d 2>/dev/null"
    ));
    assert!(left.trim().is_empty(), "cgroups left: {left}");
    for (node, id) in nodes.iter().zip(&ids) {
        node.stop(id, grace);
    }
    drop(nodes);
    let _ = berth_tests::sh(&format!(
        "for c in /sys/fs/cgroup/*/{parent}; do [ -d \"$c\" ] && rmdir \"$c\"; done"
    ));
    c.finish().await;
}
