//! Users' SSH public keys.

use super::audit::Audited;
use super::Store;
use crate::error::{Error, Result};
use sqlx::Row;

/// A user's SSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRow {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at_ms: i64,
}

impl Store {
    /// Adds a user's SSH key; the same key twice for one user is `ssh_key_exists`.
    pub async fn add_ssh_key(&self, k: &SshKeyRow) -> Result<()> {
        let r = sqlx::query("INSERT INTO ssh_keys (id, owner, name, public_key, fingerprint, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&k.id)
            .bind(&k.owner)
            .bind(&k.name)
            .bind(&k.public_key)
            .bind(&k.fingerprint)
            .bind(k.created_at_ms)
            .audited(self)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                "ssh_key_exists",
                format!("{} already has the key {}", k.owner, k.fingerprint),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A user's SSH keys, oldest first.
    pub async fn ssh_keys(&self, owner: &str) -> Result<Vec<SshKeyRow>> {
        let rows = sqlx::query("SELECT id, owner, name, public_key, fingerprint, created_at_ms FROM ssh_keys WHERE owner = $1 ORDER BY created_at_ms, id")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SshKeyRow {
                    id: r.try_get("id")?,
                    owner: r.try_get("owner")?,
                    name: r.try_get("name")?,
                    public_key: r.try_get("public_key")?,
                    fingerprint: r.try_get("fingerprint")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Removes one of `owner`'s keys, by id or fingerprint; false if none matched.
    pub async fn delete_ssh_key(&self, owner: &str, key: &str) -> Result<bool> {
        let n =
            sqlx::query("DELETE FROM ssh_keys WHERE owner = $1 AND (id = $2 OR fingerprint = $2)")
                .bind(owner)
                .bind(key)
                .audited(self)
                .await?
                .rows_affected();
        Ok(n > 0)
    }
}
