//! A spot node taken back (TEST-PLAN 9, with notice) on the real
//! components: two nodes whose agents ask a metadata service that answers
//! as AWS's IMDSv2 does (`berth_tests::imds`, on the cluster's bridge),
//! restic repositories both nodes see (`shared_path`), containerd.
//!
//! A workload appends sequence numbers to /workspace, each fsync'd (`sync`)
//! before the next; the test reads how far it got (acknowledged numbers),
//! then arms n0's notice. n0 is drained, the workspace stops, its final
//! backup is taken and it starts on n1 by itself: every acknowledged number
//! is there, in order, with no gap. The workspace on n1 (control) is not
//! touched, and the metadata service was asked with a token only.

use berth_tests::backups::{create_on, stdout, workspace};
use berth_tests::imds::Imds;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_node_s_workspace_resumes_elsewhere_with_every_acknowledged_write() {
    let mut c = berth_tests::backups::shared_pair().await;
    // The agents ask the metadata service every second (restarted with it:
    // the service listens on the cluster's bridge, made with the cluster).
    let imds = Imds::start(&c.host_ip);
    for i in 0..2 {
        let node = c.nodes[i].id.clone();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&c.nodes[i].config)
            .unwrap();
        write!(
            f,
            "[preemption]\nsource = \"aws\"\nendpoint = \"{}\"\npoll_seconds = 1\n",
            imds.endpoint(&node)
        )
        .unwrap();
        c.nodes[i].kill_agent();
        c.nodes[i].start_agent(None);
    }
    create_on(&c, "spot", "n0").await;
    create_on(&c, "steady", "n1").await;
    let deadline = Instant::now() + T;
    while imds.asked("n0") < 2 || imds.asked("n1") < 2 {
        assert!(
            Instant::now() < deadline,
            "the agents do not ask the metadata service"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The workload: n, fsync'd, then the next. /workspace/acked is written
    // after each sync: what it says is acknowledged.
    c.exec_ok(
        "spot",
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >> /workspace/seq; sync; \
         echo $i > /workspace/acked; done' </dev/null >/dev/null 2>&1 &",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked: u64 = stdout(&c, "spot", "cat /workspace/acked")
        .await
        .trim()
        .parse()
        .expect("a number acknowledged");
    assert!(acked > 0);

    // Two minutes' notice for n0.
    let at = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    imds.arm(
        "n0",
        &at.format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    // It stops, is backed up stopped, and starts on n1 by itself.
    let deadline = Instant::now() + T;
    let moved = loop {
        let w = workspace(&c, "spot").await;
        if w["state"] == "running" && w["node"] == "n1" {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "not resumed on n1: {w}\n{}",
            c.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, n0) = c.get("/v1/nodes/n0").await;
    assert_eq!(
        (&n0["cordoned"], &n0["draining"]),
        (&json!(true), &json!(true))
    );
    let last = &moved["backup"]["last"];
    assert_eq!(last["consistency"], "stopped", "{moved}");
    assert_eq!(last["node"], "n0", "{moved}");

    // Every acknowledged number, in order, no gap, none twice.
    let seq = stdout(&c, "spot", "cat /workspace/seq").await;
    let got: Vec<u64> = seq.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        got.len() as u64 >= acked,
        "{} numbers restored, {acked} were acknowledged",
        got.len()
    );
    assert!(
        got.iter().enumerate().all(|(i, n)| *n == i as u64 + 1),
        "the sequence has a gap or a repeat: {:?}",
        &got[..got.len().min(50)]
    );
    // The control: n1's own workspace ran on, untouched.
    let steady = workspace(&c, "steady").await;
    assert_eq!(
        (&steady["state"], &steady["node"]),
        (&json!("running"), &json!("n1"))
    );
    assert_eq!(imds.refused(), 0, "every question carried its token");
    c.finish().await;
}
