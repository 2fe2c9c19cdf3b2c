//! Prebuilds: one row per build, its layer's key and node once ready.

use super::{to_i64, Store};
use crate::error::Result;
use sqlx::Row;

/// A prebuild as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrebuildRow {
    pub id: String,
    pub repo_url: String,
    pub branch: String,
    /// queued, building, ready, failed, superseded or expired.
    pub state: String,
    /// The build's image and tier ("": the defaults).
    pub image: String,
    pub tier: String,
    pub key: String,
    pub commit: String,
    pub config_hash: String,
    pub folder: String,
    pub node: String,
    pub bytes: u64,
    pub files: u64,
    pub error_code: String,
    pub error: String,
    /// The build's steps (JSON of `api::InitStep`s).
    pub steps: String,
    pub requested_by: String,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
    /// Where other nodes pull its layer (REPOSITORY@sha256:DIGEST), once pushed.
    pub source: String,
}

const COLUMNS: &str =
    "id, repo_url, branch, state, image, tier, pkey, commit_sha, config_hash, folder, node, \
    bytes, files, error_code, error, steps, requested_by, created_at_ms, finished_at_ms, source";

fn row(r: &sqlx::any::AnyRow) -> Result<PrebuildRow> {
    Ok(PrebuildRow {
        id: r.try_get("id")?,
        repo_url: r.try_get("repo_url")?,
        branch: r.try_get("branch")?,
        state: r.try_get("state")?,
        image: r.try_get("image")?,
        tier: r.try_get("tier")?,
        key: r.try_get("pkey")?,
        commit: r.try_get("commit_sha")?,
        config_hash: r.try_get("config_hash")?,
        folder: r.try_get("folder")?,
        node: r.try_get("node")?,
        bytes: r.try_get::<i64, _>("bytes")?.max(0) as u64,
        files: r.try_get::<i64, _>("files")?.max(0) as u64,
        error_code: r.try_get("error_code")?,
        error: r.try_get("error")?,
        steps: r.try_get("steps")?,
        requested_by: r.try_get("requested_by")?,
        created_at_ms: r.try_get("created_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
        source: r.try_get("source")?,
    })
}

impl Store {
    /// Records a prebuild (a new build, or its outcome).
    pub async fn put_prebuild(&self, p: &PrebuildRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM prebuilds WHERE id = $1")
            .bind(&p.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO prebuilds ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        ))
        .bind(&p.id)
        .bind(&p.repo_url)
        .bind(&p.branch)
        .bind(&p.state)
        .bind(&p.image)
        .bind(&p.tier)
        .bind(&p.key)
        .bind(&p.commit)
        .bind(&p.config_hash)
        .bind(&p.folder)
        .bind(&p.node)
        .bind(to_i64(p.bytes))
        .bind(to_i64(p.files))
        .bind(&p.error_code)
        .bind(&p.error)
        .bind(&p.steps)
        .bind(&p.requested_by)
        .bind(p.created_at_ms)
        .bind(p.finished_at_ms)
        .bind(&p.source)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn prebuild(&self, id: &str) -> Result<Option<PrebuildRow>> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM prebuilds WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Prebuilds, newest first; of one repository if `repo_url` is given.
    pub async fn prebuilds(&self, repo_url: Option<&str>) -> Result<Vec<PrebuildRow>> {
        let rows = match repo_url {
            Some(u) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM prebuilds WHERE repo_url = $1 ORDER BY created_at_ms DESC, id"
                ))
                .bind(u)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM prebuilds ORDER BY created_at_ms DESC, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(row).collect()
    }

    /// Ready prebuilds of a repository, all branches, newest first.
    pub async fn ready_prebuilds_of(&self, repo_url: &str) -> Result<Vec<PrebuildRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM prebuilds WHERE repo_url = $1 AND state = 'ready' \
             ORDER BY finished_at_ms DESC, id"
        ))
        .bind(repo_url)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// Ready prebuilds of a repository's branch, newest first.
    pub async fn ready_prebuilds(&self, repo_url: &str, branch: &str) -> Result<Vec<PrebuildRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM prebuilds WHERE repo_url = $1 AND branch = $2 AND state = 'ready' \
             ORDER BY finished_at_ms DESC, id"
        ))
        .bind(repo_url)
        .bind(branch)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }
}
