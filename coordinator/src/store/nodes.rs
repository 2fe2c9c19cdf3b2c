//! Nodes: registration, liveness, flags and what they have cached.

use super::audit::Audited;
use super::{json_map, to_i64, Store};
use crate::domain::node::{NodeRow, NodeStatus, Registration};
use crate::domain::scheduler::Resources;
use crate::error::{Error, Result};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeSet;

fn node_from(r: &AnyRow) -> Result<NodeRow> {
    let g = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
    Ok(NodeRow {
        id: r.try_get("id")?,
        status: {
            let s: String = r.try_get("status")?;
            NodeStatus::parse(&s)
                .ok_or_else(|| Error::internal(format!("bad node status {s:?} in store")))?
        },
        cordoned: g("cordoned")? != 0,
        draining: g("draining")? != 0,
        labels: json_map(&r.try_get::<String, _>("labels")?),
        cached_images: serde_json::from_str(&r.try_get::<String, _>("cached_images")?)
            .unwrap_or_default(),
        cached_prebuilds: serde_json::from_str(&r.try_get::<String, _>("cached_prebuilds")?)
            .unwrap_or_default(),
        capacity: Resources {
            cpu_millis: g("cap_cpu_millis")? as u64,
            memory_bytes: g("cap_memory_bytes")? as u64,
            disk_bytes: g("cap_disk_bytes")? as u64,
        },
        slots: g("cap_slots")? as u32,
        allocated: Resources {
            cpu_millis: g("alloc_cpu_millis")? as u64,
            memory_bytes: g("alloc_memory_bytes")? as u64,
            disk_bytes: g("alloc_disk_bytes")? as u64,
        },
        allocated_slots: g("alloc_slots")? as u32,
        agent_version: r.try_get("agent_version")?,
        ssh_host_key: r.try_get("ssh_host_key")?,
        joined_at_ms: g("joined_at_ms")?,
        last_seen_ms: g("last_seen_ms")?,
        status_since_ms: g("status_since_ms")?,
        drain_deadline_ms: g("drain_deadline_ms")?,
    })
}

impl Store {
    // ---- nodes ----

    /// Records a (re)registration: capacity, labels, images; the node is ready.
    pub async fn register_node(&self, id: &str, r: &Registration, now: i64) -> Result<()> {
        let Registration {
            capacity,
            slots,
            labels,
            cached,
            prebuilds,
            agent_version,
            ssh_host_key,
        } = r;
        let n = sqlx::query("UPDATE nodes SET status = 'ready', cap_cpu_millis = $1, cap_memory_bytes = $2, cap_disk_bytes = $3, cap_slots = $4, labels = $5, cached_images = $6, agent_version = $7, last_seen_ms = $8, status_since_ms = CASE WHEN status = 'ready' THEN status_since_ms ELSE $8 END, ssh_host_key = $10, cached_prebuilds = $11 WHERE id = $9")
            .bind(to_i64(capacity.cpu_millis))
            .bind(to_i64(capacity.memory_bytes))
            .bind(to_i64(capacity.disk_bytes))
            .bind(i64::from(*slots))
            .bind(serde_json::to_string(labels).unwrap_or_default())
            .bind(serde_json::to_string(cached).unwrap_or_default())
            .bind(agent_version)
            .bind(now)
            .bind(id)
            .bind(ssh_host_key)
            .bind(serde_json::to_string(prebuilds).unwrap_or_default())
            .audited(self)
            .await?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(Error::not_found(format!("node {id:?} never joined")))
        }
    }

    /// Adds `image` to a node's cached images (a workspace was just made from
    /// it there), so the scheduler prefers the node for the next one without
    /// waiting for the agent to register again. Compare-and-set on the list:
    /// a lost race means another writer changed it, so the loop makes progress;
    /// it only gives up (with `store_busy`) under implausible contention, and
    /// never drops a note silently.
    pub async fn note_cached_image(&self, id: &str, image: &str) -> Result<()> {
        self.note_cached(id, "cached_images", image).await
    }

    /// Adds prebuild `key` to what node `id` holds (it built it).
    pub async fn note_cached_prebuild(&self, id: &str, key: &str) -> Result<()> {
        self.note_cached(id, "cached_prebuilds", key).await
    }

    /// Adds `item` to the JSON set in `column` of node `id`.
    async fn note_cached(&self, id: &str, column: &'static str, item: &str) -> Result<()> {
        for _ in 0..1000 {
            let Some(row) = sqlx::query(&format!("SELECT {column} FROM nodes WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(());
            };
            let old: String = row.try_get(column)?;
            let mut set: BTreeSet<String> = serde_json::from_str(&old).unwrap_or_default();
            if !set.insert(item.to_string()) {
                return Ok(());
            }
            let n = sqlx::query(&format!(
                "UPDATE nodes SET {column} = $1 WHERE id = $2 AND {column} = $3"
            ))
            .bind(serde_json::to_string(&set).unwrap_or_default())
            .bind(id)
            .bind(&old)
            .audited(self)
            .await?
            .rows_affected();
            if n == 1 {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
        Err(Error::unavailable(
            "store_busy",
            format!("node {id:?}: its {column} kept changing, retry"),
        ))
    }

    /// Sets the prebuild layers node `id` holds (what it answered a pull,
    /// a drop or a build with).
    pub async fn set_node_prebuilds(&self, id: &str, keys: &BTreeSet<String>) -> Result<()> {
        self.set_cached(id, "cached_prebuilds", keys).await
    }

    /// Sets the images node `id` has (its heartbeat said they changed).
    pub async fn set_node_images(&self, id: &str, names: &BTreeSet<String>) -> Result<()> {
        self.set_cached(id, "cached_images", names).await
    }

    async fn set_cached(
        &self,
        id: &str,
        column: &'static str,
        set: &BTreeSet<String>,
    ) -> Result<()> {
        sqlx::query(&format!("UPDATE nodes SET {column} = $1 WHERE id = $2"))
            .bind(serde_json::to_string(set).unwrap_or_default())
            .bind(id)
            .audited(self)
            .await?;
        Ok(())
    }

    /// Refreshes the last-seen time of connected nodes, in one transaction.
    pub async fn touch_nodes(&self, ids: &[String], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE nodes SET last_seen_ms = $1, status = CASE WHEN status = 'unreachable' THEN 'ready' ELSE status END WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Moves a node from `from` to `to` if it is still in `from`; true if it moved.
    pub async fn set_node_status(
        &self,
        id: &str,
        from: NodeStatus,
        to: NodeStatus,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE nodes SET status = $1, status_since_ms = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .audited(self)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Sets the cordon / drain flags; false if the node does not exist.
    /// Sets a node's flags; a drain's deadline goes with its drain.
    pub async fn set_node_flags(&self, id: &str, cordoned: bool, draining: bool) -> Result<bool> {
        let n = sqlx::query("UPDATE nodes SET cordoned = $1, draining = $2, drain_deadline_ms = CASE WHEN $2 = 0 THEN 0 ELSE drain_deadline_ms END WHERE id = $3")
            .bind(i64::from(cordoned))
            .bind(i64::from(draining))
            .bind(id)
            .audited(self)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Sets (0: clears) the deadline of node `id`'s drain.
    pub async fn set_drain_deadline(&self, id: &str, at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET drain_deadline_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .audited(self)
            .await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        sqlx::query("SELECT * FROM nodes ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from)
            .collect()
    }

    pub async fn node(&self, id: &str) -> Result<Option<NodeRow>> {
        sqlx::query("SELECT * FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(node_from)
            .transpose()
    }
}
