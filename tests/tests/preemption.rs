//! A spot node taken back (TEST-PLAN 9) on the real components: two
//! nodes whose agents ask a metadata service (`berth_tests::imds`, on the
//! cluster's bridge) that answers n0 as AWS's IMDSv2 does and n1 as
//! Azure's Scheduled Events do, restic
//! repositories both nodes see (`shared_path`), backups every 15 s,
//! containerd.
//!
//! A workload appends sequence numbers to /workspace, each fsync'd (`sync`)
//! before the next; the test reads how far it got (acknowledged numbers).
//! AWS's rebalance recommendation for n0 first: n0 is cordoned and its
//! workspace backed up at once, and runs on. With 120 s of notice for n0,
//! then 30 s for n1: the node is drained, its
//! workspaces stop, their final backups are taken and they start on the
//! other node by themselves, every acknowledged number there, in order,
//! with no gap. With none (n0 just dies): the workspace is unknown, never
//! silently restarted empty; `berth restore` moves it from its last
//! periodic backup, which is at most one interval old, and the workspace
//! says what did not come with it. The metadata service was asked with a
//! token only.

use berth_tests::backups::{connected, copy_gone, stdout, workspace};
use berth_tests::cluster::Cluster;
use berth_tests::imds::Imds;
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);
/// The backup interval (minutes, then ms).
const INTERVAL_MIN: f64 = 0.25;
const INTERVAL_MS: i64 = 15_000;

/// Starts the workload in `ws`, appending to /workspace/`seq` and saying
/// in /workspace/`seq`.acked how far it got; returns a number it
/// acknowledged after a while.
async fn work(c: &Cluster, ws: &str, seq: &str, marker: &str) -> u64 {
    c.exec_ok(
        ws,
        &format!(
            "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >> /workspace/{seq}; sync; \
             echo $i > /workspace/{seq}.acked; done; : {marker}' </dev/null >/dev/null 2>&1 &"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    acked(c, ws, seq).await
}

async fn acked(c: &Cluster, ws: &str, seq: &str) -> u64 {
    let n: u64 = stdout(c, ws, &format!("cat /workspace/{seq}.acked"))
        .await
        .trim()
        .parse()
        .expect("a number acknowledged");
    assert!(n > 0);
    n
}

/// The numbers in /workspace/`seq`, checked to be 1, 2, 3... with no gap
/// and none twice.
async fn numbers(c: &Cluster, ws: &str, seq: &str) -> u64 {
    let text = stdout(c, ws, &format!("cat /workspace/{seq}")).await;
    let got: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        got.iter().enumerate().all(|(i, n)| *n == i as u64 + 1),
        "{seq} has a gap or a repeat: {:?}",
        &got[..got.len().min(50)]
    );
    got.len() as u64
}

/// Waits until `ws` runs on `node`.
async fn runs_on(c: &Cluster, ws: &str, node: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let w = workspace(c, ws).await;
        if w["state"] == "running" && w["node"] == node {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{ws} not running on {node}: {w}\n{}",
            c.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Gives `node` `seconds` of notice and checks that its workspaces
/// `moving` resume on `to`, the first with every number `seq` acknowledged
/// (`acked`).
async fn preempt(
    c: &Cluster,
    imds: &Imds,
    (node, seconds): (&str, i64),
    (to, moving): (&str, &[&str]),
    (seq, acked): (&str, u64),
) {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    // n1 asks as on Azure.
    if node == "n1" {
        imds.arm_azure(node, at);
    } else {
        imds.arm(
            node,
            &at.format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
        );
    }
    for ws in moving {
        let moved = runs_on(c, ws, to).await;
        let last = &moved["backup"]["last"];
        assert_eq!(last["consistency"], "stopped", "{moved}");
        assert_eq!(last["node"], node, "{moved}");
    }
    let (_, n) = c.get(&format!("/v1/nodes/{node}")).await;
    assert_eq!(
        (&n["cordoned"], &n["draining"]),
        (&json!(true), &json!(true))
    );
    let got = numbers(c, moving[0], seq).await;
    assert!(
        got >= acked,
        "{got} numbers restored, {acked} were acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempted_nodes_workspaces_resume_elsewhere_with_every_acknowledged_write() {
    let opts = berth_tests::cluster::ClusterOptions {
        agents: 2,
        ..Default::default()
    };
    let mut c = berth_tests::backups::cluster_of(opts, INTERVAL_MIN, "shared_path = true\n").await;
    // The agents ask the metadata service every second (restarted with it:
    // the service listens on the cluster's bridge, made with the cluster).
    let imds = Imds::start(&c.host_ip);
    for i in 0..2 {
        let node = c.nodes[i].id.clone();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&c.nodes[i].config)
            .unwrap();
        let source = if node == "n1" { "azure" } else { "aws" };
        write!(
            f,
            "[preemption]\nsource = \"{source}\"\nendpoint = \"{}\"\npoll_seconds = 1\n",
            imds.endpoint(&node)
        )
        .unwrap();
        c.nodes[i].kill_agent();
        c.nodes[i].start_agent(None);
    }
    berth_tests::backups::create_on(&c, "spot", "n0").await;
    berth_tests::backups::create_on(&c, "steady", "n1").await;
    let deadline = Instant::now() + T;
    while imds.asked("n0") < 2 || imds.asked("n1") < 2 {
        assert!(
            Instant::now() < deadline,
            "the agents do not ask the metadata service"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let marker = format!("spot-probe-{}", std::process::id());

    // A rebalance recommendation for n0: cordoned, backed up now, running.
    let n = work(&c, "spot", "seq1", &marker).await;
    let warned = berth_proto::units::now_ms();
    imds.arm_rebalance("n0");
    let deadline = Instant::now() + T;
    loop {
        let (_, n0) = c.get("/v1/nodes/n0").await;
        let w = workspace(&c, "spot").await;
        let backed = w["backup"]["last"]["taken_at_ms"].as_i64().unwrap_or(0) >= warned;
        if n0["cordoned"] == true && backed {
            assert_eq!(n0["draining"], false, "{n0}");
            assert_eq!(
                (&w["state"], &w["node"]),
                (&json!("running"), &json!("n0")),
                "{w}"
            );
            assert_eq!(w["backup"]["last"]["consistency"], "snapshot", "{w}");
            break;
        }
        assert!(Instant::now() < deadline, "no rebalance: {n0}\n{w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 120 s of notice for n0: `spot` resumes on n1 with all it had.
    preempt(&c, &imds, ("n0", 120), ("n1", &["spot"]), ("seq1", n)).await;
    // The control: n1's own workspace ran on, untouched.
    let steady = workspace(&c, "steady").await;
    assert_eq!(
        (&steady["state"], &steady["node"]),
        (&json!("running"), &json!("n1"))
    );

    // n0 is a fresh instance; 30 s of notice for n1: both move to n0.
    imds.disarm("n0");
    let (s, _) = c.post("/v1/nodes/n0/uncordon", json!({})).await;
    assert_eq!(s, 200);
    let n = work(&c, "spot", "seq2", &marker).await;
    preempt(
        &c,
        &imds,
        ("n1", 30),
        ("n0", &["spot", "steady"]),
        ("seq2", n),
    )
    .await;

    // No notice: n0 dies, its processes with it, while `spot` writes.
    imds.disarm("n1");
    let (s, _) = c.post("/v1/nodes/n1/uncordon", json!({})).await;
    assert_eq!(s, 200);
    let started = berth_proto::units::now_ms();
    work(&c, "spot", "seq3", &marker).await;
    // A periodic backup of the workload's writes, then more writes.
    let deadline = Instant::now() + T;
    let backed = loop {
        let w = workspace(&c, "spot").await;
        let last = &w["backup"]["last"];
        if last["taken_at_ms"].as_i64().is_some_and(|t| t > started) {
            break last.clone();
        }
        assert!(Instant::now() < deadline, "no periodic backup: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let died_at = berth_proto::units::now_ms();
    let before_death = acked(&c, "spot", "seq3").await;
    c.partition(0);
    c.nodes[0].kill_agent();
    std::process::Command::new("pkill")
        .args(["-9", "-f", &marker])
        .status()
        .unwrap();
    c.wait_state("spot", "unknown", T).await;
    // Never restarted by itself from a backup that lacks what n0 had.
    let (s, w) = c.post("/v1/workspaces/spot/start", json!({})).await;
    assert_eq!(s, 202, "{w}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w = workspace(&c, "spot").await;
    assert_eq!(
        (&w["state"], &w["node"]),
        (&json!("unknown"), &json!("n0")),
        "{w}"
    );
    // The user restores its last backup on n1, knowingly.
    let (s, r) = c.post("/v1/workspaces/spot/restore", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["moved_from"], "n0", "{r}");
    let moved = runs_on(&c, "spot", "n1").await;
    let last = &moved["backup"]["last"];
    // The loss is bounded by the interval and said.
    let taken = last["taken_at_ms"].as_i64().unwrap();
    assert!(
        taken >= backed["taken_at_ms"].as_i64().unwrap() && died_at - taken <= INTERVAL_MS + 5_000,
        "restored a backup {} ms older than the death: {moved}",
        died_at - taken
    );
    let why = moved["backup"]["moved"]["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("n0 is lost") && why.contains("not in it"),
        "the move does not say what it lost: {moved}"
    );
    let got = numbers(&c, "spot", "seq3").await;
    assert!(got > 0 && got <= before_death, "{got} of {before_death}");

    // n0 comes back: its copy of `spot` goes; one copy remains.
    let id = moved["id"].as_str().unwrap().to_string();
    c.heal(0);
    c.nodes[0].start_agent(None);
    connected(&c, "n0").await;
    copy_gone(&c, 0, &id).await;
    assert_eq!(imds.refused(), 0, "every question carried its token");
    c.finish().await;
}
