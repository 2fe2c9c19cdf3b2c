//! Deleting a workspace, and the per-workspace egress allow set the
//! records define.

use super::*;

impl Manager {
    /// Removes everything a record may have made, logging what fails.
    pub(crate) async fn teardown(&self, r: &Record) {
        let name = &r.name;
        self.inner.secrets.remove(name);
        // A build step a crash interrupted runs on the volume: first.
        let build = format!("{name}-build");
        let steps: [(&str, Result<()>); 8] = [
            ("build task", self.kill_task(&build).await.map(|_| ())),
            (
                "build container",
                self.inner.ctd.delete_container(&build).await,
            ),
            ("task", self.kill_task(name).await.map(|_| ())),
            ("container", self.inner.ctd.delete_container(name).await),
            (
                "snapshot",
                self.inner
                    .ctd
                    .remove_snapshot(&Self::snapshot_key(name))
                    .await,
            ),
            (
                "prebuild overlay",
                self.unmount_prebuild(name, r.prebuild.as_deref()).await,
            ),
            ("netns", self.inner.net.remove(r.parts()).await),
            ("volume", self.inner.volumes.remove(r.parts()).await),
        ];
        for (what, res) in steps {
            if let Err(e) = res {
                tracing::warn!(workspace = %name, step = what, error = %e, "teardown step failed");
            }
        }
        match std::fs::remove_file(self.init_log_dir().join(format!("{name}.log"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(workspace = %name, error = %e, "removing the init log");
            }
            _ => {}
        }
    }

    /// Deletes a workspace and its volume. Deleting what is not there succeeds.
    #[tracing::instrument(name = "delete", skip_all, fields(workspace = name))]
    pub async fn delete(&self, name: &str, generation: u64) -> Result<pb::WorkspaceStatus> {
        validate::name(name)?;
        let _guard = self.lock(name).await;
        let deleted = pb::WorkspaceStatus {
            name: name.into(),
            state: pb::State::Deleted as i32,
            ..Default::default()
        };
        let Some(mut r) = self.inner.records.get(name)? else {
            return Ok(deleted);
        };
        Self::check_generation(&mut r, generation)?;
        r.phase = Phase::Deleting;
        self.inner.records.put(&r)?;
        failpoint::hit("delete:after_mark");
        self.finish_delete(&r).await?;
        Ok(deleted)
    }

    pub(crate) async fn finish_delete(&self, r: &Record) -> Result<()> {
        self.teardown(r).await;
        // Only forget the record once nothing is left, so a retry can finish the job.
        if self.inner.ctd.get_task(&r.name).await?.is_some() || self.inner.net.exists(r.parts()) {
            return Err(AgentError::Conflict {
                name: r.name.clone(),
                state: "deleting".into(),
                action: "delete (retry)",
            });
        }
        failpoint::hit("delete:before_forget");
        if !r.egress_allow.is_empty() {
            // Before the record goes, so a failure is retried with the delete.
            self.sync_workspace_allow(&r.name).await?;
        }
        self.inner.activity.forget(&r.name);
        self.inner.records.remove(&r.name)
    }

    /// Makes the node's per-workspace allow set what the records say,
    /// leaving out `without` (a workspace being removed) and deleting ones:
    /// at start, and with a create or delete of a workspace that has an
    /// allow-list. After a failed sync the next create syncs too, so an
    /// address never keeps an allowance of the workspace that had it before.
    pub(crate) async fn sync_workspace_allow(&self, without: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        self.inner.allow_dirty.store(true, Ordering::SeqCst);
        let entries: Vec<(Ipv4Addr, Vec<String>)> = self
            .inner
            .records
            .all()?
            .into_iter()
            .filter(|r| r.name != without && r.phase != Phase::Deleting)
            .filter(|r| !r.egress_allow.is_empty())
            .map(|r| (r.ip, r.egress_allow))
            .collect();
        self.inner.net.set_workspace_allow(&entries).await?;
        self.inner.allow_dirty.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub(super) fn allow_dirty(&self) -> bool {
        self.inner
            .allow_dirty
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}
