//! Workspaces moved to another node from a backup (docs/backups.md).

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

/// A workspace's latest move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRow {
    pub workspace_id: String,
    /// The backup the new node restores, the id base it was taken at, and
    /// the bytes it covers.
    pub backup_id: String,
    pub id_base: u32,
    pub bytes: u64,
    pub from_node: String,
    /// Why it moved, as shown.
    pub why: String,
    pub requested_ms: i64,
    /// When the create on the new node succeeded; 0 until then.
    pub done_ms: i64,
}

impl Store {
    /// Records a move of a workspace (replacing an earlier one).
    pub async fn set_move(&self, m: &MoveRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO moves (workspace_id, backup_id, id_base, bytes, from_node, why, requested_ms, done_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0) \
             ON CONFLICT (workspace_id) DO UPDATE SET backup_id = excluded.backup_id, id_base = excluded.id_base, \
             bytes = excluded.bytes, from_node = excluded.from_node, why = excluded.why, \
             requested_ms = excluded.requested_ms, done_ms = 0",
        )
        .bind(&m.workspace_id)
        .bind(&m.backup_id)
        .bind(i64::from(m.id_base))
        .bind(m.bytes.min(i64::MAX as u64) as i64)
        .bind(&m.from_node)
        .bind(&m.why)
        .bind(m.requested_ms)
        .audited(self)
        .await?;
        Ok(())
    }

    /// Workspace `id`'s latest move, done or not.
    pub async fn move_of(&self, id: &str) -> Result<Option<MoveRow>> {
        let r = sqlx::query("SELECT workspace_id, backup_id, id_base, bytes, from_node, why, requested_ms, done_ms FROM moves WHERE workspace_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| {
            Ok(MoveRow {
                workspace_id: r.try_get("workspace_id")?,
                backup_id: r.try_get("backup_id")?,
                id_base: r.try_get::<i64, _>("id_base")?.clamp(0, u32::MAX.into()) as u32,
                bytes: r.try_get::<i64, _>("bytes")?.max(0) as u64,
                from_node: r.try_get("from_node")?,
                why: r.try_get("why")?,
                requested_ms: r.try_get("requested_ms")?,
                done_ms: r.try_get("done_ms")?,
            })
        })
        .transpose()
    }

    /// Marks workspace `id`'s move done; false if it had no move pending.
    pub async fn finish_move(&self, id: &str, at_ms: i64) -> Result<bool> {
        let r =
            sqlx::query("UPDATE moves SET done_ms = $2 WHERE workspace_id = $1 AND done_ms = 0")
                .bind(id)
                .bind(at_ms)
                .audited(self)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Forgets a move that did not happen (its request was refused).
    pub async fn drop_move(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM moves WHERE workspace_id = $1 AND done_ms = 0")
            .bind(id)
            .audited(self)
            .await?;
        Ok(())
    }
}
