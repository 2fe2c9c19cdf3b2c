//! A workspace moves to another node from its backup (docs/backups.md,
//! "Moving to another node") on the real components: two nodes, restic
//! repositories on a path both nodes see (`shared_path`), containerd.
//!
//! What is tried: a stopped workspace whose node is killed starts on the
//! other node with its files, owners and home directory, the CLI saying
//! what it restores; a workspace that ran when its node died is not moved
//! by a start (its node may hold newer data), as the control, but is by
//! `berth restore`, without what was written after its backup; the dead
//! node's copies are deleted when it comes back; a stopped workspace on a
//! drained node moves back and the drained node's copy goes at once, and
//! the running one there is stopped, backed up and started elsewhere; a
//! move whose backup is gone fails loudly (`backup_missing`), never
//! starting empty; and a start that finds its node full moves.

use berth_tests::backups::{connected, copy_gone, create_on, stdout, workspace};
use berth_tests::cluster::Cluster;
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// Stops `ws` and waits for the backup of it stopped.
async fn stop_and_back_up(c: &Cluster, ws: &str) {
    let asked = berth_proto::units::now_ms();
    let (s, w) = c
        .post(&format!("/v1/workspaces/{ws}/stop"), json!({}))
        .await;
    assert_eq!(s, 202, "{w}");
    c.wait_state(ws, "stopped", T).await;
    let deadline = Instant::now() + T;
    loop {
        let w = workspace(c, ws).await;
        let last = &w["backup"]["last"];
        if last["consistency"] == "stopped" && last["taken_at_ms"].as_i64() >= Some(asked) {
            return;
        }
        assert!(Instant::now() < deadline, "no backup after the stop: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_workspaces_move_from_a_lost_or_drained_node_with_their_data() {
    let mut c = berth_tests::backups::shared_pair().await;
    // Both on n0.
    create_on(&c, "mv", "n0").await;
    create_on(&c, "busy", "n0").await;
    let first = workspace(&c, "mv").await["node"].clone();
    assert_eq!(first, "n0");
    let id = workspace(&c, "mv").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = format!("{:x}", rand_token());
    c.exec_ok(
        "mv",
        &format!(
            "echo {token} > /workspace/proof && mkdir -p /workspace/deep/er && \
             echo nested > /workspace/deep/er/f && echo 'export MOVED=1' >> ~/.profile"
        ),
    )
    .await;
    let owners_before = stdout(&c, "mv", "stat -c '%u:%g' /workspace/proof").await;
    stop_and_back_up(&c, "mv").await;
    // `busy` runs on: backed up now, then written again.
    c.exec_ok("busy", "echo backed-up > /workspace/before")
        .await;
    let (s, b) = c.post("/v1/workspaces/busy/backups", json!({})).await;
    assert_eq!(s, 200, "{b}");
    c.exec_ok("busy", "echo only-on-n0 > /workspace/after")
        .await;

    // n0 dies. After the grace, both of its workspaces are unknown.
    c.nodes[0].kill_agent();
    c.wait_state("mv", "unknown", T).await;
    c.wait_state("busy", "unknown", T).await;

    // Control: `busy` ran when n0 died; n0 may hold more than its backups.
    let (s, w) = c.post("/v1/workspaces/busy/start", json!({})).await;
    assert_eq!(s, 202, "{w}");
    assert_eq!(w["state"], "unknown", "not moved: {w}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = workspace(&c, "busy").await;
    assert_eq!(
        (&w["state"], &w["node"]),
        (&json!("unknown"), &json!("n0")),
        "{w}"
    );

    // `mv` was stopped and its stop backed up: `berth start` moves it.
    let (code, out, err) = c.berth(&c.admin_token, &["start", "mv"]).await;
    assert_eq!(code, 0, "{out}\n{err}\n{}", c.coordinator_log());
    assert!(err.contains("moving: node n0 is lost"), "{err}");
    assert!(
        err.contains("restoring") && err.contains("from backup"),
        "{err}"
    );
    let w = c.wait_state("mv", "running", T).await;
    assert_eq!(w["node"], "n1", "{w}");
    assert_eq!(stdout(&c, "mv", "cat /workspace/proof").await.trim(), token);
    assert_eq!(
        stdout(&c, "mv", "cat /workspace/deep/er/f").await.trim(),
        "nested"
    );
    assert_eq!(
        stdout(&c, "mv", "stat -c '%u:%g' /workspace/proof").await,
        owners_before,
        "the files belong to the workspace's user on the new node too"
    );
    assert!(stdout(&c, "mv", "cat ~/.profile").await.contains("MOVED=1"));
    // It writes there as its own user.
    c.exec_ok("mv", "echo more >> /workspace/proof").await;

    // `busy` is moved only when its owner says so, giving up what only n0
    // holds: `berth restore` of a workspace whose node is lost.
    let (code, out, err) = c.berth(&c.admin_token, &["restore", "busy"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("node n0 is lost") && out.contains("not in it"),
        "{out}"
    );
    let w = c.wait_state("busy", "running", T).await;
    assert_eq!(w["node"], "n1", "{w}");
    assert_eq!(
        stdout(&c, "busy", "cat /workspace/before").await.trim(),
        "backed-up"
    );
    let after = stdout(&c, "busy", "cat /workspace/after 2>&1 || true").await;
    assert!(
        after.contains("No such file"),
        "what was written after the backup is not restored: {after}"
    );
    let busy_id = w["id"].as_str().unwrap().to_string();

    // n0 comes back: its copies of `mv` and `busy` (which still ran there)
    // are stale and deleted.
    let n0_record = c.nodes[0]
        .state_dir
        .join("workspaces")
        .join(format!("{id}.json"));
    assert!(
        n0_record.exists(),
        "n0 still holds its copy while it is down"
    );
    assert!(
        c.nodes[0].running_tasks().contains(&busy_id),
        "busy ran on on n0"
    );
    c.nodes[0].start_agent(None);
    copy_gone(&c, 0, &id).await;
    copy_gone(&c, 0, &busy_id).await;
    assert!(!c.nodes[0].running_tasks().contains(&busy_id));
    assert_eq!(c.wait_state("busy", "running", T).await["node"], "n1");

    // Drained: `mv`, stopped and backed up on n1, moves back to n0 on its
    // next start; n1 is connected, so its copy goes as soon as it moved.
    stop_and_back_up(&c, "mv").await;
    let (s, n) = c.post("/v1/nodes/n1/drain", json!({})).await;
    assert_eq!(s, 200, "{n}");
    let (s, w) = c.post("/v1/workspaces/mv/start", json!({})).await;
    assert_eq!(s, 202, "{w}");
    let w = c.wait_state("mv", "running", T).await;
    assert_eq!(w["node"], "n0", "{w}");
    let got = stdout(&c, "mv", "cat /workspace/proof").await;
    assert_eq!(got, format!("{token}\nmore\n"));
    copy_gone(&c, 1, &id).await;
    // `busy` ran on n1: the drain stops it, backs it up and starts it on n0.
    let deadline = Instant::now() + T;
    loop {
        let w = workspace(&c, "busy").await;
        if w["state"] == "running" && w["node"] == "n0" {
            break;
        }
        assert!(Instant::now() < deadline, "busy not moved off n1: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        stdout(&c, "busy", "cat /workspace/before").await.trim(),
        "backed-up"
    );
    copy_gone(&c, 1, &busy_id).await;
    let (s, _) = c.post("/v1/nodes/n1/uncordon", json!({})).await;
    assert_eq!(s, 200);

    // A move whose backup is gone fails with backup_missing: never empty.
    stop_and_back_up(&c, "mv").await;
    let repo = c.dir.join("backups").join(&id);
    std::fs::rename(&repo, c.dir.join("backups").join("gone")).unwrap();
    c.nodes[0].kill_agent();
    c.wait_state("mv", "unknown", T).await;
    let (s, w) = c.post("/v1/workspaces/mv/start", json!({})).await;
    assert_eq!(s, 202, "{w}");
    let w = c.wait_state("mv", "failed", T).await;
    let reason = w["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("backup_missing"), "{w}");
    // Its old node back: the failed move's workspace is deleted with the
    // copy n0 still holds.
    c.nodes[0].start_agent(None);
    connected(&c, "n0").await;
    c.finish().await;
}

fn rand_token() -> u64 {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_finds_its_node_full_moves_once_backed_up() {
    let c = berth_tests::backups::shared_pair().await;
    create_on(&c, "roomy", "n0").await;
    c.exec_ok("roomy", "echo kept > /workspace/f").await;
    stop_and_back_up(&c, "roomy").await;
    // n0 fills up meanwhile: the rest of its CPU goes to another workspace.
    let (s, _) = c.post("/v1/nodes/n1/cordon", json!({})).await;
    assert_eq!(s, 200);
    let (s, w) = c
        .post(
            "/v1/workspaces",
            json!({"name": "hog", "image": c.tiny(), "cpu_millis": 3900, "memory_bytes": 64u64 << 20,
                   "disk_bytes": 32u64 << 20, "pids": 64}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    assert_eq!(c.wait_state("hog", "running", T).await["node"], "n0");
    let (s, _) = c.post("/v1/nodes/n1/uncordon", json!({})).await;
    assert_eq!(s, 200);
    // Its start finds no room on n0; its stop's backup holds all it had, so
    // it starts on n1 from it.
    let (code, out, err) = c.berth(&c.admin_token, &["start", "roomy"]).await;
    assert_eq!(code, 0, "{out}\n{err}\n{}", c.coordinator_log());
    assert!(err.contains("node n0 is full"), "{err}");
    let w = workspace(&c, "roomy").await;
    assert_eq!(
        (&w["state"], &w["node"]),
        (&json!("running"), &json!("n1")),
        "{w}"
    );
    assert_eq!(stdout(&c, "roomy", "cat /workspace/f").await.trim(), "kept");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_a_deadline_lets_workspaces_run_until_then_and_the_node_ends_drained() {
    let c = berth_tests::backups::shared_pair().await;
    create_on(&c, "late", "n0").await;
    c.exec_ok("late", "echo still-here > /workspace/f").await;
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["nodes", "drain", "n0", "--deadline", "6s"],
        )
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let asked = berth_proto::units::now_ms();
    // Until the deadline it runs on, warned; the node drains, not drained.
    let (_, n) = c.get("/v1/nodes/n0").await;
    assert_eq!(
        (&n["draining"], &n["drained"]),
        (&json!(true), &json!(false)),
        "{n}"
    );
    let deadline = n["drain_deadline_ms"].as_i64().expect("a deadline");
    assert!((asked + 4_000..=asked + 7_000).contains(&deadline), "{n}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = workspace(&c, "late").await;
    assert_eq!(
        (&w["state"], &w["node"]),
        (&json!("running"), &json!("n0")),
        "{w}"
    );
    // Then it stops, is backed up and moves; n0 ends drained.
    let deadline = Instant::now() + T;
    loop {
        let w = workspace(&c, "late").await;
        if w["state"] == "running" && w["node"] == "n1" {
            break;
        }
        assert!(Instant::now() < deadline, "not moved: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        berth_proto::units::now_ms() >= asked + 5_000,
        "moved before the deadline"
    );
    assert_eq!(stdout(&c, "late", "cat /workspace/f").await, "still-here\n");
    let (_, n) = c.get("/v1/nodes/n0").await;
    assert_eq!(n["drained"], true, "{n}");
    let (code, out, _) = c.berth(&c.admin_token, &["nodes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("drained"), "{out}");
    // A deadline past a week is refused.
    let (s, e) = c
        .post(
            "/v1/nodes/n1/drain",
            json!({ "deadline_seconds": 8 * 86_400 }),
        )
        .await;
    assert_eq!((s, &e["code"]), (422, &json!("invalid_deadline")), "{e}");
    c.finish().await;
}
