//! A cluster for backups: nodes whose volumes are on XFS (snapshots by
//! reflink, `crate::xfs`), its coordinator backing up every
//! `interval_minutes` to the cluster's own directory.

use crate::cluster::{Cluster, ClusterOptions};
use std::time::{Duration, Instant};

/// One node.
pub async fn cluster(interval_minutes: f64) -> Cluster {
    cluster_of(ClusterOptions::default(), interval_minutes, "").await
}

/// `opts`' nodes, with `extra` lines in the coordinator's `[backups]`
/// (e.g. `shared_path = true`: every node sees the cluster's directory).
pub async fn cluster_of(opts: ClusterOptions, interval_minutes: f64, extra: &str) -> Cluster {
    cluster_to(opts, None, interval_minutes, extra).await
}

/// Like `cluster_of`, backing up to `repository` (e.g. `s3:http://...`)
/// instead of the cluster's directory when given.
pub async fn cluster_to(
    opts: ClusterOptions,
    repository: Option<&str>,
    interval_minutes: f64,
    extra: &str,
) -> Cluster {
    let mut c = Cluster::start(ClusterOptions {
        reflink: true,
        ..opts
    })
    .await;
    let repository = repository.map_or_else(
        || c.dir.join("backups").display().to_string(),
        str::to_string,
    );
    back_up_to(&mut c, &repository, interval_minutes, extra);
    c
}

/// Restarts `c`'s coordinator backing up to `repository` every
/// `interval_minutes`, with `extra` lines in its `[backups]`.
pub fn back_up_to(c: &mut Cluster, repository: &str, interval_minutes: f64, extra: &str) {
    let config = c.dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!("[backups]\ninterval_minutes = {interval_minutes}\n{extra}"),
    )
    .unwrap();
    c.kill_coordinator();
    // The harness's own argument, which this replaces: capacity as offered.
    c.set_coordinator_args(vec![
        "--cpu-overcommit".into(),
        "1".into(),
        "--config".into(),
        config.display().to_string(),
        "--backup-repository".into(),
        repository.into(),
    ]);
    c.start_coordinator();
}

/// `POST /v1/workspaces/{ws}/backups` as the admin, asked again while one
/// of the workspace's own (a periodic one) is on its way (`backup_running`).
pub async fn back_up_now(c: &Cluster, ws: &str) -> (u16, serde_json::Value) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, b) = c
            .post(
                &format!("/v1/workspaces/{ws}/backups"),
                serde_json::json!({}),
            )
            .await;
        if b["code"] != "backup_running" || Instant::now() > until {
            return (s, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `script` prints in workspace `ws` (it must exit 0).
pub async fn stdout(c: &Cluster, ws: &str, script: &str) -> String {
    c.exec_ok(ws, script).await["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Workspace `ws` as the API shows it.
pub async fn workspace(c: &Cluster, ws: &str) -> serde_json::Value {
    let (s, w) = c.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(s, 200, "{w}");
    w
}

/// Two nodes, backing up every 5 minutes (and at every stop) to the
/// cluster's directory, which both see (`shared_path`): workspaces can
/// move between them.
pub async fn shared_pair() -> Cluster {
    let opts = ClusterOptions {
        agents: 2,
        ..Default::default()
    };
    cluster_of(opts, 5.0, "shared_path = true\n").await
}

/// Creates `ws` (running) on a pair's node `on` ("n0" or "n1"): the other
/// is cordoned meanwhile.
pub async fn create_on(c: &Cluster, ws: &str, on: &str) {
    let other = if on == "n0" { "n1" } else { "n0" };
    let (s, _) = c
        .post(&format!("/v1/nodes/{other}/cordon"), serde_json::json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, w) = c.create(ws).await;
    assert_eq!(s, 201, "{w}");
    let w = c
        .wait_state(ws, "running", std::time::Duration::from_secs(90))
        .await;
    assert_eq!(w["node"], on, "{w}");
    let (s, _) = c
        .post(
            &format!("/v1/nodes/{other}/uncordon"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 200);
}

/// Waits until node `i`'s agent has no record of workspace `id` (its
/// volume, container and namespace go with it).
pub async fn copy_gone(c: &Cluster, i: usize, id: &str) {
    let record = c.nodes[i]
        .state_dir
        .join("workspaces")
        .join(format!("{id}.json"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while record.exists() {
        assert!(
            Instant::now() < deadline,
            "the stale copy of {id} stays on {}: {}",
            c.nodes[i].id,
            c.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until node `id` is connected to the coordinator.
pub async fn connected(c: &Cluster, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, n) = c.get(&format!("/v1/nodes/{id}")).await;
        if n["connected_here"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "{id} not back: {n}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stock `restic` on repository `repo` with `password`.
pub fn restic(repo: &std::path::Path, password: &[u8], args: &[&str]) -> std::process::Output {
    std::process::Command::new("restic")
        .args(["--no-cache", "-r", &repo.display().to_string()])
        .args(args)
        .env(
            "RESTIC_PASSWORD",
            String::from_utf8_lossy(password).as_ref(),
        )
        .output()
        .unwrap()
}

/// Restores `snapshot` of `repo` into `target` with stock `restic`.
pub fn stock_restore(repo: &std::path::Path, key: &[u8], snapshot: &str, target: &std::path::Path) {
    let out = restic(
        repo,
        key,
        &[
            "restore",
            snapshot,
            "--target",
            &target.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Workspace `id`'s backup key, as the coordinator holds it (sealed in its
/// store with the secrets key).
pub async fn backup_key(c: &Cluster, id: &str) -> Vec<u8> {
    let store = berth_coordinator::store::Store::open(&format!(
        "sqlite://{}",
        c.dir.join("coord/berth.db").display()
    ))
    .await
    .unwrap();
    let state = store.backup_state(id).await.unwrap().unwrap();
    let sealer = berth_coordinator::secrets::Sealer::from_file(&c.dir.join("secrets.key")).unwrap();
    sealer
        .open(
            &state.sealed_key,
            &berth_coordinator::domain::backup::sealing_context(id),
        )
        .unwrap()
}

/// Restores backup `snapshot` of the workspace with id `id` with stock
/// `restic` into a new directory under the cluster's; returns it.
pub async fn restore_with_stock_restic(
    c: &Cluster,
    id: &str,
    snapshot: &str,
) -> std::path::PathBuf {
    let key = backup_key(c, id).await;
    let target = c.dir.join(format!("restored-{snapshot}"));
    stock_restore(&c.dir.join("backups").join(id), &key, snapshot, &target);
    target
}
