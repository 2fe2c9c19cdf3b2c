//! Backups to object storage on the real components: restic writing to
//! moto's S3-compatible server (`berth_tests::s3`) through a fault proxy,
//! two nodes, containerd. No shared path: S3 is what both nodes reach.
//!
//! What is tried: backups land in the bucket and a stopped workspace
//! restores from it; a store answering 503 for a while (connections cut
//! too) delays a backup, which restic retries until it is confirmed, with
//! nothing lost; a slow store (every chunk held back) and a workspace
//! whose volume is full are still backed up; and a stopped workspace whose
//! node is lost moves to the other node from S3.

use berth_tests::backups::{copy_gone, create_on, stdout, workspace};
use berth_tests::cluster::{Cluster, ClusterOptions};
use berth_tests::s3::{FaultProxy, Moto};
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// Waits until `ws` has a backup taken at or after `since_ms`.
async fn backup_since(c: &Cluster, ws: &str, since_ms: i64) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let w = workspace(c, ws).await;
        if w["backup"]["last"]["taken_at_ms"].as_i64() >= Some(since_ms) {
            return w;
        }
        assert!(Instant::now() < deadline, "no backup since {since_ms}: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_s3_outlast_503s_and_move_a_workspace_between_nodes() {
    let opts = ClusterOptions {
        agents: 2,
        reflink: true,
        ..Default::default()
    };
    let mut c = Cluster::start(opts).await;
    let moto = Moto::start(&c.host_ip, &c.dir.join("moto.log"));
    let proxy = FaultProxy::start(&c.host_ip, &moto.addr);
    let repository = format!("s3:http://{}/berth-backups", proxy.addr);
    berth_tests::backups::back_up_to(
        &mut c,
        &repository,
        0.05,
        "[backups.env]\nAWS_ACCESS_KEY_ID = \"berth\"\nAWS_SECRET_ACCESS_KEY = \"berth-secret\"\n\
         AWS_DEFAULT_REGION = \"us-east-1\"\n",
    );
    create_on(&c, "s3ws", "n0").await;
    c.exec_ok("s3ws", "echo one > /workspace/a").await;
    let t0 = berth_proto::units::now_ms();
    let w = backup_since(&c, "s3ws", t0).await;
    assert_eq!(w["backup"]["failures"], 0, "{w}");

    // The store answers 503 for 8 s: the backups due meanwhile wait and
    // retry (restic's own backoff), then are confirmed.
    c.exec_ok("s3ws", "echo two > /workspace/b").await;
    proxy.fail();
    let failing_from = berth_proto::units::now_ms();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        proxy.refused() > 0,
        "nothing asked the store while it failed"
    );
    proxy.heal();
    let w = backup_since(&c, "s3ws", failing_from).await;
    let (_, b) = c.get("/v1/workspaces/s3ws/backups").await;
    assert!(b["backups"].as_array().unwrap().len() >= 2, "{b}");
    assert!(
        w["backup"].get("error").is_none() || w["backup"]["failures"] == 0,
        "{w}"
    );

    // The store is slow (every 16 KiB held back 50 ms, both ways): the
    // backup takes longer and is confirmed.
    c.exec_ok("s3ws", "head -c 262144 /dev/urandom > /workspace/slow")
        .await;
    proxy.slow(50);
    let slow_from = berth_proto::units::now_ms();
    let w = backup_since(&c, "s3ws", slow_from).await;
    proxy.slow(0);
    assert!(proxy.slowed() > 0, "nothing went through the slow store");
    assert_eq!(w["backup"]["failures"], 0, "{w}");

    // Its volume full (writes refused for want of space): still backed up.
    let full = stdout(
        &c,
        "s3ws",
        "dd if=/dev/zero of=/workspace/fill bs=1M 2>&1 >/dev/null | grep -o 'No space left'; df -k /workspace | tail -1",
    )
    .await;
    assert!(full.contains("No space left"), "{full}");
    // A periodic backup may be on its way: this one follows it.
    let (s, b) = berth_tests::backups::back_up_now(&c, "s3ws").await;
    assert_eq!(s, 200, "a full workspace is backed up: {b}");
    c.exec_ok("s3ws", "rm /workspace/fill").await;

    // Stopped, its stop backed up to S3; its node is lost: a start moves it
    // to n1, which reads the backup from the bucket.
    let asked = berth_proto::units::now_ms();
    let (s, _) = c.post("/v1/workspaces/s3ws/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("s3ws", "stopped", T).await;
    let w = backup_since(&c, "s3ws", asked).await;
    assert_eq!(w["backup"]["last"]["consistency"], "stopped", "{w}");
    c.nodes[0].kill_agent();
    c.wait_state("s3ws", "unknown", T).await;
    let (code, out, err) = c.berth(&c.admin_token, &["start", "s3ws"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("moving: node n0 is lost"), "{err}");
    let w = c.wait_state("s3ws", "running", T).await;
    assert_eq!(w["node"], "n1", "{w}");
    assert_eq!(
        stdout(&c, "s3ws", "cat /workspace/a /workspace/b").await,
        "one\ntwo\n"
    );
    // n0 back: its stale copy goes.
    let id = w["id"].as_str().unwrap().to_string();
    c.nodes[0].start_agent(None);
    copy_gone(&c, 0, &id).await;
    c.finish().await;
    drop(proxy);
    drop(moto);
}
