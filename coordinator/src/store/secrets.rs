//! Users' and teams' secrets, their values sealed (`crate::secrets`): the
//! store never holds one in the clear.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

/// A stored secret, its value still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// `user:<name>` or `team:<name>`.
    pub scope: String,
    pub name: String,
    pub sealed: String,
    pub file: bool,
    pub prebuild: bool,
    pub bytes: i64,
    pub version: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

const COLUMNS: &str =
    "scope, name, sealed, as_file, prebuild, bytes, version, updated_at_ms, updated_by";

impl Store {
    /// Adds or replaces a secret (its version one more than the one it
    /// replaces), unless its scope already holds `max` others: false then.
    /// One statement, so two adds at once cannot both pass the limit.
    pub async fn put_secret(&self, s: &SecretRow, max: i64) -> Result<bool> {
        let n = sqlx::query(&format!(
            "INSERT INTO secrets ({COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, 1, $7, $8 \
             WHERE (SELECT COUNT(*) FROM secrets WHERE scope = $1 AND name <> $2) < $9 \
             ON CONFLICT (scope, name) DO UPDATE SET sealed = excluded.sealed, \
             as_file = excluded.as_file, prebuild = excluded.prebuild, bytes = excluded.bytes, \
             version = secrets.version + 1, updated_at_ms = excluded.updated_at_ms, \
             updated_by = excluded.updated_by"
        ))
        .bind(&s.scope)
        .bind(&s.name)
        .bind(&s.sealed)
        .bind(i64::from(s.file))
        .bind(i64::from(s.prebuild))
        .bind(s.bytes)
        .bind(s.updated_at_ms)
        .bind(&s.updated_by)
        .bind(max)
        .audited(self)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The secrets of `scopes`, by scope and name.
    pub async fn secrets(&self, scopes: &[String]) -> Result<Vec<SecretRow>> {
        let mut out = Vec::new();
        for scope in scopes {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM secrets WHERE scope = $1 ORDER BY name"
            ))
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(SecretRow {
                    scope: r.try_get("scope")?,
                    name: r.try_get("name")?,
                    sealed: r.try_get("sealed")?,
                    file: r.try_get::<i64, _>("as_file")? != 0,
                    prebuild: r.try_get::<i64, _>("prebuild")? != 0,
                    bytes: r.try_get("bytes")?,
                    version: r.try_get("version")?,
                    updated_at_ms: r.try_get("updated_at_ms")?,
                    updated_by: r.try_get("updated_by")?,
                });
            }
        }
        Ok(out)
    }

    /// Removes a secret; false if there was none.
    pub async fn delete_secret(&self, scope: &str, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM secrets WHERE scope = $1 AND name = $2")
            .bind(scope)
            .bind(name)
            .audited(self)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}
