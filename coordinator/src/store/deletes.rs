//! Deletes waiting for a workspace's final backup.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

impl Store {
    /// Records that workspace `id` is to be deleted once backed up; a
    /// repeated request keeps the first time.
    pub async fn request_delete(&self, id: &str, at_ms: i64) -> Result<i64> {
        sqlx::query(
            "INSERT INTO deletes (workspace_id, requested_ms) VALUES ($1, $2) ON CONFLICT (workspace_id) DO NOTHING",
        )
        .bind(id)
        .bind(at_ms)
        .audited(self)
        .await?;
        Ok(self.delete_requested(id).await?.unwrap_or(at_ms))
    }

    /// When workspace `id`'s delete was requested, if it waits.
    pub async fn delete_requested(&self, id: &str) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT requested_ms FROM deletes WHERE workspace_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("requested_ms")).transpose()?)
    }

    /// The workspaces whose delete waits.
    pub async fn waiting_deletes(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT workspace_id FROM deletes ORDER BY requested_ms")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("workspace_id"))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Forgets workspace `id`'s waiting delete (done, or no longer waits).
    pub async fn forget_delete(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM deletes WHERE workspace_id = $1")
            .bind(id)
            .audited(self)
            .await?;
        Ok(())
    }
}
