//! Quotas: users' limits, and the check a create or start makes in its own
//! transaction with the owner's lock row held, so two at once cannot both
//! take the last unit.

use super::audit::Audited;
use super::Store;
use crate::domain::lifecycle::{Desired, State};
use crate::domain::quota::{self, Limits, Usage};
use crate::domain::scheduler::Resources;
use crate::error::{Error, Result};
use sqlx::{Any, Row, Transaction};

/// The code of a refusal by a quota.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

fn u(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

fn i(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The limits an admin set for `user` (None each where the default holds).
async fn override_of<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    user: &str,
) -> Result<Limits> {
    let r = sqlx::query(
        "SELECT running, workspaces, cpu_millis, memory_bytes, disk_bytes, monthly_budget \
         FROM quotas WHERE user_name = $1",
    )
    .bind(user)
    .fetch_optional(ex)
    .await?;
    Ok(match r {
        None => Limits::default(),
        Some(r) => Limits {
            running: u(r.try_get(0)?),
            workspaces: u(r.try_get(1)?),
            cpu_millis: u(r.try_get(2)?),
            memory_bytes: u(r.try_get(3)?),
            disk_bytes: u(r.try_get(4)?),
            monthly_budget: r.try_get(5)?,
        },
    })
}

/// What `user`'s workspaces other than `except` count.
async fn usage_of<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    user: &str,
    except: &str,
) -> Result<Usage> {
    let rows = sqlx::query(
        "SELECT state, desired, cpu_millis, memory_bytes, disk_bytes FROM workspaces \
         WHERE owner = $1 AND state <> 'deleted' AND id <> $2",
    )
    .bind(user)
    .bind(except)
    .fetch_all(ex)
    .await?;
    let mut total = Usage::default();
    for r in rows {
        let (state, desired): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let (Some(state), Some(desired)) = (State::parse(&state), Desired::parse(&desired)) else {
            continue;
        };
        let g = |i: usize| r.try_get::<i64, _>(i).map(|v| v.max(0) as u64);
        let res = Resources {
            cpu_millis: g(2)?,
            memory_bytes: g(3)?,
            disk_bytes: g(4)?,
        };
        total = total.plus(quota::uses(state, desired, res));
    }
    Ok(total)
}

/// What `user`'s running workspaces cost since `since_ms`.
async fn spent_since<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    user: &str,
    since_ms: i64,
) -> Result<f64> {
    let r = sqlx::query("SELECT SUM(cost) FROM usage_hours WHERE owner = $1 AND hour_ms >= $2")
        .bind(user)
        .bind(since_ms)
        .fetch_one(ex)
        .await?;
    Ok(r.try_get::<Option<f64>, _>(0)?.unwrap_or(0.0))
}

/// A change of workspace `id` of `owner` from counting `prev` to `next`,
/// checked against the owner's limits (`defaults` overridden by theirs).
#[derive(Debug, Clone, Copy)]
pub(super) struct Check<'a> {
    pub owner: &'a str,
    pub id: &'a str,
    pub prev: Usage,
    pub next: Usage,
    pub defaults: &'a Limits,
    pub now_ms: i64,
}

/// Refuses the change in `tx` if it grows past a limit. Takes the owner's
/// lock row before counting: a concurrent create or start of the same
/// owner waits for this transaction and then counts what it added. The
/// transaction must have written already (SQLite: it holds the write lock).
pub(super) async fn check(tx: &mut Transaction<'static, Any>, c: Check<'_>) -> Result<()> {
    if !c.next.grows_from(&c.prev) {
        return Ok(());
    }
    // Without limits for this owner, no lock: creates stay as cheap as before.
    let limits = c
        .defaults
        .overridden_by(override_of(&mut **tx, c.owner).await?);
    if limits == Limits::default() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO quota_locks (user_name, n) VALUES ($1, 1) \
         ON CONFLICT (user_name) DO UPDATE SET n = quota_locks.n + 1",
    )
    .bind(c.owner)
    .execute(&mut **tx)
    .await?;
    // Read again under the lock: an admin may have just changed them.
    let limits = c
        .defaults
        .overridden_by(override_of(&mut **tx, c.owner).await?);
    let others = usage_of(&mut **tx, c.owner, c.id).await?;
    let (before, after) = (others.plus(c.prev), others.plus(c.next));
    let mut why = quota::exceeded(&limits, &before, &after);
    if why.is_none() && c.next.running > c.prev.running && limits.monthly_budget.is_some() {
        let spent = spent_since(&mut **tx, c.owner, quota::month_start_ms(c.now_ms)).await?;
        why = quota::over_budget(&limits, spent);
    }
    match why {
        None => Ok(()),
        Some(why) => Err(
            Error::forbidden(format!("{}'s quota is reached: {why}", c.owner))
                .with_code(QUOTA_EXCEEDED),
        ),
    }
}

impl Store {
    /// The limits an admin set for `user` (None each where the default holds).
    pub async fn quota_override(&self, user: &str) -> Result<Limits> {
        override_of(&self.pool, user).await
    }

    /// Sets `user`'s limits (None each: the default).
    pub async fn set_quota(&self, user: &str, l: &Limits) -> Result<()> {
        sqlx::query(
            "INSERT INTO quotas (user_name, running, workspaces, cpu_millis, memory_bytes, disk_bytes, monthly_budget) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_name) DO UPDATE SET \
             running = excluded.running, workspaces = excluded.workspaces, cpu_millis = excluded.cpu_millis, \
             memory_bytes = excluded.memory_bytes, disk_bytes = excluded.disk_bytes, \
             monthly_budget = excluded.monthly_budget",
        )
        .bind(user)
        .bind(i(l.running))
        .bind(i(l.workspaces))
        .bind(i(l.cpu_millis))
        .bind(i(l.memory_bytes))
        .bind(i(l.disk_bytes))
        .bind(l.monthly_budget)
        .audited(self)
        .await?;
        Ok(())
    }

    /// What `user`'s workspaces count, and what their running cost since
    /// `since_ms`.
    pub async fn quota_usage(&self, user: &str, since_ms: i64) -> Result<(Usage, f64)> {
        Ok((
            usage_of(&self.pool, user, "").await?,
            spent_since(&self.pool, user, since_ms).await?,
        ))
    }
}
