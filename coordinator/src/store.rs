//! The desired state in SQL (sqlx, one code path for SQLite and PostgreSQL).
//!
//! SQLite is the default: a file in the data directory in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a power cut.
//! PostgreSQL (by URL) lets several coordinators share the state.
//!
//! Writes that race between coordinators are compare-and-set on a row
//! version (`UPDATE ... WHERE id = $1 AND version = $2`) and guarded
//! increments (`... WHERE alloc + need <= cap`): correctness never rests on
//! the isolation level.

use crate::error::{Error, Result};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use std::collections::BTreeMap;
use std::time::Duration;

pub mod audit;
mod backups;
mod deletes;
mod git_credentials;
mod holds;
mod moves;
mod nodes;
mod ports;
mod prebuilds;
mod quotas;
mod reviews;
pub mod secrets;
mod settings;
mod ssh_keys;
mod teams;
mod tokens;
mod usage;
mod workspaces;

pub use audit::{AuditFilter, Scope};
pub use backups::{BackupRow, BackupStateRow};
pub use git_credentials::GitCredentialRow;
pub use holds::{Repair, NO_ROOM};
pub use moves::MoveRow;
pub use prebuilds::PrebuildRow;
pub use quotas::{Subject, QUOTA_EXCEEDED};
pub use reviews::ReviewRow;
pub use ssh_keys::SshKeyRow;
pub use tokens::Principal;
pub use usage::{CapacitySample, UsageSample, UsageSum};
pub use workspaces::{Decision, WorkspaceFilter};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The coordinator's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`:
    /// `sqlite:///path/to/file` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::invalid(
                "bad_database_url",
                format!("database URL must start with sqlite: or postgres://, not {url:?}"),
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            opts = opts.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL with FULL sync: every commit is fsync'd before it is acknowledged.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(16);
        }
        let pool = opts.connect(&url).await.map_err(|e| {
            Error::unavailable("store_unavailable", format!("cannot open the store: {e}"))
        })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::internal(format!("migrating the store: {e}")))?;
        Ok(Self { pool, backend })
    }

    /// The pool, for tests that inspect rows.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
