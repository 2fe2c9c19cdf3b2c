//! Placement end to end on two nodes: the spread strategy spreads and
//! binpack packs (each the other's control); a drained node stops its
//! workspaces and takes no new ones; an unreachable node takes no new
//! placements, which go to the reachable node, until it is back.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Creates `names` and waits until they run; returns how many went where.
async fn place(c: &Cluster, names: &[&str]) -> BTreeMap<String, usize> {
    for n in names {
        let (s, w) = c.create(n).await;
        assert_eq!(s, 201, "{w}");
    }
    let mut on = BTreeMap::new();
    for n in names {
        let w = c.wait_state(n, "running", T).await;
        *on.entry(w["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spread_binpack_drain_and_unreachable_nodes() {
    let mut c = Cluster::start(ClusterOptions {
        agents: 2,
        coordinator_args: vec!["--strategy".into(), "spread".into()],
        ..Default::default()
    })
    .await;
    // Spread: four workspaces, two on each node.
    let on = place(&c, &["s1", "s2", "s3", "s4"]).await;
    assert_eq!(
        on.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "spread: {on:?}"
    );
    // Binpack (control): the next two go to the same node.
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--strategy".into(), "binpack".into()]);
    c.start_coordinator();
    let on = place(&c, &["b1", "b2"]).await;
    assert_eq!(on.len(), 1, "binpack: {on:?}");

    // Drain n1: cordoned and draining, its running workspaces stop (their
    // volumes stay), n0's are untouched, and new workspaces go to n0.
    let (s, n) = c.post("/v1/nodes/n1/drain", json!({})).await;
    assert_eq!(s, 200, "{n}");
    assert_eq!(
        (&n["cordoned"], &n["draining"]),
        (&json!(true), &json!(true))
    );
    let (_, all) = c.get("/v1/workspaces").await;
    for w in all.as_array().unwrap() {
        let name = w["name"].as_str().unwrap();
        let want = if w["node"] == "n1" {
            "stopped"
        } else {
            "running"
        };
        c.wait_state(name, want, T).await;
    }
    assert!(c.nodes[1].running_tasks().is_empty(), "n1 runs nothing");
    let on = place(&c, &["d1", "d2"]).await;
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["n0"],
        "after the drain: {on:?}"
    );
    let (s, _) = c.post("/v1/nodes/n1/uncordon", json!({})).await;
    assert_eq!(s, 200);

    // n0 unreachable: new workspaces go to n1 only (binpack would pick n0,
    // the fuller node), and n0's are not moved.
    c.partition(0);
    let seen = berth_tests::eventually(Duration::from_secs(10), || async {
        let (_, n) = c.get("/v1/nodes/n0").await;
        (n["status"] == "unreachable").then_some(())
    })
    .await;
    assert!(seen.is_some(), "n0 is seen unreachable");
    let on = place(&c, &["u1", "u2"]).await;
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["n1"],
        "while n0 is cut: {on:?}"
    );
    c.heal(0);
    let back = berth_tests::eventually(Duration::from_secs(10), || async {
        let (_, n) = c.get("/v1/nodes/n0").await;
        (n["status"] == "ready").then_some(())
    })
    .await;
    assert!(back.is_some(), "n0 is back");
    c.finish().await;
}
