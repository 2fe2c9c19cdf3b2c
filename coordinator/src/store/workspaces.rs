//! Workspaces: rows, listings, compare-and-set updates and placements.

use super::audit::Audited;
use super::{json_map, to_i64, Store};
use crate::domain::lifecycle::{Desired, State};
use crate::domain::quota::{self, Limits, Usage};
use crate::domain::scheduler::Resources;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// Filters of the workspace listing.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceFilter {
    pub owner: Option<String>,
    pub state: Option<State>,
    pub node: Option<String>,
    pub team: Option<String>,
}

/// A placement decided by the scheduler, to commit.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The row as the scheduler read it (pending).
    pub workspace: WorkspaceRow,
    /// The row after `lifecycle::step(Placed(node))`.
    pub next: WorkspaceRow,
    pub node: String,
}

fn ws_from(r: &AnyRow) -> Result<WorkspaceRow> {
    let g = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
    let state: String = r.try_get("state")?;
    let desired: String = r.try_get("desired")?;
    Ok(WorkspaceRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        image: r.try_get("image")?,
        resources: Resources {
            cpu_millis: g("cpu_millis")? as u64,
            memory_bytes: g("memory_bytes")? as u64,
            disk_bytes: g("disk_bytes")? as u64,
        },
        pids: g("pids")? as u32,
        env: json_map(&r.try_get::<String, _>("env")?),
        node_selector: json_map(&r.try_get::<String, _>("node_selector")?),
        tier: r.try_get("tier")?,
        nested_userns: g("nested_userns")? != 0,
        egress_allow: serde_json::from_str(&r.try_get::<String, _>("egress_allow")?)
            .unwrap_or_default(),
        state: State::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad state {state:?} in store")))?,
        desired: Desired::parse(&desired)
            .ok_or_else(|| Error::internal(format!("bad desired {desired:?} in store")))?,
        node: r.try_get("node")?,
        generation: g("generation")? as u64,
        version: g("version")?,
        reason: r.try_get("reason")?,
        ip: r.try_get("ip")?,
        exit_code: r.try_get("exit_code")?,
        created_at_ms: g("created_at_ms")?,
        updated_at_ms: g("updated_at_ms")?,
        state_since_ms: g("state_since_ms")?,
        repo: json_opt(&r.try_get::<String, _>("repo")?),
        init: json_opt(&r.try_get::<String, _>("init_report")?),
        idle: json_opt(&r.try_get::<String, _>("idle_report")?),
        keepalive_until_ms: g("keepalive_until_ms")?,
        idle_timeout_ms: g("idle_timeout_ms")?,
        team: r.try_get("team")?,
    })
}

/// A JSON column that may be empty.
fn json_opt<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    (!s.is_empty())
        .then(|| serde_json::from_str(s).ok())
        .flatten()
}

fn json_or_empty<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_string(v).ok())
        .unwrap_or_default()
}

const WS_COLS: &str = "id, name, owner, image, cpu_millis, memory_bytes, disk_bytes, pids, env, \
    node_selector, state, desired, node, generation, version, reason, ip, exit_code, \
    created_at_ms, updated_at_ms, state_since_ms, tier, nested_userns, egress_allow, repo, init_report, \
    idle_report, keepalive_until_ms, idle_timeout_ms, team";

/// What an update changes of a workspace, for the audit log.
fn changed(prev: &WorkspaceRow, next: &WorkspaceRow) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("workspace".into(), next.id.clone().into());
    let mut pair = |k: &str, a: &str, b: &str| {
        if a != b {
            m.insert(k.into(), serde_json::json!([a, b]));
        }
    };
    pair("state", prev.state.as_str(), next.state.as_str());
    pair("desired", prev.desired.as_str(), next.desired.as_str());
    pair(
        "node",
        prev.node.as_deref().unwrap_or(""),
        next.node.as_deref().unwrap_or(""),
    );
    if prev.idle_timeout_ms != next.idle_timeout_ms {
        m.insert(
            "idle_timeout_ms".into(),
            serde_json::json!([prev.idle_timeout_ms, next.idle_timeout_ms]),
        );
    }
    serde_json::Value::Object(m)
}

/// The guarded reservation: succeeds only if the node stays within capacity.
const RESERVE: &str = "UPDATE nodes SET alloc_cpu_millis = alloc_cpu_millis + $1, \
    alloc_memory_bytes = alloc_memory_bytes + $2, alloc_disk_bytes = alloc_disk_bytes + $3, \
    alloc_slots = alloc_slots + 1 \
    WHERE id = $4 AND status = 'ready' AND cordoned = 0 AND draining = 0 \
    AND alloc_cpu_millis + $1 <= cap_cpu_millis AND alloc_memory_bytes + $2 <= cap_memory_bytes \
    AND alloc_disk_bytes + $3 <= cap_disk_bytes AND alloc_slots + 1 <= cap_slots";

const RELEASE: &str = "UPDATE nodes SET alloc_cpu_millis = alloc_cpu_millis - $1, \
    alloc_memory_bytes = alloc_memory_bytes - $2, alloc_disk_bytes = alloc_disk_bytes - $3, \
    alloc_slots = alloc_slots - 1 WHERE id = $4";

impl Store {
    // ---- workspaces ----

    /// Stores a new workspace; 409 if the owner has one of that name.
    pub async fn insert_workspace(&self, w: &WorkspaceRow) -> Result<()> {
        self.insert_workspace_within(w, &Limits::default()).await
    }

    /// Stores a new workspace if its owner's limits (`defaults` overridden
    /// by theirs) allow it, checked in the same transaction (`quota_exceeded`).
    pub async fn insert_workspace_within(&self, w: &WorkspaceRow, defaults: &Limits) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The row first: the transaction's first statement is a write, so
        // SQLite takes its write lock at once (a read first could not be
        // upgraded under concurrent writers); the check below then counts
        // it with the owner's lock held.
        let q = format!(
            "INSERT INTO workspaces ({WS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)"
        );
        match bind_ws(sqlx::query(&q), w).execute(&mut *tx).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::conflict(
                    "name_taken",
                    format!("you already have a workspace named {:?}", w.name),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let check = super::quotas::Check {
            owner: &w.owner,
            team: &w.team,
            id: &w.id,
            prev: Usage::default(),
            next: quota::uses(w.state, w.desired, w.resources),
            defaults,
            now_ms: w.created_at_ms,
        };
        super::quotas::check(&mut tx, check).await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Workspaces deleted before `before_ms` that still have backups.
    pub async fn deleted_with_backups(&self, before_ms: i64) -> Result<Vec<WorkspaceRow>> {
        let q = format!(
            "SELECT {WS_COLS} FROM workspaces WHERE state = 'deleted' AND state_since_ms < $1 \
             AND id IN (SELECT workspace_id FROM backup_state) ORDER BY state_since_ms LIMIT 100"
        );
        sqlx::query(&q)
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ws_from)
            .collect()
    }

    /// Sets workspace `id`'s own idle timeout (0: its tier's); false if
    /// there is no such workspace.
    pub async fn set_idle_timeout(&self, id: &str, ms: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE workspaces SET idle_timeout_ms = $1, version = version + 1 WHERE id = $2",
        )
        .bind(ms)
        .bind(id)
        .audited(self)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn workspace_by_name(&self, owner: &str, name: &str) -> Result<Option<WorkspaceRow>> {
        let q = format!(
            "SELECT {WS_COLS} FROM workspaces WHERE owner = $1 AND name = $2 ORDER BY (CASE WHEN state = 'deleted' THEN 1 ELSE 0 END), created_at_ms DESC LIMIT 1"
        );
        sqlx::query(&q)
            .bind(owner)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ws_from)
            .transpose()
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRow>> {
        let q = format!("SELECT {WS_COLS} FROM workspaces WHERE id = $1");
        sqlx::query(&q)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(ws_from)
            .transpose()
    }

    /// Workspaces matching `f`, deleted ones excluded unless asked for by state.
    pub async fn workspaces(&self, f: &WorkspaceFilter) -> Result<Vec<WorkspaceRow>> {
        let mut q = format!("SELECT {WS_COLS} FROM workspaces WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(o) = &f.owner {
            args.push(o.clone());
            q.push_str(&format!(" AND owner = ${}", args.len()));
        }
        match f.state {
            Some(s) => {
                args.push(s.as_str().to_string());
                q.push_str(&format!(" AND state = ${}", args.len()));
            }
            None => q.push_str(" AND state <> 'deleted'"),
        }
        if let Some(n) = &f.node {
            args.push(n.clone());
            q.push_str(&format!(" AND node = ${}", args.len()));
        }
        if let Some(t) = &f.team {
            args.push(t.clone());
            q.push_str(&format!(" AND team = ${}", args.len()));
        }
        q.push_str(" ORDER BY created_at_ms, id");
        let mut query = sqlx::query(&q);
        for a in &args {
            query = query.bind(a);
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ws_from)
            .collect()
    }

    /// Workspaces in any of `states`, oldest change first, at most `limit`.
    pub async fn workspaces_in(&self, states: &[State], limit: i64) -> Result<Vec<WorkspaceRow>> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let q = format!(
            "SELECT {WS_COLS} FROM workspaces WHERE state IN ({}) ORDER BY updated_at_ms, id LIMIT {limit}",
            list.join(", ")
        );
        sqlx::query(&q)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ws_from)
            .collect()
    }

    /// Writes `next` over the row if it is still at `next.version`; the stored
    /// version becomes `next.version + 1`. The node's allocation follows what
    /// the workspace holds before and after, in the same transaction (a start
    /// without room fails with `node_full`, nothing written). Returns the
    /// stored row, or None if another writer got there first.
    pub async fn update_workspace(
        &self,
        prev: &WorkspaceRow,
        next: &WorkspaceRow,
    ) -> Result<Option<WorkspaceRow>> {
        self.update_workspace_within(prev, next, &Limits::default())
            .await
    }

    /// Like `update_workspace`, refusing a change that grows past the
    /// owner's limits (`quota_exceeded`), in the same transaction.
    pub async fn update_workspace_within(
        &self,
        prev: &WorkspaceRow,
        next: &WorkspaceRow,
        defaults: &Limits,
    ) -> Result<Option<WorkspaceRow>> {
        let mut tx = self.pool.begin().await?;
        let n = cas(&mut tx, next).await?;
        if n != 1 {
            return Ok(None);
        }
        let check = super::quotas::Check {
            owner: &next.owner,
            team: &next.team,
            id: &next.id,
            prev: quota::uses(prev.state, prev.desired, prev.resources),
            next: quota::uses(next.state, next.desired, next.resources),
            defaults,
            now_ms: next.updated_at_ms,
        };
        super::quotas::check(&mut tx, check).await?;
        super::holds::follow(self, &mut tx, prev, next).await?;
        self.commit_noting(tx, || Some(changed(prev, next))).await?;
        let mut stored = next.clone();
        stored.version += 1;
        Ok(Some(stored))
    }

    /// Commits placement decisions in one transaction (one fsync for the
    /// batch). Each is applied only if the workspace is still pending at the
    /// version the scheduler read and its node still has room; the others are
    /// skipped. Returns the stored rows of those that were placed. The time
    /// of a placement is the decision's (`next.updated_at_ms`, the caller's
    /// clock), never the store's own.
    pub async fn place(&self, decisions: &[Decision], by: &str) -> Result<Vec<WorkspaceRow>> {
        let mut tx = self.pool.begin().await?;
        let mut placed = Vec::new();
        for d in decisions {
            let w = &d.workspace;
            let reserved = sqlx::query(RESERVE)
                .bind(to_i64(w.resources.cpu_millis))
                .bind(to_i64(w.resources.memory_bytes))
                .bind(to_i64(w.resources.disk_bytes))
                .bind(&d.node)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if reserved != 1 {
                continue;
            }
            let mut next = d.next.clone();
            next.version = w.version;
            let now = next.updated_at_ms;
            if cas(&mut tx, &next).await? != 1 {
                release(&mut tx, &d.node, w.resources).await?;
                continue;
            }
            sqlx::query("INSERT INTO placements (workspace_id, generation, node, placed_at_ms, placed_by) VALUES ($1, $2, $3, $4, $5)")
                .bind(&w.id)
                .bind(to_i64(next.generation))
                .bind(&d.node)
                .bind(now)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            next.version += 1;
            placed.push(next);
        }
        self.commit(tx).await?;
        Ok(placed)
    }

    /// How many workspaces there are of each (state, tier), deleted ones aside.
    pub async fn workspace_counts(&self) -> Result<BTreeMap<(String, String), i64>> {
        let rows = sqlx::query("SELECT state, tier, COUNT(*) FROM workspaces WHERE state <> 'deleted' GROUP BY state, tier")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?)))
            .collect()
    }

    /// Placement rows per workspace id (tests check there is at most one per generation).
    pub async fn placement_counts(&self) -> Result<BTreeMap<String, i64>> {
        let rows =
            sqlx::query("SELECT workspace_id, COUNT(*) FROM placements GROUP BY workspace_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

async fn cas(tx: &mut sqlx::Transaction<'_, sqlx::Any>, next: &WorkspaceRow) -> Result<u64> {
    let q = "UPDATE workspaces SET state = $1, desired = $2, node = $3, generation = $4, version = version + 1, reason = $5, ip = $6, exit_code = $7, updated_at_ms = $8, state_since_ms = $9, init_report = $12, idle_report = $13, keepalive_until_ms = $14 WHERE id = $10 AND version = $11";
    Ok(sqlx::query(q)
        .bind(next.state.as_str())
        .bind(next.desired.as_str())
        .bind(next.node.clone())
        .bind(to_i64(next.generation))
        .bind(next.reason.clone())
        .bind(next.ip.clone())
        .bind(next.exit_code)
        .bind(next.updated_at_ms)
        .bind(next.state_since_ms)
        .bind(&next.id)
        .bind(next.version)
        .bind(json_or_empty(&next.init))
        .bind(json_or_empty(&next.idle))
        .bind(next.keepalive_until_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

async fn release(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node: &str,
    r: Resources,
) -> Result<()> {
    sqlx::query(RELEASE)
        .bind(to_i64(r.cpu_millis))
        .bind(to_i64(r.memory_bytes))
        .bind(to_i64(r.disk_bytes))
        .bind(node)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn bind_ws<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    w: &WorkspaceRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(w.id.clone())
        .bind(w.name.clone())
        .bind(w.owner.clone())
        .bind(w.image.clone())
        .bind(to_i64(w.resources.cpu_millis))
        .bind(to_i64(w.resources.memory_bytes))
        .bind(to_i64(w.resources.disk_bytes))
        .bind(i64::from(w.pids))
        .bind(serde_json::to_string(&w.env).unwrap_or_default())
        .bind(serde_json::to_string(&w.node_selector).unwrap_or_default())
        .bind(w.state.as_str())
        .bind(w.desired.as_str())
        .bind(w.node.clone())
        .bind(to_i64(w.generation))
        .bind(w.version)
        .bind(w.reason.clone())
        .bind(w.ip.clone())
        .bind(w.exit_code)
        .bind(w.created_at_ms)
        .bind(w.updated_at_ms)
        .bind(w.state_since_ms)
        .bind(w.tier.clone())
        .bind(i64::from(w.nested_userns))
        .bind(serde_json::to_string(&w.egress_allow).unwrap_or_default())
        .bind(json_or_empty(&w.repo))
        .bind(json_or_empty(&w.init))
        .bind(json_or_empty(&w.idle))
        .bind(w.keepalive_until_ms)
        .bind(w.idle_timeout_ms)
        .bind(w.team.clone())
}
