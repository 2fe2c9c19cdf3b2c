//! Workspaces a node fenced (TEST-PLAN 6, docs/backups.md): cut off from
//! the coordinator for its `[coordinator] stop_after_seconds`, an agent
//! stops its running workspaces and backs each up stopped, tagged
//! `consistency=fenced` and with its generation. The coordinator cannot
//! hear of that backup, so it looks in the workspace's repository (with
//! Debian's `restic`, as the nodes do) when the workspace is unknown: once
//! found, the backup is recorded and the workspace moves to another node
//! with all its data (`backup::may_move` says when it holds all of it).

use super::Service;
use crate::domain::backup::Away;
use crate::domain::lifecycle::{Desired, State};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::{BackupRow, WorkspaceFilter};
use berth_proto::agent as pb;
use berth_proto::api::Backup;
use std::process::Stdio;
use std::time::Duration;

/// How often one unknown workspace's repository is looked in.
const LOOK_EVERY_MS: i64 = 5_000;
/// How long one look may take (a store that hangs).
const LOOK_TIMEOUT: Duration = Duration::from_secs(60);
const GENERATION_TAG: &str = "generation=";
const ID_BASE_TAG: &str = "id-base=";

/// One snapshot as `restic snapshots --json` lists it.
#[derive(Debug, serde::Deserialize)]
struct Snapshot {
    id: String,
    time: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

impl Service {
    /// Moves each unknown workspace that should run once its node's
    /// fenced backup of it is found.
    pub(super) async fn fence_pass(&self) -> Result<()> {
        if !self.inner.backups.shared() {
            return Ok(());
        }
        let unknown = self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                state: Some(State::Unknown),
                ..Default::default()
            })
            .await?;
        let now = self.now();
        for w in unknown.iter().filter(|w| w.desired == Desired::Running) {
            if !self.time_to_look(&w.id, now) {
                continue;
            }
            if !self.adopt_fenced(w).await {
                continue;
            }
            let Ok(Some(ev)) = self.move_event(w, Away::Lost).await else {
                continue;
            };
            if self.start_or_move(&w.id, ev, false).await.is_err() {
                tracing::warn!(workspace = %w.id, "fenced workspace not moved");
            }
        }
        Ok(())
    }

    /// Whether unknown workspace `id`'s repository is due a look.
    fn time_to_look(&self, id: &str, now: i64) -> bool {
        let mut looked = self
            .inner
            .fence_looked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        looked.retain(|_, at| now - *at < 10 * LOOK_EVERY_MS);
        match looked.get(id) {
            Some(at) if now - *at < LOOK_EVERY_MS => false,
            _ => {
                looked.insert(id.to_string(), now);
                true
            }
        }
    }

    /// Records the backup unknown workspace `w`'s node took after fencing
    /// it under its current intent, if there is one; whether there is.
    pub(super) async fn adopt_fenced(&self, w: &WorkspaceRow) -> bool {
        if w.state != State::Unknown || !self.inner.backups.shared() {
            return false;
        }
        match self.fenced_backup(w).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(workspace = %w.id, error = %e, "fenced backups not looked up");
                false
            }
        }
    }

    async fn fenced_backup(&self, w: &WorkspaceRow) -> Result<bool> {
        let store = self.backup_store(w).await?;
        let Some(s) = newest_fenced(&store, w).await? else {
            return Ok(false);
        };
        let (newest, _) = self.inner.store.newest_backup(&w.id).await?;
        if newest.is_some_and(|b| b.backup.id == s.id) {
            return Ok(true);
        }
        let tag = |prefix: &str| {
            s.tags
                .iter()
                .find_map(|t| t.strip_prefix(prefix)?.parse::<u64>().ok())
        };
        let taken =
            time::OffsetDateTime::parse(&s.time, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    Error::internal(format!("snapshot {} time {:?}: {e}", s.id, s.time))
                })?;
        let row = BackupRow {
            workspace_id: w.id.clone(),
            backup: Backup {
                id: s.id.clone(),
                taken_at_ms: (taken.unix_timestamp_nanos() / 1_000_000) as i64,
                node: w.node.clone().unwrap_or_default(),
                consistency: "fenced".into(),
                paths: s.paths.clone(),
                ..Backup::default()
            },
            id_base: tag(ID_BASE_TAG).unwrap_or_default() as u32,
            generation: tag(GENERATION_TAG).unwrap_or_default(),
        };
        self.inner.store.add_backup(&row, self.now()).await?;
        tracing::warn!(workspace = %w.id, id = %s.id, node = %row.backup.node, "found the backup its node took after fencing it");
        self.announce(
            &w.id,
            format!(
                "backup: {} taken by node {} after it stopped the workspace, cut off from the coordinator",
                s.id, row.backup.node
            ),
        )
        .await;
        Ok(true)
    }
}

/// The newest snapshot in `store` of `w` fenced under its current
/// generation.
async fn newest_fenced(store: &pb::BackupStore, w: &WorkspaceRow) -> Result<Option<Snapshot>> {
    let mut cmd = tokio::process::Command::new("restic");
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("RESTIC_REPOSITORY", &store.repository)
        .env("RESTIC_PASSWORD", &store.password)
        .envs(&store.env)
        .args(["snapshots", "--json", "--no-lock", "--no-cache", "--host"])
        .arg(&w.id)
        .arg("--tag")
        .arg(format!(
            "consistency=fenced,{GENERATION_TAG}{}",
            w.generation
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(LOOK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Error::internal("restic snapshots timed out"))?
        .map_err(|e| Error::internal(format!("restic snapshots: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Never backed up: no repository, so nothing fenced either.
        if err.contains("Is there a repository") {
            return Ok(None);
        }
        return Err(Error::internal(format!(
            "restic snapshots failed ({}): {}",
            out.status,
            err.trim()
        )));
    }
    let mut all: Vec<Snapshot> = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::internal(format!("restic snapshots: {e}")))?;
    // Oldest first, as restic lists them.
    Ok(all.pop())
}
