//! Node allocations follow what workspaces hold (`capacity::held`): every
//! workspace write applies the difference in its transaction; a start that
//! asks for room is guarded like a placement; `repair` recomputes every
//! node's allocation from the rows.

use super::audit::Audited;
use super::{to_i64, Store};
use crate::domain::capacity::{self, Delta};
use crate::domain::lifecycle::State;
use crate::domain::scheduler::Resources;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Error code of a start that found no room on its node.
pub const NO_ROOM: &str = "node_full";

const SHIFT: &str = "UPDATE nodes SET alloc_cpu_millis = alloc_cpu_millis + $1, \
    alloc_memory_bytes = alloc_memory_bytes + $2, alloc_disk_bytes = alloc_disk_bytes + $3, \
    alloc_slots = alloc_slots + $4 WHERE id = $5";

/// SHIFT, only if every growing part stays within the node's capacity.
const SHIFT_GUARDED: &str = "UPDATE nodes SET alloc_cpu_millis = alloc_cpu_millis + $1, \
    alloc_memory_bytes = alloc_memory_bytes + $2, alloc_disk_bytes = alloc_disk_bytes + $3, \
    alloc_slots = alloc_slots + $4 WHERE id = $5 \
    AND ($1 <= 0 OR alloc_cpu_millis + $1 <= cap_cpu_millis) \
    AND ($2 <= 0 OR alloc_memory_bytes + $2 <= cap_memory_bytes) \
    AND ($3 <= 0 OR alloc_disk_bytes + $3 <= cap_disk_bytes) \
    AND ($4 <= 0 OR alloc_slots + $4 <= cap_slots)";

fn held(w: &WorkspaceRow) -> Resources {
    capacity::held(w.state, w.node.as_deref(), w.resources)
}

/// Moves `node`'s allocation by `d`; with `guard`, only within capacity.
/// Returns whether it was applied.
async fn shift(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    node: &str,
    d: Delta,
    guard: bool,
) -> Result<bool> {
    if d.is_zero() {
        return Ok(true);
    }
    let n = sqlx::query(if guard { SHIFT_GUARDED } else { SHIFT })
        .bind(d.cpu_millis)
        .bind(d.memory_bytes)
        .bind(d.disk_bytes)
        .bind(d.slots)
        .bind(node)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Applies to the nodes what `prev` → `next` changes in what the workspace
/// holds. A start (into `starting`) asks for room and fails with `node_full`
/// when there is none; everything else records what is (a node's report of
/// a running workspace is a fact, not a request).
pub(super) async fn follow(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    prev: &WorkspaceRow,
    next: &WorkspaceRow,
) -> Result<()> {
    let (before, after) = (held(prev), held(next));
    let guard = next.state == State::Starting && prev.state != State::Starting;
    match (&prev.node, &next.node) {
        (Some(a), Some(b)) if a == b => {
            if !shift(tx, a, Delta::between(before, after), guard).await? {
                return Err(store.no_room(a, before, after).await);
            }
        }
        (a, b) => {
            if let Some(a) = a {
                shift(tx, a, Delta::release(before), false).await?;
            }
            if let Some(b) = b {
                if !shift(tx, b, Delta::between(Resources::default(), after), guard).await? {
                    return Err(store.no_room(b, Resources::default(), after).await);
                }
            }
        }
    }
    Ok(())
}

/// What a node's allocation should be and is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub node: String,
    pub was: (Resources, u32),
    pub now: (Resources, u32),
}

impl Store {
    async fn no_room(&self, node: &str, before: Resources, after: Resources) -> Error {
        let need = Resources {
            cpu_millis: after.cpu_millis.saturating_sub(before.cpu_millis),
            memory_bytes: after.memory_bytes.saturating_sub(before.memory_bytes),
            disk_bytes: after.disk_bytes.saturating_sub(before.disk_bytes),
        };
        let free = match self.node(node).await {
            Ok(Some(n)) => Resources {
                cpu_millis: n.capacity.cpu_millis.saturating_sub(n.allocated.cpu_millis),
                memory_bytes: n
                    .capacity
                    .memory_bytes
                    .saturating_sub(n.allocated.memory_bytes),
                disk_bytes: n.capacity.disk_bytes.saturating_sub(n.allocated.disk_bytes),
            },
            _ => Resources::default(),
        };
        Error::conflict(NO_ROOM, capacity::shortfall(node, free, need))
    }

    /// Recomputes every node's allocation from what its workspaces hold and
    /// fixes those that differ (a store written by an older coordinator, or
    /// by a bug). Each fix is a compare-and-set on the values read, so a
    /// concurrent writer's change is never overwritten. Returns the fixes.
    pub async fn repair_allocations(&self) -> Result<Vec<Repair>> {
        let mut want: BTreeMap<String, (Resources, u32)> = BTreeMap::new();
        let nodes = self.nodes().await?;
        let rows = self.workspaces(&super::WorkspaceFilter::default()).await?;
        for w in &rows {
            let (Some(node), h) = (&w.node, held(w)) else {
                continue;
            };
            if h == Resources::default() {
                continue;
            }
            let e = want.entry(node.clone()).or_default();
            e.0.cpu_millis += h.cpu_millis;
            e.0.memory_bytes += h.memory_bytes;
            e.0.disk_bytes += h.disk_bytes;
            e.1 += 1;
        }
        let mut fixed = Vec::new();
        for n in nodes {
            let was = (n.allocated, n.allocated_slots);
            let now = want.get(&n.id).copied().unwrap_or_default();
            if was == now {
                continue;
            }
            let q = "UPDATE nodes SET alloc_cpu_millis = $1, alloc_memory_bytes = $2, alloc_disk_bytes = $3, alloc_slots = $4 \
                     WHERE id = $5 AND alloc_cpu_millis = $6 AND alloc_memory_bytes = $7 AND alloc_disk_bytes = $8 AND alloc_slots = $9";
            let n_rows = sqlx::query(q)
                .bind(to_i64(now.0.cpu_millis))
                .bind(to_i64(now.0.memory_bytes))
                .bind(to_i64(now.0.disk_bytes))
                .bind(i64::from(now.1))
                .bind(&n.id)
                .bind(to_i64(was.0.cpu_millis))
                .bind(to_i64(was.0.memory_bytes))
                .bind(to_i64(was.0.disk_bytes))
                .bind(i64::from(was.1))
                .audited(self)
                .await?
                .rows_affected();
            if n_rows == 1 {
                fixed.push(Repair {
                    node: n.id,
                    was,
                    now,
                });
            }
        }
        Ok(fixed)
    }
}
