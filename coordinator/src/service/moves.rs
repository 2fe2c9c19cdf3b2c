//! Moving a workspace to another node from its backup (docs/backups.md):
//! a start whose node is lost, gone or draining, or that failed there,
//! becomes a placement anywhere whose create restores the backup first.
//! The old node's copy is deleted once the new one exists.

use super::{Change, Service};
use crate::domain::backup::{self, Away, MoveFacts, Newest};
use crate::domain::lifecycle::{Desired, Event, State};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::{BackupRow, MoveRow};
use berth_proto::agent as pb;
use berth_proto::api::Restored;

impl Service {
    /// A start request on `w` (a user's, or a connection's wake-up):
    /// applied strictly, as a move when `start_event` says so.
    pub(super) async fn request_start(&self, w: &WorkspaceRow) -> Result<WorkspaceRow, Change> {
        let ev = self.start_event(w).await.map_err(Change::Store)?;
        self.start_or_move(&w.id, ev, true).await
    }

    /// Applies a start or a move (`strict`: as a user's request); a move
    /// that does not apply forgets the move it recorded.
    pub(super) async fn start_or_move(
        &self,
        id: &str,
        ev: Event,
        strict: bool,
    ) -> Result<WorkspaceRow, Change> {
        let moving = matches!(ev, Event::Move(_));
        let changed = self.change(id, &[ev], None, strict, None).await;
        if moving && changed.is_err() {
            let _ = self.inner.store.drop_move(id).await;
        }
        changed
    }

    /// What a start request on `w` becomes: a move, recorded first, when
    /// its node cannot have it and a backup holds what it needs; else the
    /// start itself.
    pub(super) async fn start_event(&self, w: &WorkspaceRow) -> Result<Event> {
        let Some(from) = &w.node else {
            return Ok(Event::StartRequested);
        };
        let away = match w.state {
            State::Unknown => {
                // Its node may have fenced it; the backup it took then
                // would let it move with all its data.
                self.adopt_fenced(w).await;
                Away::Lost
            }
            State::Failed => Away::Failed,
            State::Stopped => match self.inner.store.node(from).await? {
                None => Away::Gone,
                Some(n) if n.draining => Away::Draining,
                Some(_) => return Ok(Event::StartRequested),
            },
            _ => return Ok(Event::StartRequested),
        };
        Ok(self
            .move_event(w, away)
            .await?
            .unwrap_or(Event::StartRequested))
    }

    /// The move of `w` off its node, which cannot have it for `away`,
    /// recorded; None when no backup allows it (`backup::may_move`).
    pub(super) async fn move_event(&self, w: &WorkspaceRow, away: Away) -> Result<Option<Event>> {
        let from = w.node.clone().unwrap_or_default();
        let (newest, _) = self.inner.store.newest_backup(&w.id).await?;
        let facts_of_newest = newest.as_ref().map(newest_of);
        // Only a fenced backup asks when the node was last heard.
        let node_last_seen_ms = match facts_of_newest.is_some_and(|b| b.fenced) {
            true => self
                .inner
                .store
                .node(&from)
                .await?
                .map_or(0, |n| n.last_seen_ms),
            false => 0,
        };
        let facts = MoveFacts {
            state: w.state,
            wants_stopped: w.desired == Desired::Stopped,
            generation: w.generation,
            state_since_ms: w.state_since_ms,
            node_last_seen_ms,
            newest: facts_of_newest,
        };
        if let Err(why) = backup::may_move(&self.inner.backups, away, &facts) {
            tracing::debug!(workspace = %w.id, node = %from, away = away.as_str(), why, "not moved");
            return Ok(None);
        }
        let Some(b) = newest else {
            return Ok(None);
        };
        let why = format!("moving: node {from} {}; {}", away.as_str(), restoring(&b));
        self.record_move(w, &b, &from, &why).await?;
        Ok(Some(Event::Move(why)))
    }

    /// Restores backup `b` of workspace `w`, whose node is lost, on
    /// another node: the user's explicit choice (`berth restore`), which
    /// gives up whatever the lost node holds beyond that backup.
    pub(super) async fn move_to_backup(&self, w: &WorkspaceRow, b: &BackupRow) -> Result<Restored> {
        let from = w.node.clone().unwrap_or_default();
        if !self.inner.backups.shared() {
            return Err(Error::conflict(
                "node_lost",
                format!(
                    "the node of workspace {} is lost, and its backups are on that node's own disk",
                    w.name
                ),
            ));
        }
        let why = format!(
            "moving: node {from} is lost; {} (what was written after it is not in it)",
            restoring(b)
        );
        self.record_move(w, b, &from, &why).await?;
        match self.start_or_move(&w.id, Event::Move(why), true).await {
            Ok(_) => Ok(Restored {
                backup: b.backup.clone(),
                duration_ms: 0,
                moved_from: Some(from),
            }),
            Err(Change::Store(e)) => Err(e),
            Err(_) => Err(Error::conflict(
                "busy",
                "the workspace changed concurrently; retry",
            )),
        }
    }

    async fn record_move(
        &self,
        w: &WorkspaceRow,
        b: &BackupRow,
        from: &str,
        why: &str,
    ) -> Result<()> {
        self.inner
            .store
            .set_move(&MoveRow {
                workspace_id: w.id.clone(),
                backup_id: b.backup.id.clone(),
                id_base: b.id_base,
                bytes: b.backup.bytes_total,
                from_node: from.to_string(),
                why: why.to_string(),
                requested_ms: self.now(),
                done_ms: 0,
            })
            .await
    }

    /// The move a create of `w` completes, if it has one pending, and the
    /// restore the create carries for it.
    pub(super) async fn pending_move(
        &self,
        w: &WorkspaceRow,
    ) -> Result<Option<(MoveRow, pb::RestoreRequest)>> {
        let Some(m) = self.inner.store.move_of(&w.id).await? else {
            return Ok(None);
        };
        if m.done_ms != 0 {
            return Ok(None);
        }
        let restore = pb::RestoreRequest {
            name: w.id.clone(),
            store: Some(self.backup_store(w).await?),
            id: m.backup_id.clone(),
            id_base: m.id_base,
            bytes: m.bytes,
        };
        Ok(Some((m, restore)))
    }

    /// After the create of `w` that restored move `m` succeeded: the move
    /// is done, and the copy on the node it left is deleted, now or when
    /// that node is back.
    pub(super) async fn moved(&self, w: &WorkspaceRow, m: &MoveRow) {
        match self.inner.store.finish_move(&w.id, self.now()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(workspace = %w.id, error = %e, "move not recorded as done");
                return;
            }
        }
        tracing::info!(workspace = %w.id, from = %m.from_node, to = ?w.node, backup = %m.backup_id, "moved");
        self.announce(
            &w.id,
            format!(
                "moved: from node {} to {}, restored from backup {}",
                m.from_node,
                w.node.as_deref().unwrap_or("?"),
                m.backup_id
            ),
        )
        .await;
        if self.inner.link.is_connected(&m.from_node) {
            self.delete_stale_copy(&m.from_node, w).await;
        }
    }

    /// Deletes the copy of deleted workspace `w` on the node a move took it
    /// from, if that node is connected (else its reconnection does it).
    pub(super) async fn delete_moved_copy(&self, w: &WorkspaceRow) {
        if let Ok(Some(m)) = self.inner.store.move_of(&w.id).await {
            if w.node.as_deref() != Some(&m.from_node) && self.inner.link.is_connected(&m.from_node)
            {
                self.delete_stale_copy(&m.from_node, w).await;
            }
        }
    }

    /// Whether `node`'s copy of workspace `w` is one a finished move left.
    pub(super) async fn is_stale_copy(&self, node: &str, w: &WorkspaceRow) -> bool {
        w.node.as_deref() != Some(node)
            && matches!(
                self.inner.store.move_of(&w.id).await,
                Ok(Some(m)) if m.from_node == node && m.done_ms != 0
            )
    }

    /// Deletes the copy of `w` a move left on `node` (its data is in the
    /// backup the new copy was made from, and the new copy runs).
    pub(super) async fn delete_stale_copy(&self, node: &str, w: &WorkspaceRow) {
        let cmd = pb::request::Command::Delete(pb::NameRequest {
            name: w.id.clone(),
            generation: w.generation,
        });
        match self
            .inner
            .link
            .call(node, cmd, self.inner.timing.command_timeout)
            .await
        {
            Ok(pb::response::Result::Status(_)) => {
                tracing::info!(workspace = %w.id, %node, "stale copy left by a move deleted")
            }
            other => {
                tracing::warn!(workspace = %w.id, %node, answer = ?other, "stale copy not deleted")
            }
        }
    }
}

/// What the move and delete decisions read of a confirmed backup.
pub(super) fn newest_of(b: &BackupRow) -> Newest {
    Newest {
        generation: b.generation,
        stopped: matches!(b.backup.consistency.as_str(), "stopped" | "fenced"),
        fenced: b.backup.consistency == "fenced",
        taken_at_ms: b.backup.taken_at_ms,
    }
}

/// "restoring backup 1a2b3c4d (1.2 MiB, taken ...)".
fn restoring(b: &BackupRow) -> String {
    format!(
        "restoring backup {} ({:.1} MiB, taken {})",
        &b.backup.id[..b.backup.id.len().min(8)],
        b.backup.bytes_total as f64 / f64::from(1u32 << 20),
        rfc3339(b.backup.taken_at_ms),
    )
}

/// Unix ms as RFC 3339 (UTC, to the second).
pub(super) fn rfc3339(ms: i64) -> String {
    berth_proto::units::rfc3339(ms.div_euclid(1000))
}
