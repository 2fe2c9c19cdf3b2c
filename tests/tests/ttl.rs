//! A stopped workspace's TTL (docs/idle.md) on the real components: past
//! it, the workspace is deleted, but only once a confirmed backup holds
//! what it had (TEST-PLAN 10: local data is never deleted before its
//! backup is confirmed); its backups are kept.
//!
//! What is tried: two workspaces stop under a 4 s TTL. One is backed up at
//! its stop and deleted after the TTL, its repository left with its
//! snapshot. The other's store fails (its repository's path is taken by a
//! file): it stays, stopped, past its TTL, with the failure shown, and is
//! deleted only once the store is back and its backup confirmed.

use berth_tests::backups::workspace;
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_workspace_is_deleted_after_its_ttl_only_once_backed_up() {
    let c = berth_tests::backups::cluster_to(
        Default::default(),
        None,
        5.0,
        "[[tiers]]\nname = \"small\"\ncpu_millis = 1000\nmemory = \"256MiB\"\ndisk = \"256MiB\"\n\
         stopped_ttl_seconds = 4\n",
    )
    .await;
    let mut ids = Vec::new();
    for ws in ["gone", "held"] {
        let (s, w) = c.create(ws).await;
        assert_eq!(s, 201, "{w}");
        c.wait_state(ws, "running", T).await;
        c.exec_ok(ws, &format!("echo {ws} > /workspace/f")).await;
        ids.push(workspace(&c, ws).await["id"].as_str().unwrap().to_string());
    }
    // `held`'s store refuses: a file where its repository goes.
    let repos = c.dir.join("backups");
    std::fs::create_dir_all(&repos).unwrap();
    let blocked = repos.join(&ids[1]);
    std::fs::write(&blocked, b"not a repository").unwrap();
    for ws in ["gone", "held"] {
        let (s, w) = c
            .post(&format!("/v1/workspaces/{ws}/stop"), json!({}))
            .await;
        assert_eq!(s, 202, "{w}");
        c.wait_state(ws, "stopped", T).await;
    }
    let stopped = Instant::now();

    // `gone`: backed up at its stop, deleted after its TTL; its backup stays.
    c.wait_state("gone", "deleted", T).await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "deleted before its TTL"
    );
    // (Two when a status report moved its stop time past the first
    // backup's start: the backup after the stop is then taken again.)
    let snapshots = repos.join(&ids[0]).join("snapshots");
    let kept = std::fs::read_dir(&snapshots)
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        (1..=2).contains(&kept),
        "the deleted workspace's backup is kept in {}: {kept}",
        snapshots.display()
    );

    // `held`: well past its TTL, still there, its failure shown.
    while stopped.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let w = workspace(&c, "held").await;
    assert_eq!(w["state"], "stopped", "{w}");
    assert!(w["backup"]["failures"].as_u64() >= Some(1), "{w}");
    assert!(w["backup"].get("last").is_none(), "{w}");
    // The store is back: its backup is confirmed, then it goes.
    std::fs::remove_file(&blocked).unwrap();
    c.wait_state("held", "deleted", T).await;
    assert!(
        repos
            .join(&ids[1])
            .join("snapshots")
            .read_dir()
            .unwrap()
            .count()
            >= 1
    );
    c.finish().await;
}
