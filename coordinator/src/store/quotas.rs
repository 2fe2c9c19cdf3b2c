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

/// The limits an admin set under `key` (None each where the default holds).
async fn override_of<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    key: &str,
) -> Result<Limits> {
    let r = sqlx::query(
        "SELECT running, workspaces, cpu_millis, memory_bytes, disk_bytes, monthly_budget \
         FROM quotas WHERE user_name = $1",
    )
    .bind(key)
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

/// Whose limits: a user's (their workspaces) or a team's (its workspaces,
/// whoever owns them). A team's limits are kept under `team:<name>`, which
/// no user name can be.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    User(&'a str),
    Team(&'a str),
}

impl Subject<'_> {
    /// Its key in `quotas` and `quota_locks`.
    fn key(&self) -> String {
        match self {
            Subject::User(u) => u.to_string(),
            Subject::Team(t) => format!("team:{t}"),
        }
    }

    /// The column of `workspaces` and `usage_hours` that selects its own.
    fn column(&self) -> &'static str {
        match self {
            Subject::User(_) => "owner",
            Subject::Team(_) => "team",
        }
    }

    fn name(&self) -> &str {
        match self {
            Subject::User(n) | Subject::Team(n) => n,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::User(u) => format!("{u}'s quota"),
            Subject::Team(t) => format!("team {t}'s quota"),
        }
    }
}

/// What `who`'s workspaces other than `except` count.
async fn usage_of<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    who: Subject<'_>,
    except: &str,
) -> Result<Usage> {
    let q = format!(
        "SELECT state, desired, cpu_millis, memory_bytes, disk_bytes FROM workspaces \
         WHERE {} = $1 AND state <> 'deleted' AND id <> $2",
        who.column()
    );
    let rows = sqlx::query(&q)
        .bind(who.name())
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

/// What `who`'s running workspaces cost since `since_ms`.
async fn spent_since<'e, E: sqlx::Executor<'e, Database = Any>>(
    ex: E,
    who: Subject<'_>,
    since_ms: i64,
) -> Result<f64> {
    let q = format!(
        "SELECT SUM(cost) FROM usage_hours WHERE {} = $1 AND hour_ms >= $2",
        who.column()
    );
    let r = sqlx::query(&q)
        .bind(who.name())
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
    /// The workspace's team ("" for none): its limits hold too.
    pub team: &'a str,
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
    check_of(tx, Subject::User(c.owner), c.defaults, &c).await?;
    if !c.team.is_empty() {
        check_of(tx, Subject::Team(c.team), &Limits::default(), &c).await?;
    }
    Ok(())
}

/// `check` for one subject's limits (`defaults` overridden by its own).
async fn check_of(
    tx: &mut Transaction<'static, Any>,
    who: Subject<'_>,
    defaults: &Limits,
    c: &Check<'_>,
) -> Result<()> {
    let key = who.key();
    // Without limits, no lock: creates stay as cheap as before.
    let limits = defaults.overridden_by(override_of(&mut **tx, &key).await?);
    if limits == Limits::default() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO quota_locks (user_name, n) VALUES ($1, 1) \
         ON CONFLICT (user_name) DO UPDATE SET n = quota_locks.n + 1",
    )
    .bind(&key)
    .execute(&mut **tx)
    .await?;
    // Read again under the lock: an admin may have just changed them.
    let limits = defaults.overridden_by(override_of(&mut **tx, &key).await?);
    let others = usage_of(&mut **tx, who, c.id).await?;
    let (before, after) = (others.plus(c.prev), others.plus(c.next));
    let mut why = quota::exceeded(&limits, &before, &after);
    if why.is_none() && c.next.running > c.prev.running && limits.monthly_budget.is_some() {
        let spent = spent_since(&mut **tx, who, quota::month_start_ms(c.now_ms)).await?;
        why = quota::over_budget(&limits, spent);
    }
    match why {
        None => Ok(()),
        Some(why) => Err(
            Error::forbidden(format!("{} is reached: {why}", who.describe()))
                .with_code(QUOTA_EXCEEDED),
        ),
    }
}

impl Store {
    /// The limits an admin set for `who` (None each where the default holds).
    pub async fn quota_override(&self, who: Subject<'_>) -> Result<Limits> {
        override_of(&self.pool, &who.key()).await
    }

    /// Sets `who`'s limits (None each: the default).
    pub async fn set_quota(&self, who: Subject<'_>, l: &Limits) -> Result<()> {
        let user = who.key();
        sqlx::query(
            "INSERT INTO quotas (user_name, running, workspaces, cpu_millis, memory_bytes, disk_bytes, monthly_budget) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_name) DO UPDATE SET \
             running = excluded.running, workspaces = excluded.workspaces, cpu_millis = excluded.cpu_millis, \
             memory_bytes = excluded.memory_bytes, disk_bytes = excluded.disk_bytes, \
             monthly_budget = excluded.monthly_budget",
        )
        .bind(&user)
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

    /// What `who`'s workspaces count, and what their running cost since
    /// `since_ms`.
    pub async fn quota_usage(&self, who: Subject<'_>, since_ms: i64) -> Result<(Usage, f64)> {
        Ok((
            usage_of(&self.pool, who, "").await?,
            spent_since(&self.pool, who, since_ms).await?,
        ))
    }
}
