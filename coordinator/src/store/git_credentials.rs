//! Users' git credentials, one per host, their tokens sealed
//! (`crate::secrets`): the store never holds a token in the clear.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

/// A stored credential, its token still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCredentialRow {
    pub owner: String,
    pub host: String,
    pub username: String,
    pub sealed: String,
    pub created_at_ms: i64,
}

impl Store {
    /// Adds or replaces `owner`'s credential for its host.
    pub async fn put_git_credential(&self, c: &GitCredentialRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM git_credentials WHERE owner = $1 AND host = $2")
            .bind(&c.owner)
            .bind(&c.host)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO git_credentials (owner, host, username, sealed, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(&c.owner)
            .bind(&c.host)
            .bind(&c.username)
            .bind(&c.sealed)
            .bind(c.created_at_ms)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// `owner`'s credentials, by host.
    pub async fn git_credentials(&self, owner: &str) -> Result<Vec<GitCredentialRow>> {
        let rows = sqlx::query("SELECT owner, host, username, sealed, created_at_ms FROM git_credentials WHERE owner = $1 ORDER BY host")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GitCredentialRow {
                    owner: r.try_get("owner")?,
                    host: r.try_get("host")?,
                    username: r.try_get("username")?,
                    sealed: r.try_get("sealed")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Removes `owner`'s credential for `host`; false if there was none.
    pub async fn delete_git_credential(&self, owner: &str, host: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM git_credentials WHERE owner = $1 AND host = $2")
            .bind(owner)
            .bind(host)
            .audited(self)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// The store's secrets check value, set to `made` if it has none yet
    /// (whoever sets it first wins); returns the value that holds.
    pub async fn secrets_check_or_init(&self, made: &str) -> Result<String> {
        let insert = match self.backend {
            super::Backend::Sqlite => {
                "INSERT OR IGNORE INTO secrets_check (id, sealed) VALUES (1, $1)"
            }
            super::Backend::Postgres => {
                "INSERT INTO secrets_check (id, sealed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING"
            }
        };
        sqlx::query(insert).bind(made).audited(self).await?;
        let r = sqlx::query("SELECT sealed FROM secrets_check WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("sealed")?)
    }
}
