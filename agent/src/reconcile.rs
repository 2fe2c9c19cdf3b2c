//! Start-up reconciliation: re-adopt what runs, finish or undo what a crash
//! interrupted, and remove what no record explains. Running workspaces are
//! never touched.

use crate::error::Result;
use crate::record::Phase;
use crate::workspace::{Manager, IDMAPPED_DIR, WORKSPACE_LABEL};
use containerd_client::types::v1::Status as TaskStatus;
use std::collections::HashSet;

/// What a reconciliation found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Workspaces whose task is running, left as they are.
    pub adopted: usize,
    /// Half-made workspaces rolled back.
    pub rolled_back: usize,
    /// Deletes finished.
    pub deleted: usize,
    /// Stray containers, snapshots, namespaces and volumes removed.
    pub strays: usize,
}

impl Manager {
    /// Brings the node in line with the records (see module docs).
    pub async fn reconcile(&self) -> Result<Report> {
        let mut report = Report::default();
        let mut known = HashSet::new();
        let mut parts: HashSet<String> = self.prepared_ids().into_iter().collect();
        for r in self.records().all()? {
            match r.phase {
                Phase::Creating => {
                    tracing::info!(workspace = %r.name, "rolling back a half-made workspace");
                    self.teardown(&r).await;
                    self.records().remove(&r.name)?;
                    report.rolled_back += 1;
                }
                Phase::Deleting => {
                    tracing::info!(workspace = %r.name, "finishing an interrupted delete");
                    self.finish_delete(&r).await?;
                    report.deleted += 1;
                }
                Phase::Ready => {
                    // Lifecycle commands the last agent was running ended with it.
                    let mut r = r;
                    if r.init.as_mut().is_some_and(|st| st.interrupted()) {
                        self.records().put(&r)?;
                    }
                    let running = self
                        .containerd()
                        .get_task(&r.name)
                        .await?
                        .is_some_and(|p| p.status == TaskStatus::Running as i32);
                    if running {
                        // A crash between a start and its quota write left
                        // the init's floor: the workspace's own quota again.
                        self.apply_cpu_quota(&r)?;
                        report.adopted += 1;
                    }
                    known.insert(r.name.clone());
                    parts.insert(r.parts().to_string());
                }
            }
        }
        report.strays += self.remove_strays(&known, &parts).await?;
        // The node's table was just replaced (setup_node): its allow set is empty.
        if self
            .records()
            .all()?
            .iter()
            .any(|r| !r.egress_allow.is_empty())
        {
            self.sync_workspace_allow("").await?;
        }
        tracing::info!(
            adopted = report.adopted,
            rolled_back = report.rolled_back,
            deleted = report.deleted,
            strays = report.strays,
            "reconciled"
        );
        Ok(report)
    }

    /// `known`: workspace names; `parts`: names their volumes and namespaces go by.
    async fn remove_strays(
        &self,
        known: &HashSet<String>,
        parts: &HashSet<String>,
    ) -> Result<usize> {
        let ctd = self.containerd().clone();
        let mut n = 0;
        let filter = format!("labels.\"{WORKSPACE_LABEL}\"");
        for (id, _) in ctd.list_containers(&filter).await? {
            if !known.contains(&id) {
                tracing::info!(container = %id, "removing a container no record explains");
                ctd.kill(&id, "", libc::SIGKILL as u32, true).await?;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ctd.wait(&id, ""))
                    .await;
                ctd.delete_task(&id).await?;
                ctd.delete_container(&id).await?;
                n += 1;
            }
        }
        for key in ctd.list_snapshots(&filter).await? {
            let owner = key.strip_prefix("berth/").unwrap_or(&key);
            if !known.contains(owner) {
                ctd.remove_snapshot(&key).await?;
                n += 1;
            }
        }
        for key in ctd.list_snapshots("name~=\"^berth-extract-\"").await? {
            ctd.remove_snapshot(&key).await?;
            n += 1;
        }
        n += self.remove_prebuild_strays(known).await?;
        for name in self.network().list() {
            if !parts.contains(&name) {
                self.network().remove(&name).await?;
                n += 1;
            }
        }
        for name in self.volumes().list() {
            if !parts.contains(&name) {
                self.volumes().remove(&name).await?;
                n += 1;
            }
        }
        n += self.remove_idmapped_leftovers();
        Ok(n)
    }

    /// Idmapped layer views exist only while a task is created; any found
    /// at start are a crashed agent's: detached, and their dirs removed
    /// (one by one, never recursively: they may still be mount points).
    fn remove_idmapped_leftovers(&self) -> usize {
        let root = self.config().file.state_dir.join(IDMAPPED_DIR);
        let mut n = 0;
        for ws in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for layer in std::fs::read_dir(ws.path()).into_iter().flatten().flatten() {
                let p = layer.path();
                if let Err(e) = crate::idmap::mount::unmount(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "detaching a leftover idmapped layer");
                }
                let _ = std::fs::remove_dir(&p);
            }
            let _ = std::fs::remove_dir(ws.path());
            n += 1;
        }
        n
    }
}
