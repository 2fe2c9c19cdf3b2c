//! A cluster for backups: nodes whose volumes are on XFS (snapshots by
//! reflink, `crate::xfs`), its coordinator backing up every
//! `interval_minutes` to the cluster's own directory.

use crate::cluster::{Cluster, ClusterOptions};

/// One node.
pub async fn cluster(interval_minutes: f64) -> Cluster {
    cluster_of(ClusterOptions::default(), interval_minutes, "").await
}

/// `opts`' nodes, with `extra` lines in the coordinator's `[backups]`
/// (e.g. `shared_path = true`: every node sees the cluster's directory).
pub async fn cluster_of(opts: ClusterOptions, interval_minutes: f64, extra: &str) -> Cluster {
    let mut c = Cluster::start(ClusterOptions {
        reflink: true,
        ..opts
    })
    .await;
    let config = c.dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[backups]\nrepository = \"{}\"\ninterval_minutes = {interval_minutes}\n{extra}",
            c.dir.join("backups").display()
        ),
    )
    .unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--config".into(), config.display().to_string()]);
    c.start_coordinator();
    c
}
