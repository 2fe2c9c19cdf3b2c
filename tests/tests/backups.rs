//! Backups (docs/backups.md) on the real components: containerd, restic
//! and a node whose volumes sit on a file system that clones (XFS), so a
//! running workspace is backed up from one instant of its volume.
//!
//! What is tried: a workload writes two files in lockstep while it is
//! backed up (the backup holds them equal: one instant, not files read as
//! they changed); a restore at a point in time brings back /workspace and
//! the home directory as they were, and only those; a restore of a running
//! workspace, of a backup that is not there, of one whose repository is
//! gone is refused and changes nothing; the periodic and the stop backups
//! happen by themselves; a store that fails is retried and shown, then
//! recovers; and stock `restic` restores what Berth wrote, with the key
//! the coordinator holds.

use berth_tests::backups::{backup_key, restic, stdout, stock_restore};
use berth_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

async fn backups(c: &Cluster, ws: &str) -> Value {
    let (s, b) = c.get(&format!("/v1/workspaces/{ws}/backups")).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Waits until `ws` has a backup taken at or after `since_ms` (Unix ms).
async fn backup_after(c: &Cluster, ws: &str, since_ms: i64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let b = backups(c, ws).await;
        if let Some(x) = b["backups"].as_array().and_then(|l| {
            l.iter()
                .find(|x| x["taken_at_ms"].as_i64() >= Some(since_ms))
        }) {
            return x.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no backup of {ws} since {since_ms}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether the rounds' files, read in order, are of one instant: i for a
/// prefix, then i-1 (all equal included), with at most one empty file
/// between them (the one being written at that instant: truncated, not
/// yet written).
fn one_instant(values: &str) -> bool {
    let lines: Vec<&str> = values.lines().map(str::trim).collect();
    let v: Vec<u64> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    let empty = lines.iter().filter(|l| l.is_empty()).count();
    lines.len() == 50
        && empty <= 1
        && v.len() + empty == 50
        && v.windows(2).all(|w| w[1] <= w[0])
        && v.first()
            .zip(v.last())
            .is_some_and(|(a, b)| a - b <= 1 && *a > 0)
}

fn now_ms() -> i64 {
    berth_proto::units::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_workspace_is_backed_up_at_one_instant_and_restored_at_a_point_in_time() {
    // An interval long enough that only the backups asked for happen
    // while it runs.
    let c = berth_tests::backups::cluster(600.0).await;
    let (s, w) = c.create("bk").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("bk", "running", T).await;
    c.exec_ok(
        "bk",
        "echo one > /workspace/a && mkdir -p /workspace/dir && echo kept > /workspace/dir/f && \
         echo 'ls -la' > $HOME/.sh_history && echo rootfs > /tmp/not-persisted",
    )
    .await;
    // The workload: rounds writing the round's number into f10..f59, in
    // that order, flat out. At any one instant the files read, in order,
    // some i then i-1 (never a later file ahead of an earlier one).
    c.exec_ok(
        "bk",
        "mkdir /workspace/lock && setsid sh -c 'echo $$ > /tmp/w.pid; i=0; while :; do i=$((i+1)); \
         for n in $(seq 10 59); do echo $i > /workspace/lock/f$n; done; done' </dev/null >/dev/null 2>&1 &",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Control for the probe: files read one by one while the rounds go
    // on (as a backup without a snapshot reads them) are caught.
    let live = stdout(
        &c,
        "bk",
        "for n in $(seq 10 59); do echo $(cat /workspace/lock/f$n); sleep 0.02; done",
    )
    .await;
    assert!(!one_instant(&live), "a live read passes the probe: {live}");

    let (s, first) = c.post("/v1/workspaces/bk/backups", json!({})).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["consistency"], "snapshot", "{first}");
    let paused = first["pause_ms"].as_u64().unwrap();
    assert!(paused < 1000, "writes waited {paused} ms: {first}");
    let paths: Vec<&str> = first["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(paths, ["workspace", "rootfs/upper/home"], "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Changed after the first backup: a/, dir/ gone, a new file.
    c.exec_ok(
        "bk",
        "kill $(cat /tmp/w.pid) && echo two > /workspace/a && rm -r /workspace/dir && \
         echo new > /workspace/new && echo 'rm -rf /' >> $HOME/.sh_history",
    )
    .await;
    let (s, second) = c.post("/v1/workspaces/bk/backups", json!({})).await;
    assert_eq!(s, 200, "{second}");

    // A restore is for a stopped workspace only.
    let (s, e) = c
        .post("/v1/workspaces/bk/restore", json!({"id": first_id}))
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("not_stopped")), "{e}");

    // The stop is followed by a backup of its own.
    let stopped_at = now_ms();
    let (s, e) = c.post("/v1/workspaces/bk/stop", json!({})).await;
    assert_eq!(s, 202, "{e}");
    c.wait_state("bk", "stopped", T).await;
    let last = backup_after(&c, "bk", stopped_at, T).await;
    assert_eq!(last["consistency"], "stopped", "{last}");

    // Nothing of a backup that is not there, or of a time before any.
    let (s, e) = c
        .post("/v1/workspaces/bk/restore", json!({"id": "00000000"}))
        .await;
    assert_eq!(s, 404, "{e}");
    let (s, e) = c
        .post(
            "/v1/workspaces/bk/restore",
            json!({"at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 404, "{e}");
    let (s, e) = c
        .post("/v1/workspaces/bk/restore", json!({"at": "yesterday"}))
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_time")), "{e}");

    // Point in time: the first backup, by the time between the two.
    let at = berth_proto::units::rfc3339(between.div_euclid(1000) + 1);
    let (code, out, err) = c
        .berth(&c.admin_token, &["restore", "bk", "--at", &at])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&first_id), "{out}");
    let (s, e) = c.post("/v1/workspaces/bk/start", json!({})).await;
    assert_eq!(s, 202, "{e}");
    c.wait_state("bk", "running", T).await;
    let got = stdout(
        &c,
        "bk",
        "cat /workspace/a /workspace/dir/f $HOME/.sh_history; ls /workspace/new 2>&1; \
         stat -c '%u %U' /workspace/a",
    )
    .await;
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(&lines[..3], ["one", "kept", "ls -la"], "{got}");
    assert!(
        lines[3].contains("No such file"),
        "the newer file is not in it: {got}"
    );
    assert_eq!(lines[4], "1000 dev", "owners are the workspace's: {got}");
    // One instant: the rounds' files as they were together.
    let snap = stdout(
        &c,
        "bk",
        "for n in $(seq 10 59); do echo $(cat /workspace/lock/f$n); done",
    )
    .await;
    assert!(
        one_instant(&snap),
        "the backup is not of one instant: {snap}"
    );

    // Positive control for the restore: the newest backup (after the stop)
    // is what the workspace had last.
    let stopped_again = now_ms();
    let (s, e) = c.post("/v1/workspaces/bk/stop", json!({})).await;
    assert_eq!(s, 202, "{e}");
    c.wait_state("bk", "stopped", T).await;
    backup_after(&c, "bk", stopped_again, T).await;
    let (s, r) = c
        .post("/v1/workspaces/bk/restore", json!({"id": second["id"]}))
        .await;
    assert_eq!(s, 200, "{r}");
    c.post("/v1/workspaces/bk/start", json!({})).await;
    c.wait_state("bk", "running", T).await;
    let got = stdout(
        &c,
        "bk",
        "cat /workspace/a /workspace/new; ls /workspace/dir 2>&1; true",
    )
    .await;
    assert!(
        got.starts_with("two\nnew\n") && got.contains("No such file"),
        "{got}"
    );

    // Stock restic restores Berth's backup with the key the coordinator holds.
    let id = c.get("/v1/workspaces/bk").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = backup_key(&c, &id).await;
    let repository = c.dir.join("backups").join(&id);
    let target = c.dir.join("stock-restore");
    stock_restore(&repository, &key, &first_id, &target);
    assert_eq!(
        std::fs::read_to_string(target.join("workspace/a")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("rootfs/upper/home/dev/.sh_history")).unwrap(),
        "ls -la\n"
    );
    // Only /workspace and the home directory: not the root filesystem's /tmp.
    assert!(target.join("rootfs/upper/home").is_dir());
    assert!(!target.join("rootfs/upper/tmp").exists());
    // Control: without the key, restic reads nothing (it is encrypted).
    let out = restic(&repository, b"not-the-key-not-the-key", &["snapshots"]);
    assert!(!out.status.success());

    // The repository gone: the restore fails loudly and leaves the data.
    let stopping = now_ms();
    c.post("/v1/workspaces/bk/stop", json!({})).await;
    c.wait_state("bk", "stopped", T).await;
    backup_after(&c, "bk", stopping, T).await;
    let moved = c.dir.join("backups-moved");
    std::fs::rename(&repository, &moved).unwrap();
    let (s, e) = c
        .post("/v1/workspaces/bk/restore", json!({"id": first_id}))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (502, Some("backup_missing")),
        "{e}"
    );
    c.post("/v1/workspaces/bk/start", json!({})).await;
    c.wait_state("bk", "running", T).await;
    let got = stdout(&c, "bk", "cat /workspace/a").await;
    assert_eq!(got, "two\n");
    std::fs::rename(&moved, &repository).unwrap();
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_happen_every_interval_and_a_failing_store_is_retried_and_shown() {
    // Every 3 s.
    let c = berth_tests::backups::cluster(0.05).await;
    let (s, w) = c.create("tick").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("tick", "running", T).await;
    let id = c.get("/v1/workspaces/tick").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.exec_ok("tick", "echo x > /workspace/x").await;
    let t0 = now_ms();
    let first = backup_after(&c, "tick", t0, T).await;
    assert_eq!(first["consistency"], "snapshot", "{first}");
    let t1 = first["taken_at_ms"].as_i64().unwrap() + 1;
    let second = backup_after(&c, "tick", t1, T).await;
    let gap = second["taken_at_ms"].as_i64().unwrap() - first["taken_at_ms"].as_i64().unwrap();
    assert!(gap >= 2500, "backups {gap} ms apart, the interval is 3 s");
    // Nothing changed between them: the second adds (almost) nothing.
    assert!(
        second["bytes_added"].as_u64().unwrap() < 64 << 10,
        "{second}"
    );

    // The store fails: the repository's directory is replaced by a file.
    let repo = c.dir.join("backups").join(&id);
    let aside = c.dir.join("backups").join("aside");
    std::fs::rename(&repo, &aside).unwrap();
    std::fs::write(&repo, b"not a repository").unwrap();
    let deadline = Instant::now() + T;
    let failing = loop {
        let (_, w) = c.get("/v1/workspaces/tick").await;
        if w["backup"]["failures"].as_u64() >= Some(2) {
            break w;
        }
        assert!(Instant::now() < deadline, "no failure shown: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let err = failing["backup"]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("restic"),
        "the failure says what failed: {failing}"
    );
    let (code, out, _) = c.berth(&c.admin_token, &["get", "tick"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("FAILING"), "{out}");
    // It recovers by itself once the store is back.
    std::fs::remove_file(&repo).unwrap();
    std::fs::rename(&aside, &repo).unwrap();
    let back = now_ms();
    backup_after(&c, "tick", back, T).await;
    let (_, w) = c.get("/v1/workspaces/tick").await;
    assert_eq!(w["backup"]["failures"], 0, "{w}");
    assert!(w["backup"].get("error").is_none(), "{w}");
    let (code, out, _) = c.berth(&c.admin_token, &["backups", "tick"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("snapshot"), "{out}");

    // A delete, sent twice, while the store fails: the workspace stops and
    // waits, its data on its node, until the backup of its stop is
    // confirmed; then it goes, and that backup holds its last write.
    let key = backup_key(&c, &id).await;
    c.exec_ok("tick", "echo kept > /workspace/last").await;
    std::fs::rename(&repo, &aside).unwrap();
    std::fs::write(&repo, b"not a repository").unwrap();
    for _ in 0..2 {
        let (s, w) = c.delete("/v1/workspaces/tick").await;
        assert_eq!(s, 202, "{w}");
    }
    let deadline = Instant::now() + T;
    let waiting = loop {
        let (_, w) = c.get("/v1/workspaces/tick").await;
        if w["state"] == "stopped" && w["backup"]["failures"].as_u64() >= Some(1) {
            break w;
        }
        assert!(Instant::now() < deadline, "not stopped and failing: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        waiting["backup"]["delete_requested_at_ms"].is_i64(),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, w) = c.get("/v1/workspaces/tick").await;
    assert_eq!(w["state"], "stopped", "deleted before its backup: {w}");
    let record = c.nodes[0]
        .state_dir
        .join("workspaces")
        .join(format!("{id}.json"));
    assert!(record.exists(), "its data left the node before its backup");
    let (code, out, _) = c.berth(&c.admin_token, &["get", "tick"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Deleting:") && out.contains("FAILING"),
        "{out}"
    );
    // The store is back: the backup, then the delete.
    std::fs::remove_file(&repo).unwrap();
    std::fs::rename(&aside, &repo).unwrap();
    berth_tests::backups::copy_gone(&c, 0, &id).await;
    // The node's answer to the delete reaches the store just after its
    // record goes.
    let gone = berth_tests::eventually(Duration::from_secs(10), || async {
        (c.get("/v1/workspaces/tick").await.0 == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "deleted once its backup was made");
    let (s, _) = c.delete("/v1/workspaces/tick").await;
    assert_eq!(s, 404, "a delete of what is gone changes nothing");
    let target = c.dir.join("final-restore");
    stock_restore(&repo, &key, "latest", &target);
    assert_eq!(
        std::fs::read_to_string(target.join("workspace/last")).unwrap(),
        "kept\n"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_may_leave_out_what_its_gitignore_ignores_and_sees_the_bytes_saved() {
    let c = berth_tests::backups::cluster(5.0).await;
    let (s, w) = c.create("ig").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("ig", "running", T).await;
    let id = c.get("/v1/workspaces/ig").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.exec_ok(
        "ig",
        "cd /workspace && printf 'node_modules/\\n*.log\\n' > .gitignore && mkdir -p node_modules/dep src && \
         head -c 1048576 /dev/urandom > node_modules/dep/blob && echo code > src/a && echo noise > x.log",
    )
    .await;
    // Off by default: everything is backed up.
    let (s, full) = c.post("/v1/workspaces/ig/backups", json!({})).await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["bytes_excluded"], 0, "{full}");
    // On: what the .gitignore ignores is left out, and counted.
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["backups", "ig", "--exclude-ignored", "on"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Leaves out"), "{out}");
    let (s, lean) = c.post("/v1/workspaces/ig/backups", json!({})).await;
    assert_eq!(s, 200, "{lean}");
    let excluded = lean["bytes_excluded"].as_u64().unwrap();
    assert_eq!(excluded, 1_048_576 + 6, "{lean}");
    assert!(
        lean["bytes_total"].as_u64().unwrap() < full["bytes_total"].as_u64().unwrap() - 1_000_000,
        "{full}\n{lean}"
    );
    // Stock restic shows what each holds.
    let key = backup_key(&c, &id).await;
    let repo = c.dir.join("backups").join(&id);
    let restore = |snapshot: &str, to: &str| {
        let target = c.dir.join(to);
        stock_restore(&repo, &key, snapshot, &target);
        target.join("workspace")
    };
    let all = restore(full["id"].as_str().unwrap(), "full");
    assert!(all.join("node_modules/dep/blob").exists());
    let kept = restore(lean["id"].as_str().unwrap(), "lean");
    assert_eq!(
        std::fs::read_to_string(kept.join("src/a")).unwrap(),
        "code\n"
    );
    assert!(kept.join(".gitignore").exists());
    assert!(
        !kept.join("node_modules").exists(),
        "ignored node_modules backed up"
    );
    assert!(!kept.join("x.log").exists(), "ignored *.log backed up");
    let (code, out, _) = c.berth(&c.admin_token, &["backups", "ig"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("IGNORED") && out.contains("1.0M"), "{out}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_backups_are_pruned_to_the_policy_and_a_deleted_workspace_s_are_dropped_later() {
    // Every 3 s; pruned to the last 2 every 6 s; dropped ~17 s after a delete.
    let c = berth_tests::backups::cluster_to(
        Default::default(),
        None,
        0.05,
        "keep_last = 2\nkeep_daily = 0\nkeep_weekly = 0\nprune_interval_minutes = 0.1\n\
         keep_deleted_days = 0.0002\n",
    )
    .await;
    let (s, w) = c.create("ret").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("ret", "running", T).await;
    let id = c.get("/v1/workspaces/ret").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = c.dir.join("backups").join(&id);
    let snapshots = || std::fs::read_dir(repo.join("snapshots")).map_or(0, |d| d.count());
    // A new file before each backup, so that each one differs.
    let t0 = now_ms();
    let first = backup_after(&c, "ret", t0, T).await;
    let deadline = Instant::now() + T;
    let mut i = 0;
    loop {
        i += 1;
        c.exec_ok("ret", &format!("echo {i} > /workspace/f{i}"))
            .await;
        let (_, b) = c.get("/v1/workspaces/ret/backups").await;
        let newest = b["backups"][0]["taken_at_ms"].as_i64().unwrap_or(0);
        let span = newest - first["taken_at_ms"].as_i64().unwrap();
        // Some 6 backups later, what is kept is the policy's.
        if span >= 15_000 {
            let count = b["backups"].as_array().unwrap().len();
            assert!(count <= 3, "{count} backups kept, the policy keeps 2: {b}");
            assert!(
                snapshots() <= 3,
                "{} snapshots in the repository",
                snapshots()
            );
            break;
        }
        assert!(Instant::now() < deadline, "backups did not go on: {b}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The newest still restores, with the newest file.
    let key = backup_key(&c, &id).await;
    let target = c.dir.join("pruned-restore");
    stock_restore(&repo, &key, "latest", &target);
    assert!(target.join("workspace/f1").exists());

    // Deleted (after its final backup): its backups stay a while, then go.
    let (s, w) = c.delete("/v1/workspaces/ret").await;
    assert_eq!(s, 202, "{w}");
    berth_tests::backups::copy_gone(&c, 0, &id).await;
    assert!(snapshots() > 0, "dropped at once");
    let deadline = Instant::now() + Duration::from_secs(90);
    while repo.exists() {
        assert!(
            Instant::now() < deadline,
            "the deleted workspace's backups are never dropped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.finish().await;
}
