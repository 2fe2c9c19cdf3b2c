//! Review requests (`domain::review`).

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

/// A review request, with its workspace's owner and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRow {
    pub id: String,
    pub workspace_id: String,
    pub owner: String,
    pub name: String,
    pub note: String,
    pub priority: String,
    pub state: String,
    pub requested_by: String,
    pub reviewer: String,
    pub comment: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const SELECT: &str = "SELECT r.id, r.workspace_id, w.owner, w.name, r.note, r.priority, r.state, \
    r.requested_by, r.reviewer, r.comment, r.created_at_ms, r.updated_at_ms \
    FROM reviews r JOIN workspaces w ON w.id = r.workspace_id WHERE w.state <> 'deleted'";

fn row(r: &sqlx::any::AnyRow) -> Result<ReviewRow> {
    Ok(ReviewRow {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        owner: r.try_get(2)?,
        name: r.try_get(3)?,
        note: r.try_get(4)?,
        priority: r.try_get(5)?,
        state: r.try_get(6)?,
        requested_by: r.try_get(7)?,
        reviewer: r.try_get(8)?,
        comment: r.try_get(9)?,
        created_at_ms: r.try_get(10)?,
        updated_at_ms: r.try_get(11)?,
    })
}

impl Store {
    /// Adds a pending review of its workspace unless the workspace has an
    /// open one (false then): one statement, so two submits cannot both pass.
    pub async fn put_review(&self, r: &ReviewRow) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO reviews (id, workspace_id, note, priority, state, requested_by, reviewer, \
             comment, created_at_ms, updated_at_ms) \
             SELECT $1, $2, $3, $4, 'pending', $5, '', '', $6, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM reviews WHERE workspace_id = $2 \
             AND state IN ('pending', 'in_review', 'changes_requested'))",
        )
        .bind(&r.id)
        .bind(&r.workspace_id)
        .bind(&r.note)
        .bind(&r.priority)
        .bind(&r.requested_by)
        .bind(r.created_at_ms)
        .audited(self)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Every review of a workspace that is not deleted, newest first (at most 1000).
    pub async fn reviews(&self) -> Result<Vec<ReviewRow>> {
        let rows = sqlx::query(&format!(
            "{SELECT} ORDER BY r.created_at_ms DESC LIMIT 1000"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// One review.
    pub async fn review(&self, id: &str) -> Result<Option<ReviewRow>> {
        let r = sqlx::query(&format!("{SELECT} AND r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Moves a review from `from` to `to` (by `reviewer`, with `comment`,
    /// each kept when `None`); false if it was no longer in `from`.
    pub async fn step_review(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reviewer: Option<&str>,
        comment: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE reviews SET state = $3, reviewer = COALESCE($4, reviewer), \
             comment = COALESCE($5, comment), updated_at_ms = $6 WHERE id = $1 AND state = $2",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(reviewer)
        .bind(comment)
        .bind(now)
        .audited(self)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
