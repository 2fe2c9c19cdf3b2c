//! Retention (docs/backups.md, "Retention"): a workspace's backups are
//! pruned to the policy (`[backups] keep_last`, `keep_daily`,
//! `keep_weekly`) at most every `prune_interval_minutes`, by the node
//! taking its next backup (restic forget --prune); a deleted workspace's
//! backups stay `keep_deleted_days`, then a node drops them.

use super::Service;
use crate::domain::backup;
use crate::error::Result;
use crate::store::BackupStateRow;
use berth_proto::agent as pb;
use std::time::Duration;

/// How long dropping one workspace's backups may take.
const DROP_TIMEOUT: Duration = Duration::from_secs(600);

impl Service {
    /// The retention a backup taken at `now` carries, when a prune is due.
    pub(super) fn retention(&self, state: &BackupStateRow, now: i64) -> Option<pb::Retention> {
        let p = &self.inner.backups;
        backup::prune_due(p, state.pruned_ms, now).then_some(pb::Retention {
            keep_last: p.keep_last,
            keep_daily: p.keep_daily,
            keep_weekly: p.keep_weekly,
        })
    }

    /// Forgets the rows of the backups a prune along with backup `newest`
    /// did not keep. A prune whose list lacks `newest` is not believed.
    pub(super) async fn record_prune(&self, id: &str, newest: &str, kept: &[String]) {
        if !kept.iter().any(|k| k.starts_with(newest)) {
            tracing::warn!(workspace = %id, %newest, kept = kept.len(), "the prune's list lacks the newest backup: rows kept");
            return;
        }
        match self.inner.store.pruned(id, kept, self.now()).await {
            Ok(gone) => tracing::info!(workspace = %id, gone, kept = kept.len(), "backups pruned"),
            Err(e) => tracing::warn!(workspace = %id, error = %e, "prune not recorded"),
        }
    }

    /// Drops the backups of workspaces deleted longer than the policy keeps
    /// them, through a node that reaches their store (any node for shared
    /// stores, else the node they were taken on).
    pub(super) async fn drop_pass(&self) -> Result<()> {
        let p = &self.inner.backups;
        if p.keep_deleted_ms == 0 {
            return Ok(());
        }
        let now = self.now();
        for w in self
            .inner
            .store
            .deleted_with_backups(now - p.keep_deleted_ms)
            .await?
        {
            if !backup::drop_due(p, w.state_since_ms, now) {
                continue;
            }
            let node = match p.shared() {
                true => self.inner.link.connected().into_iter().next(),
                false => w.node.clone().filter(|n| self.inner.link.is_connected(n)),
            };
            let Some(node) = node else {
                continue;
            };
            let store = self.backup_store(&w).await?;
            let cmd = pb::request::Command::DropBackups(pb::DropBackupsRequest {
                name: w.id.clone(),
                store: Some(store),
            });
            match self.inner.link.call(&node, cmd, DROP_TIMEOUT).await {
                Ok(pb::response::Result::Dropped(d)) => {
                    self.inner.store.forget_backups(&w.id).await?;
                    tracing::info!(workspace = %w.id, %node, snapshots = d.snapshots, "deleted workspace's backups dropped");
                }
                other => {
                    tracing::warn!(workspace = %w.id, %node, answer = ?other, "deleted workspace's backups not dropped; will retry")
                }
            }
        }
        Ok(())
    }
}
