//! Backups at work (docs/backups.md): every interval while a workspace
//! runs and once after every stop, its node backs it up to its own
//! repository with the key held here; a failure is retried with backoff and
//! shown (status, event), never dropped. A restore puts a chosen backup back
//! into a stopped workspace.

use super::Service;
use crate::domain::backup::{self, sealing_context, Facts};
use crate::domain::lifecycle::State;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::{BackupRow, BackupStateRow, WorkspaceFilter};
use berth_proto::agent as pb;
use berth_proto::api::{
    Backup, BackupSettings, BackupStatus, Backups, Moved, RestoreBody, Restored,
};
use berth_proto::codes::{self, Code};
use std::time::Duration;

/// How long a node may take over one backup or restore.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Removes the id from the in-flight set when dropped.
struct InFlight(Service, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .inner
            .backing_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl Service {
    pub(super) async fn backup_loop(&self) {
        loop {
            let _ = tokio::time::timeout(
                self.inner.timing.backup_check,
                self.inner.wake_backup.notified(),
            )
            .await;
            if let Err(e) = self.backup_pass().await {
                tracing::warn!(error = %e, "backup pass failed");
            }
        }
    }

    /// Starts the backups that are due.
    pub async fn backup_pass(&self) -> Result<()> {
        self.resume_pass().await;
        if let Err(e) = self.fence_pass().await {
            tracing::warn!(error = %e, "fence pass failed");
        }
        if let Err(e) = self.delete_pass().await {
            tracing::warn!(error = %e, "delete pass failed");
        }
        if let Err(e) = self.drain_pass().await {
            tracing::warn!(error = %e, "drain pass failed");
        }
        if let Err(e) = self.drop_pass().await {
            tracing::warn!(error = %e, "drop pass failed");
        }
        let facts = self.inner.store.backup_facts().await?;
        let now = self.now();
        let mut due = Vec::new();
        for state in [State::Stopped, State::Running] {
            let rows = self
                .inner
                .store
                .workspaces(&WorkspaceFilter {
                    state: Some(state),
                    ..Default::default()
                })
                .await?;
            for w in rows {
                let f = facts_of(&w, facts.get(&w.id).copied());
                if backup::due(&self.inner.backups, &f, now).is_none() {
                    continue;
                }
                let Some(node) = w.node.clone().filter(|n| self.inner.link.is_connected(n)) else {
                    continue;
                };
                due.push((backup::urgency(&f), w, node));
            }
        }
        // The slots go first to the stops' backups, the longest unsaved
        // first (a notice's time is short).
        due.sort_by_key(|(u, _, _)| *u);
        for (_, w, node) in due {
            self.back_up_soon(w, node);
        }
        Ok(())
    }

    /// Backs `w` up on `node` in the background, when a slot is free,
    /// unless a backup or restore of it is on its way.
    pub(super) fn back_up_soon(&self, w: WorkspaceRow, node: String) {
        let Some(flight) = self.claim(&w.id) else {
            return;
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let _flight = flight;
            let _slot = svc.inner.backup_slots.clone().acquire_owned().await;
            let _ = svc.back_up(&w, &node).await;
        });
    }

    /// Marks workspace `id` as having a backup or restore on its way; None
    /// if it already has.
    fn claim(&self, id: &str) -> Option<InFlight> {
        let mut set = self
            .inner
            .backing_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !set.insert(id.to_string()) {
            return None;
        }
        Some(InFlight(self.clone(), id.to_string()))
    }

    /// Workspace `w`'s repository and key, made on first use.
    pub(super) async fn backup_store(&self, w: &WorkspaceRow) -> Result<pb::BackupStore> {
        Ok(self.backup_store_and_state(w).await?.0)
    }

    /// Workspace `w`'s repository and key, and its backup state row.
    async fn backup_store_and_state(
        &self,
        w: &WorkspaceRow,
    ) -> Result<(pb::BackupStore, BackupStateRow)> {
        let state = match self.inner.store.backup_state(&w.id).await? {
            Some(s) => s,
            None => {
                let key = hex::encode(rand::random::<[u8; 32]>());
                let row = BackupStateRow {
                    workspace_id: w.id.clone(),
                    repository: self.inner.backups.repository_of(&w.id),
                    sealed_key: self
                        .inner
                        .sealer
                        .seal(key.as_bytes(), &sealing_context(&w.id)),
                    failures: 0,
                    last_error: String::new(),
                    last_attempt_ms: 0,
                    exclude_ignored: false,
                    // The first prune comes one period after the first backup.
                    pruned_ms: self.now(),
                };
                self.inner.store.init_backup_state(&row).await?
            }
        };
        let key = self
            .inner
            .sealer
            .open(&state.sealed_key, &sealing_context(&w.id))
            .ok_or_else(|| Error::internal("the backup key does not open with the secrets key"))?;
        let store = pb::BackupStore {
            repository: state.repository.clone(),
            password: String::from_utf8_lossy(&key).into_owned(),
            env: self.inner.backups.env.clone().into_iter().collect(),
        };
        Ok((store, state))
    }

    /// Backs workspace `w` up on `node` now; records the backup, or the
    /// failure (status and event).
    async fn back_up(&self, w: &WorkspaceRow, node: &str) -> Result<Backup> {
        let started = self.now();
        let result = async {
            let (store, state) = self.backup_store_and_state(w).await?;
            let cmd = pb::request::Command::Backup(pb::BackupRequest {
                name: w.id.clone(),
                store: Some(store),
                exclude_ignored: state.exclude_ignored,
                // Pruned along with a running workspace's periodic backup,
                // never with a stop's (a move or a delete waits on it).
                retention: match w.state {
                    State::Running => self.retention(&state, started),
                    _ => None,
                },
            });
            match self.inner.link.call(node, cmd, BACKUP_TIMEOUT).await? {
                pb::response::Result::BackedUp(b) => Ok(b),
                pb::response::Result::Error(e) => Err(agent_error(e)),
                other => Err(Error::node(
                    "node_error",
                    format!("unexpected answer {other:?}"),
                )),
            }
        }
        .await;
        let ms = |t: u64| t.min(i64::MAX as u64) as i64;
        match result {
            Ok(b) => {
                let backup = Backup {
                    id: b.id,
                    taken_at_ms: ms(b.taken_at_ms),
                    node: node.to_string(),
                    bytes_added: b.bytes_added,
                    bytes_total: b.bytes_total,
                    files: b.files,
                    consistency: b.consistency,
                    pause_ms: b.pause_ms,
                    duration_ms: b.duration_ms,
                    paths: b.paths,
                    bytes_excluded: b.bytes_excluded,
                };
                let row = BackupRow {
                    workspace_id: w.id.clone(),
                    backup: backup.clone(),
                    id_base: b.id_base,
                    generation: w.generation,
                };
                self.inner.store.add_backup(&row, started).await?;
                if b.pruned {
                    self.record_prune(&w.id, &backup.id, &b.kept).await;
                }
                tracing::info!(workspace = %w.id, id = %backup.id, added = backup.bytes_added, pause_ms = backup.pause_ms, "backup confirmed");
                self.inner.stats.backup(true);
                self.announce(
                    &w.id,
                    format!(
                        "backup: {} ({} bytes added, {} covered)",
                        backup.id, backup.bytes_added, backup.bytes_total
                    ),
                )
                .await;
                Ok(backup)
            }
            Err(e) => {
                tracing::warn!(workspace = %w.id, error = %e, "backup failed");
                self.inner.stats.backup(false);
                let _ = self
                    .inner
                    .store
                    .backup_failed(&w.id, &e.to_string(), started)
                    .await;
                self.announce(&w.id, format!("backup_failed: {e}")).await;
                Err(e)
            }
        }
    }

    /// Backs workspace `name` up now (it must be on a connected node).
    pub async fn backup_now(&self, owner: &str, name: &str) -> Result<Backup> {
        let w = self.find(owner, name).await?;
        let node = self.backup_node(&w)?;
        let _flight = self.claim(&w.id).ok_or_else(|| {
            Error::conflict("backup_running", "a backup or restore of it is on its way")
        })?;
        self.back_up(&w, &node).await
    }

    fn backup_node(&self, w: &WorkspaceRow) -> Result<String> {
        if !matches!(w.state, State::Running | State::Stopped) {
            return Err(Error::conflict(
                "not_running",
                format!("workspace {} is {}", w.name, w.state.as_str()),
            ));
        }
        w.node
            .clone()
            .filter(|n| self.inner.link.is_connected(n))
            .ok_or_else(|| {
                Error::unavailable(
                    "node_unreachable",
                    format!("the node of workspace {} is not connected", w.name),
                )
            })
    }

    /// Workspace `w`'s backup status (None: never backed up or tried).
    pub async fn backup_status(&self, w: &WorkspaceRow) -> Result<Option<BackupStatus>> {
        let Some(state) = self.inner.store.backup_state(&w.id).await? else {
            // Never backed up; a delete may wait for its first backup.
            let waits = self.inner.store.delete_requested(&w.id).await?;
            return Ok(waits.map(|at| BackupStatus {
                delete_requested_at_ms: Some(at),
                ..BackupStatus::default()
            }));
        };
        // Every GET of a workspace reads this: the newest and a count,
        // not every backup it ever had.
        let (newest, count) = self.inner.store.newest_backup(&w.id).await?;
        let mut status = self.status_of(w, &state, newest.as_ref(), count);
        status.delete_requested_at_ms = self.inner.store.delete_requested(&w.id).await?;
        status.moved = self.inner.store.move_of(&w.id).await?.map(|m| Moved {
            from_node: m.from_node,
            backup_id: m.backup_id,
            why: m.why,
            requested_at_ms: m.requested_ms,
            done_at_ms: (m.done_ms != 0).then_some(m.done_ms),
        });
        Ok(Some(status))
    }

    fn status_of(
        &self,
        w: &WorkspaceRow,
        s: &BackupStateRow,
        newest: Option<&BackupRow>,
        count: usize,
    ) -> BackupStatus {
        let last = newest.map(|b| b.backup.clone());
        let f = facts_of(
            w,
            Some((
                last.as_ref().map(|b| b.taken_at_ms),
                s.failures,
                s.last_attempt_ms,
            )),
        );
        BackupStatus {
            last,
            count: count as u64,
            failures: s.failures,
            error: (!s.last_error.is_empty()).then(|| s.last_error.clone()),
            next_at_ms: backup::next(&self.inner.backups, &f).map(|(at, _)| at),
            moved: None,
            delete_requested_at_ms: None,
            exclude_ignored: s.exclude_ignored,
        }
    }

    /// Sets whether workspace `name`'s backups leave out what its
    /// .gitignore files ignore; its backups and status after.
    pub async fn set_backup_settings(
        &self,
        owner: &str,
        name: &str,
        settings: &BackupSettings,
    ) -> Result<Backups> {
        let w = self.find(owner, name).await?;
        // Its repository and key exist from now on (made on first use).
        self.backup_store(&w).await?;
        self.inner
            .store
            .set_exclude_ignored(&w.id, settings.exclude_ignored)
            .await?;
        self.backups(owner, name).await
    }

    /// Workspace `name`'s backups, newest first, and their status.
    pub async fn backups(&self, owner: &str, name: &str) -> Result<Backups> {
        let w = self.find(owner, name).await?;
        let all = self.inner.store.backups(&w.id).await?;
        let status = match self.inner.store.backup_state(&w.id).await? {
            Some(s) => self.status_of(&w, &s, all.first(), all.len()),
            None => BackupStatus::default(),
        };
        Ok(Backups {
            status,
            backups: all.into_iter().map(|b| b.backup).collect(),
        })
    }

    /// Puts a backup back into stopped workspace `name`: the one `req.id`
    /// names, or the newest taken at or before `req.at`, or the newest.
    /// Refused while what it holds now is not backed up (the backup after
    /// its stop confirms first), so a restore never loses work either.
    pub async fn restore(&self, owner: &str, name: &str, req: &RestoreBody) -> Result<Restored> {
        let w = self.find(owner, name).await?;
        let at = match &req.at {
            Some(t) => Some(
                (time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| Error::invalid("invalid_time", format!("at {t:?}: {e}")))?
                    .unix_timestamp_nanos()
                    / 1_000_000) as i64,
            ),
            None => None,
        };
        if w.state == State::Unknown {
            // Its node is lost: the backup is restored on another one.
            let all = self.inner.store.backups(&w.id).await?;
            let chosen = choose(&all, name, req, at)?;
            return self.move_to_backup(&w, chosen).await;
        }
        if w.state != State::Stopped {
            return Err(Error::conflict(
                "not_stopped",
                format!(
                    "workspace {name} is {}: stop it first (berth stop {name})",
                    w.state.as_str()
                ),
            ));
        }
        let node = self.backup_node(&w)?;
        let _flight = self.claim(&w.id).ok_or_else(|| {
            Error::conflict("backup_running", "a backup or restore of it is on its way")
        })?;
        let all = self.inner.store.backups(&w.id).await?;
        if all
            .first()
            .is_none_or(|b| b.backup.taken_at_ms < w.state_since_ms)
        {
            return Err(Error::conflict(
                "backup_pending",
                format!(
                    "workspace {name}'s data since it stopped is not backed up yet; retry shortly"
                ),
            ));
        }
        let chosen = choose(&all, name, req, at)?;
        let store = self.backup_store(&w).await?;
        let cmd = pb::request::Command::Restore(pb::RestoreRequest {
            name: w.id.clone(),
            store: Some(store),
            id: chosen.backup.id.clone(),
            id_base: chosen.id_base,
            bytes: chosen.backup.bytes_total,
        });
        let r = match self.inner.link.call(&node, cmd, BACKUP_TIMEOUT).await? {
            pb::response::Result::Restored(r) => r,
            pb::response::Result::Error(e) => return Err(agent_error(e)),
            other => {
                return Err(Error::node(
                    "node_error",
                    format!("unexpected answer {other:?}"),
                ))
            }
        };
        self.announce(&w.id, format!("restored: backup {}", chosen.backup.id))
            .await;
        Ok(Restored {
            backup: chosen.backup.clone(),
            duration_ms: r.duration_ms,
            moved_from: None,
        })
    }
}

/// The backup a restore names: `req.id` (a prefix), or the newest taken
/// at or before `at`, or the newest.
fn choose<'a>(
    all: &'a [BackupRow],
    name: &str,
    req: &RestoreBody,
    at: Option<i64>,
) -> Result<&'a BackupRow> {
    all.iter()
        .find(|b| match (&req.id, at) {
            (Some(id), _) => b.backup.id.starts_with(id.as_str()),
            (None, Some(at)) => b.backup.taken_at_ms <= at,
            (None, None) => true,
        })
        .ok_or_else(|| {
            Error::not_found(match (&req.id, &req.at) {
                (Some(id), _) => format!("workspace {name} has no backup {id}"),
                (_, Some(t)) => format!("workspace {name} has no backup taken at or before {t}"),
                _ => format!("workspace {name} has no backup"),
            })
        })
}

/// A node's refusal of a backup or restore, as the API says it.
fn agent_error(e: pb::Error) -> Error {
    let message = format!("{}: {}", e.code, e.message);
    match codes::of(&e) {
        Some(Code::BackupMissing) => Error::node("backup_missing", message),
        Some(Code::Conflict) => Error::conflict("conflict", message),
        Some(Code::NotFound) => Error::node("workspace_missing_on_node", message),
        _ => Error::node("backup_failed", message),
    }
}

fn facts_of(w: &WorkspaceRow, f: Option<(Option<i64>, u32, i64)>) -> Facts {
    let (last_backup_ms, failures, last_attempt_ms) = f.unwrap_or((None, 0, 0));
    Facts {
        state: w.state,
        state_since_ms: w.state_since_ms,
        last_backup_ms,
        failures,
        last_attempt_ms,
    }
}
