//! Usage and capacity history: what the usage sampler records, and the
//! sums the usage report and the forecast read.

use super::audit::Audited;
use super::Store;
use crate::error::Result;
use sqlx::Row;

/// One running workspace's share of a sample interval.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSample {
    pub workspace_id: String,
    pub owner: String,
    /// Its team ("" for none).
    pub team: String,
    pub tier: String,
    pub running_ms: i64,
    pub idle_ms: i64,
    pub cost: f64,
    pub idle_cost: f64,
}

/// The fleet's allocation in one hour: (allocated, allocatable) of CPU
/// millis, memory bytes, disk bytes and workspace slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacitySample {
    pub hour_ms: i64,
    pub cpu: (i64, i64),
    pub memory: (i64, i64),
    pub disk: (i64, i64),
    pub workspaces: (i64, i64),
}

/// A usage sum, by user, tier or workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSum {
    pub key: String,
    pub workspaces: i64,
    pub running_ms: i64,
    pub idle_ms: i64,
    pub cost: f64,
    pub idle_cost: f64,
}

async fn add_one(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    hour_ms: i64,
    now: i64,
    gap_ms: i64,
    s: &UsageSample,
) -> Result<(), sqlx::Error> {
    sqlx::query(
            "INSERT INTO usage_hours (hour_ms, workspace_id, owner, tier, running_ms, idle_ms, cost, idle_cost, last_ms, team) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11) \
             ON CONFLICT (hour_ms, workspace_id) DO UPDATE SET \
             running_ms = usage_hours.running_ms + excluded.running_ms, \
             idle_ms = usage_hours.idle_ms + excluded.idle_ms, \
             cost = usage_hours.cost + excluded.cost, \
             idle_cost = usage_hours.idle_cost + excluded.idle_cost, last_ms = excluded.last_ms \
             WHERE usage_hours.last_ms <= $10",
        )
        .bind(hour_ms)
        .bind(&s.workspace_id)
        .bind(&s.owner)
        .bind(&s.tier)
        .bind(s.running_ms)
        .bind(s.idle_ms)
        .bind(s.cost)
        .bind(s.idle_cost)
        .bind(now)
        .bind(now - gap_ms)
        .bind(&s.team)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Adds the samples taken at `now` to the hour `hour_ms`, in one
    /// transaction; a workspace's is skipped if one was added less than
    /// `gap_ms` before (another coordinator sampled).
    pub async fn add_usage(
        &self,
        hour_ms: i64,
        now: i64,
        gap_ms: i64,
        samples: &[UsageSample],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for s in samples {
            add_one(&mut tx, hour_ms, now, gap_ms, s).await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Records the fleet's allocation for its hour (the newest in the hour wins).
    pub async fn put_capacity_sample(&self, c: &CapacitySample) -> Result<()> {
        sqlx::query(
            "INSERT INTO capacity_hours (hour_ms, cpu_allocated, cpu_allocatable, memory_allocated, \
             memory_allocatable, disk_allocated, disk_allocatable, workspaces_allocated, workspaces_allocatable) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (hour_ms) DO UPDATE SET \
             cpu_allocated = excluded.cpu_allocated, cpu_allocatable = excluded.cpu_allocatable, \
             memory_allocated = excluded.memory_allocated, memory_allocatable = excluded.memory_allocatable, \
             disk_allocated = excluded.disk_allocated, disk_allocatable = excluded.disk_allocatable, \
             workspaces_allocated = excluded.workspaces_allocated, \
             workspaces_allocatable = excluded.workspaces_allocatable",
        )
        .bind(c.hour_ms)
        .bind(c.cpu.0)
        .bind(c.cpu.1)
        .bind(c.memory.0)
        .bind(c.memory.1)
        .bind(c.disk.0)
        .bind(c.disk.1)
        .bind(c.workspaces.0)
        .bind(c.workspaces.1)
        .audited(self)
        .await?;
        Ok(())
    }

    /// The hourly allocation samples since `since_ms`, oldest first.
    pub async fn capacity_samples(&self, since_ms: i64) -> Result<Vec<CapacitySample>> {
        let rows = sqlx::query(
            "SELECT hour_ms, cpu_allocated, cpu_allocatable, memory_allocated, memory_allocatable, \
             disk_allocated, disk_allocatable, workspaces_allocated, workspaces_allocatable \
             FROM capacity_hours WHERE hour_ms >= $1 ORDER BY hour_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let g = |i: usize| r.try_get::<i64, _>(i);
                Ok(CapacitySample {
                    hour_ms: g(0)?,
                    cpu: (g(1)?, g(2)?),
                    memory: (g(3)?, g(4)?),
                    disk: (g(5)?, g(6)?),
                    workspaces: (g(7)?, g(8)?),
                })
            })
            .collect()
    }

    /// Usage since `since_ms` summed by `column` (owner, tier, team or
    /// workspace_id; a team's sum leaves out workspaces of none).
    pub async fn usage_sums(&self, since_ms: i64, column: &str) -> Result<Vec<UsageSum>> {
        let column = match column {
            "owner" | "tier" | "workspace_id" | "team" => column,
            _ => "owner",
        };
        let none = if column == "team" {
            "AND team <> ''"
        } else {
            ""
        };
        let q = format!(
            "SELECT {column}, COUNT(DISTINCT workspace_id), CAST(SUM(running_ms) AS BIGINT), CAST(SUM(idle_ms) AS BIGINT), SUM(cost), SUM(idle_cost) \
             FROM usage_hours WHERE hour_ms >= $1 {none} GROUP BY {column} ORDER BY SUM(cost) DESC, {column}"
        );
        let rows = sqlx::query(&q).bind(since_ms).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageSum {
                    key: r.try_get(0)?,
                    workspaces: r.try_get(1)?,
                    running_ms: r.try_get(2)?,
                    idle_ms: r.try_get(3)?,
                    cost: r.try_get(4)?,
                    idle_cost: r.try_get(5)?,
                })
            })
            .collect()
    }
}
