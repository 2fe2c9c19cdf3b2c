//! Confirmed backups and each workspace's backup state.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use berth_proto::api::Backup;
use sqlx::Row;

/// A workspace's repository, its sealed key, and its failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStateRow {
    pub workspace_id: String,
    pub repository: String,
    pub sealed_key: String,
    pub failures: u32,
    pub last_error: String,
    pub last_attempt_ms: i64,
    /// Its backups leave out what its .gitignore files ignore.
    pub exclude_ignored: bool,
    /// When its backups were last pruned (0: never).
    pub pruned_ms: i64,
}

/// One confirmed backup, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    pub workspace_id: String,
    pub backup: Backup,
    pub id_base: u32,
    /// The workspace's generation (intent) when the backup started.
    pub generation: u64,
}

const COLUMNS: &str = "workspace_id, id, node, taken_at_ms, bytes_added, bytes_total, files, consistency, pause_ms, duration_ms, id_base, paths, generation, bytes_excluded";

fn row(r: &sqlx::any::AnyRow) -> Result<BackupRow> {
    let n = |k: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(k)?.max(0) as u64) };
    Ok(BackupRow {
        workspace_id: r.try_get("workspace_id")?,
        backup: Backup {
            id: r.try_get("id")?,
            taken_at_ms: r.try_get("taken_at_ms")?,
            node: r.try_get("node")?,
            bytes_added: n("bytes_added")?,
            bytes_total: n("bytes_total")?,
            files: n("files")?,
            consistency: r.try_get("consistency")?,
            pause_ms: n("pause_ms")?.min(u32::MAX.into()) as u32,
            duration_ms: n("duration_ms")?,
            paths: serde_json::from_str(&r.try_get::<String, _>("paths")?).unwrap_or_default(),
            bytes_excluded: n("bytes_excluded")?,
        },
        id_base: n("id_base")?.min(u32::MAX.into()) as u32,
        generation: n("generation")?,
    })
}

impl Store {
    /// Workspace `id`'s backup state, if it was ever backed up or tried.
    pub async fn backup_state(&self, id: &str) -> Result<Option<BackupStateRow>> {
        let r = sqlx::query("SELECT workspace_id, repository, sealed_key, failures, last_error, last_attempt_ms, exclude_ignored, pruned_ms FROM backup_state WHERE workspace_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| {
            Ok(BackupStateRow {
                workspace_id: r.try_get("workspace_id")?,
                repository: r.try_get("repository")?,
                sealed_key: r.try_get("sealed_key")?,
                failures: r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX.into()) as u32,
                last_error: r.try_get("last_error")?,
                last_attempt_ms: r.try_get("last_attempt_ms")?,
                exclude_ignored: r.try_get::<i64, _>("exclude_ignored")? != 0,
                pruned_ms: r.try_get("pruned_ms")?,
            })
        })
        .transpose()
    }

    /// Records a workspace's repository and key, unless it has them: the
    /// first writer wins, and every caller gets the stored row.
    pub async fn init_backup_state(&self, s: &BackupStateRow) -> Result<BackupStateRow> {
        sqlx::query("INSERT INTO backup_state (workspace_id, repository, sealed_key, pruned_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id) DO NOTHING")
            .bind(&s.workspace_id)
            .bind(&s.repository)
            .bind(&s.sealed_key)
            .bind(s.pruned_ms)
            .audited(self)
            .await?;
        self.backup_state(&s.workspace_id)
            .await?
            .ok_or_else(|| crate::error::Error::internal("backup state vanished"))
    }

    /// Sets whether workspace `id`'s backups leave out what it ignores.
    pub async fn set_exclude_ignored(&self, id: &str, on: bool) -> Result<()> {
        sqlx::query("UPDATE backup_state SET exclude_ignored = $2 WHERE workspace_id = $1")
            .bind(id)
            .bind(i64::from(on))
            .audited(self)
            .await?;
        Ok(())
    }

    /// Records a prune of workspace `id`'s backups at `at_ms` that kept
    /// `kept` (restic's full ids; the store's are their prefixes): the
    /// others are forgotten.
    pub async fn pruned(&self, id: &str, kept: &[String], at_ms: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query("SELECT id FROM backups WHERE workspace_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        let mut gone = 0;
        for b in ids
            .iter()
            .filter(|b| !kept.iter().any(|k| k.starts_with(b.as_str())))
        {
            gone += sqlx::query("DELETE FROM backups WHERE workspace_id = $1 AND id = $2")
                .bind(id)
                .bind(b)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query("UPDATE backup_state SET pruned_ms = $2 WHERE workspace_id = $1")
            .bind(id)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(gone)
    }

    /// Forgets everything of deleted workspace `id`'s backups (they were
    /// dropped from its store).
    pub async fn forget_backups(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["backups", "backup_state", "moves"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workspace_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Notes an attempt's failure.
    pub async fn backup_failed(&self, id: &str, error: &str, at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE backup_state SET failures = failures + 1, last_error = $2, last_attempt_ms = $3 WHERE workspace_id = $1")
            .bind(id)
            .bind(error)
            .bind(at_ms)
            .audited(self)
            .await?;
        Ok(())
    }

    /// Records a confirmed backup and clears the failures, in one transaction.
    pub async fn add_backup(&self, b: &BackupRow, attempt_ms: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let x = &b.backup;
        sqlx::query(&format!("INSERT INTO backups ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"))
            .bind(&b.workspace_id)
            .bind(&x.id)
            .bind(&x.node)
            .bind(x.taken_at_ms)
            .bind(x.bytes_added.min(i64::MAX as u64) as i64)
            .bind(x.bytes_total.min(i64::MAX as u64) as i64)
            .bind(x.files.min(i64::MAX as u64) as i64)
            .bind(&x.consistency)
            .bind(i64::from(x.pause_ms))
            .bind(x.duration_ms.min(i64::MAX as u64) as i64)
            .bind(i64::from(b.id_base))
            .bind(serde_json::to_string(&x.paths).unwrap_or_else(|_| "[]".into()))
            .bind(b.generation.min(i64::MAX as u64) as i64)
            .bind(x.bytes_excluded.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE backup_state SET failures = 0, last_error = '', last_attempt_ms = $2 WHERE workspace_id = $1")
            .bind(&b.workspace_id)
            .bind(attempt_ms)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Workspace `id`'s confirmed backups, newest first.
    pub async fn backups(&self, id: &str) -> Result<Vec<BackupRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM backups WHERE workspace_id = $1 ORDER BY taken_at_ms DESC, id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// Workspace `id`'s newest confirmed backup, and how many it has.
    pub async fn newest_backup(&self, id: &str) -> Result<(Option<BackupRow>, usize)> {
        let newest = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM backups WHERE workspace_id = $1 ORDER BY taken_at_ms DESC, id LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM backups WHERE workspace_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((newest.as_ref().map(row).transpose()?, count.max(0) as usize))
    }

    /// When each workspace's newest confirmed backup was taken, with its
    /// backup state's failures and last attempt.
    pub async fn backup_facts(
        &self,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, u32, i64)>> {
        let rows = sqlx::query(
            "SELECT s.workspace_id AS id, (SELECT MAX(taken_at_ms) FROM backups b WHERE b.workspace_id = s.workspace_id) AS last, s.failures AS failures, s.last_attempt_ms AS attempt FROM backup_state s",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("id")?,
                    (
                        r.try_get::<Option<i64>, _>("last")?,
                        r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX.into()) as u32,
                        r.try_get::<i64, _>("attempt")?,
                    ),
                ))
            })
            .collect()
    }
}
