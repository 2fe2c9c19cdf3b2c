//! A cluster for backups: one node whose volumes are on XFS (snapshots by
//! reflink, `crate::xfs`), its coordinator backing up every
//! `interval_minutes` to the cluster's own directory.

use crate::cluster::{Cluster, ClusterOptions};

pub async fn cluster(interval_minutes: f64) -> Cluster {
    let mut c = Cluster::start(ClusterOptions {
        reflink: true,
        ..Default::default()
    })
    .await;
    let config = c.dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[backups]\nrepository = \"{}\"\ninterval_minutes = {interval_minutes}\n",
            c.dir.join("backups").display()
        ),
    )
    .unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--config".into(), config.display().to_string()]);
    c.start_coordinator();
    c
}
