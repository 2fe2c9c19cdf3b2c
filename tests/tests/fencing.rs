//! TEST-PLAN 6 on the real components: a node cut off from its
//! coordinator longer than its agent's `[coordinator] stop_after_seconds`
//! stops its workspace, backs it up stopped ("fenced") to the store both
//! nodes see, and the coordinator, which finds that backup there, starts
//! the workspace on the other node with every write acknowledged before
//! the stop, including those made after its last ordinary backup.
//!
//! What is tried, on the host: the workload's process (found by a marker
//! in its command line) runs before the cut (positive control) and runs
//! nowhere once the node fenced it; the other node's workspace runs on
//! untouched (control); after the cut heals, the fenced copy left on n0
//! is deleted, so there is one copy.

use berth_tests::backups::{connected, copy_gone, create_on, stdout, workspace};
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// Whether a process whose command line holds `marker` runs on this
/// machine (every node's workspaces are processes here).
fn runs(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_stops_backs_up_and_its_workspace_resumes_elsewhere() {
    let mut c = berth_tests::backups::shared_pair().await;
    // n0 fences after 8 s without a coordinator (the coordinator loses it
    // after 6 s).
    let cfg = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let cfg = cfg.replacen(
        "reconnect_max_ms = 2000\n",
        "reconnect_max_ms = 2000\nstop_after_seconds = 8\n",
        1,
    );
    assert!(cfg.contains("stop_after_seconds"));
    std::fs::write(&c.nodes[0].config, cfg).unwrap();
    c.nodes[0].kill_agent();
    c.nodes[0].start_agent(None);
    connected(&c, "n0").await;

    create_on(&c, "far", "n0").await;
    create_on(&c, "near", "n1").await;
    let id = workspace(&c, "far").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let near_before = workspace(&c, "near").await;

    // The workload: n, fsync'd, then the next; /workspace/acked says how
    // far it got. The marker names its process on the host.
    let marker = format!("fence-probe-{}", std::process::id());
    c.exec_ok(
        "far",
        &format!(
            "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >> /workspace/seq; sync; \
             echo $i > /workspace/acked; sleep 0.05; done; : {marker}' </dev/null >/dev/null 2>&1 &"
        ),
    )
    .await;
    // An ordinary backup, so the node knows the store; then more writes.
    let (s, b) = c.post("/v1/workspaces/far/backups", json!({})).await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked: u64 = stdout(&c, "far", "cat /workspace/acked")
        .await
        .trim()
        .parse()
        .expect("a number acknowledged");
    assert!(runs(&marker), "positive control: the workload runs on n0");

    // The cut.
    let cut_at = berth_proto::units::now_ms();
    c.partition(0);
    let deadline = Instant::now() + T;
    let moved = loop {
        let w = workspace(&c, "far").await;
        if w["state"] == "running" && w["node"] == "n1" {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "not resumed on n1: {w}\n{}\n{}",
            c.coordinator_log(),
            std::fs::read_to_string(c.nodes[0].dir.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Fenced: the workload runs nowhere (n1 started the workspace, not it).
    assert!(!runs(&marker), "the fenced workload still runs");
    let last = &moved["backup"]["last"];
    assert_eq!(last["consistency"], "fenced", "{moved}");
    assert_eq!(last["node"], "n0", "{moved}");
    assert!(
        last["taken_at_ms"].as_i64().unwrap() > cut_at,
        "taken after the cut: {moved}"
    );

    // Everything acknowledged before the cut and after the last ordinary
    // backup, in order, no gap, none twice.
    let seq = stdout(&c, "far", "cat /workspace/seq").await;
    let got: Vec<u64> = seq.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        got.len() as u64 >= acked,
        "{} numbers restored, {acked} were acknowledged before the cut",
        got.len()
    );
    assert!(
        got.iter().enumerate().all(|(i, n)| *n == i as u64 + 1),
        "the sequence has a gap or a repeat: {:?}",
        &got[..got.len().min(50)]
    );
    let (s, list) = c.get("/v1/workspaces/far/backups").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["backups"][0]["consistency"], "fenced", "{list}");

    // Control: n1's own workspace ran on, untouched.
    let near = workspace(&c, "near").await;
    assert_eq!(
        (&near["state"], &near["node"], &near["generation"]),
        (&json!("running"), &json!("n1"), &near_before["generation"]),
        "{near}"
    );

    // Healed: n0 is back and the copy it fenced is deleted; one copy.
    c.heal(0);
    connected(&c, "n0").await;
    copy_gone(&c, 0, &id).await;
    assert_eq!(workspace(&c, "far").await["node"], "n1");
    c.finish().await;
}
