//! Deletes that never lose work (docs/backups.md, "Delete"): a workspace
//! is deleted at once only when a backup holds all it has
//! (`backup::may_delete`); else it is stopped, its stop's backup is taken
//! as after every stop, and the delete goes once that is confirmed. A
//! failing store keeps it waiting, shown in its backup status; `force`
//! deletes at once, giving up what is not backed up.

use super::{Change, Service};
use crate::domain::backup;
use crate::domain::lifecycle::{Desired, Event, State};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};

impl Service {
    /// A delete request on workspace `name` (idempotent).
    pub async fn delete(&self, owner: &str, name: &str, force: bool) -> Result<WorkspaceRow> {
        let w = self.find(owner, name).await?;
        match self.request_delete(&w, force).await {
            Ok(w) => Ok(w),
            Err(Change::Invalid(e)) => Err(Error::conflict(
                "invalid_state",
                format!("workspace {name} is {}: {e}", e.state.as_str()),
            )),
            Err(Change::Gone) => Err(Error::not_found(format!("no workspace named {name:?}"))),
            Err(Change::Store(e)) => Err(e),
        }
    }

    /// Deletes `w` now if that loses nothing (or `force`); else records the
    /// delete and stops it, for `delete_pass` to finish.
    pub(super) async fn request_delete(
        &self,
        w: &WorkspaceRow,
        force: bool,
    ) -> Result<WorkspaceRow, Change> {
        if force || self.may_delete(w).await.map_err(Change::Store)? {
            let deleted = self
                .change(&w.id, &[Event::DeleteRequested], None, true, None)
                .await?;
            let _ = self.inner.store.forget_delete(&w.id).await;
            return Ok(deleted);
        }
        let first = self
            .inner
            .store
            .delete_requested(&w.id)
            .await
            .map_err(Change::Store)?;
        self.inner
            .store
            .request_delete(&w.id, self.now())
            .await
            .map_err(Change::Store)?;
        if first.is_none() {
            tracing::info!(workspace = %w.id, "delete waits for the final backup");
            self.announce(
                &w.id,
                "deleting: once a backup of it stopped is confirmed (nothing is lost)".to_string(),
            )
            .await;
        }
        let stopped = match w.desired {
            Desired::Stopped => Ok(w.clone()),
            _ => {
                self.change(&w.id, &[Event::StopRequested], None, false, None)
                    .await
            }
        };
        self.inner.wake_backup.notify_one();
        stopped
    }

    /// Whether `w` may be deleted now without losing work.
    async fn may_delete(&self, w: &WorkspaceRow) -> Result<bool> {
        let p = &self.inner.backups;
        if backup::may_delete(p, w.state, w.node.is_some(), w.state_since_ms, None) {
            return Ok(true);
        }
        if w.state != State::Stopped {
            return Ok(false);
        }
        let (newest, _) = self.inner.store.newest_backup(&w.id).await?;
        let newest = newest.as_ref().map(super::moves::newest_of);
        Ok(backup::may_delete(
            p,
            w.state,
            true,
            w.state_since_ms,
            newest,
        ))
    }

    /// Finishes the deletes that wait: each goes once its backup is
    /// confirmed; one started again meanwhile is stopped again (the delete
    /// stands).
    pub(super) async fn delete_pass(&self) -> Result<()> {
        for id in self.inner.store.waiting_deletes().await? {
            let Some(w) = self.inner.store.workspace(&id).await? else {
                self.inner.store.forget_delete(&id).await?;
                continue;
            };
            if matches!(w.state, State::Deleting | State::Deleted) {
                self.inner.store.forget_delete(&id).await?;
                continue;
            }
            if self.may_delete(&w).await? {
                tracing::info!(workspace = %id, "final backup confirmed: deleting");
                self.apply(&id, &[Event::DeleteRequested], None).await;
                self.inner.store.forget_delete(&id).await?;
            } else if w.desired == Desired::Running {
                self.apply(&id, &[Event::StopRequested], None).await;
            }
        }
        Ok(())
    }
}
