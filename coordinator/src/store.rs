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

use crate::error::{ApiError, Result};
use crate::lifecycle::{Desired, State};
use crate::scheduler::Resources;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod holds;

pub use holds::{Repair, NO_ROOM};

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub status: String,
    pub cordoned: bool,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    pub cached_images: BTreeSet<String>,
    pub capacity: Resources,
    pub slots: u32,
    pub allocated: Resources,
    pub allocated_slots: u32,
    pub agent_version: String,
    /// The node's SSH host key (OpenSSH public key), "" before it registered.
    pub ssh_host_key: String,
    pub joined_at_ms: i64,
    pub last_seen_ms: i64,
    pub status_since_ms: i64,
}

/// A workspace as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub image: String,
    pub resources: Resources,
    pub pids: u32,
    pub env: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    /// The tier it was created from (empty for rows older than tiers).
    pub tier: String,
    /// What its tier grants beyond the security defaults, fixed at create.
    pub nested_userns: bool,
    pub egress_allow: Vec<String>,
    pub state: State,
    pub desired: Desired,
    pub node: Option<String>,
    pub generation: u64,
    pub version: i64,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub state_since_ms: i64,
}

impl WorkspaceRow {
    /// The lifecycle part of the record.
    pub fn lifecycle(&self) -> crate::lifecycle::Workspace {
        crate::lifecycle::Workspace {
            state: self.state,
            desired: self.desired,
            node: self.node.clone(),
            generation: self.generation,
            reason: self.reason.clone(),
        }
    }

    /// Takes the lifecycle fields of `w`, keeping `state_since_ms` unless the state changed.
    pub fn with_lifecycle(&self, w: &crate::lifecycle::Workspace, now: i64) -> Self {
        let mut next = self.clone();
        if w.state != self.state {
            next.state_since_ms = now;
        }
        next.state = w.state;
        next.desired = w.desired;
        next.node = w.node.clone();
        next.generation = w.generation;
        next.reason = w.reason.clone();
        next.updated_at_ms = now;
        next
    }

    /// What the workspace holds on its node now (see `capacity::held`).
    pub fn held(&self) -> Resources {
        crate::capacity::held(self.state, self.node.as_deref(), self.resources)
    }
}

/// What a node says about itself when it (re)connects.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub capacity: Resources,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub cached: BTreeSet<String>,
    pub agent_version: String,
    pub ssh_host_key: String,
}

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

/// Who a valid API token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub admin: bool,
}

/// Why a join token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    Unknown,
    Expired,
    Used,
}

/// Filters of the workspace listing.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceFilter {
    pub owner: Option<String>,
    pub state: Option<State>,
    pub node: Option<String>,
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

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn node_from(r: &AnyRow) -> Result<NodeRow> {
    let g = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
    Ok(NodeRow {
        id: r.try_get("id")?,
        status: r.try_get("status")?,
        cordoned: g("cordoned")? != 0,
        draining: g("draining")? != 0,
        labels: json_map(&r.try_get::<String, _>("labels")?),
        cached_images: serde_json::from_str(&r.try_get::<String, _>("cached_images")?)
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
    })
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
            .ok_or_else(|| ApiError::internal(format!("bad state {state:?} in store")))?,
        desired: Desired::parse(&desired)
            .ok_or_else(|| ApiError::internal(format!("bad desired {desired:?} in store")))?,
        node: r.try_get("node")?,
        generation: g("generation")? as u64,
        version: g("version")?,
        reason: r.try_get("reason")?,
        ip: r.try_get("ip")?,
        exit_code: r.try_get("exit_code")?,
        created_at_ms: g("created_at_ms")?,
        updated_at_ms: g("updated_at_ms")?,
        state_since_ms: g("state_since_ms")?,
    })
}

const WS_COLS: &str = "id, name, owner, image, cpu_millis, memory_bytes, disk_bytes, pids, env, \
    node_selector, state, desired, node, generation, version, reason, ip, exit_code, \
    created_at_ms, updated_at_ms, state_since_ms, tier, nested_userns, egress_allow";

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
    /// Opens (creating if needed) and migrates the store at `url`:
    /// `sqlite:///path/to/file` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(ApiError::invalid(
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
            ApiError::unavailable("store_unavailable", format!("cannot open the store: {e}"))
        })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ApiError::internal(format!("migrating the store: {e}")))?;
        Ok(Self { pool, backend })
    }

    /// The pool, for tests that inspect rows.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- CA ----

    /// The cluster CA, made with `generate` by whichever coordinator comes first.
    pub async fn ca_or_init(
        &self,
        generate: impl FnOnce() -> Result<(String, String)>,
    ) -> Result<(String, String)> {
        if let Some(r) = sqlx::query("SELECT cert_pem, key_pem FROM ca WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok((r.try_get(0)?, r.try_get(1)?));
        }
        let (cert, key) = generate()?;
        sqlx::query(
            "INSERT INTO ca (id, cert_pem, key_pem) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&cert)
        .bind(&key)
        .execute(&self.pool)
        .await?;
        let r = sqlx::query("SELECT cert_pem, key_pem FROM ca WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    // ---- API tokens ----

    /// Stores an API token (its hash only).
    pub async fn add_api_token(&self, id: &str, hash: &str, user: &str, admin: bool) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (id, secret_hash, user_name, role, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(hash)
            .bind(user)
            .bind(if admin { "admin" } else { "member" })
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds a user's SSH key; the same key twice for one user is `ssh_key_exists`.
    pub async fn add_ssh_key(&self, k: &SshKeyRow) -> Result<()> {
        let r = sqlx::query("INSERT INTO ssh_keys (id, owner, name, public_key, fingerprint, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&k.id)
            .bind(&k.owner)
            .bind(&k.name)
            .bind(&k.public_key)
            .bind(&k.fingerprint)
            .bind(k.created_at_ms)
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::conflict(
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
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n > 0)
    }

    /// Makes a workspace port's preview public (or owner-only again).
    pub async fn set_port_public(&self, workspace: &str, port: u16, public: bool) -> Result<()> {
        let q = if public {
            "INSERT INTO public_ports (workspace_id, port) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM public_ports WHERE workspace_id = $1 AND port = $2"
        };
        sqlx::query(q)
            .bind(workspace)
            .bind(i64::from(port))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A workspace's public ports, ascending.
    pub async fn public_ports(&self, workspace: &str) -> Result<Vec<u16>> {
        let rows =
            sqlx::query("SELECT port FROM public_ports WHERE workspace_id = $1 ORDER BY port")
                .bind(workspace)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("port")? as u16))
            .collect()
    }

    /// Whether anyone may open the preview of `port`.
    pub async fn port_is_public(&self, workspace: &str, port: u16) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS one FROM public_ports WHERE workspace_id = $1 AND port = $2")
                .bind(workspace)
                .bind(i64::from(port))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Whether any admin token exists.
    pub async fn has_admin(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM api_tokens WHERE role = 'admin'")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n > 0)
    }

    /// The owner of the token with this hash.
    pub async fn principal(&self, hash: &str) -> Result<Option<Principal>> {
        let r = sqlx::query("SELECT user_name, role FROM api_tokens WHERE secret_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(Principal {
                user: r.try_get(0)?,
                admin: r.try_get::<String, _>(1)? == "admin",
            }),
            None => None,
        })
    }

    // ---- join tokens ----

    pub async fn add_join_token(
        &self,
        id: &str,
        hash: &str,
        by: &str,
        expires_at_ms: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO join_tokens (id, secret_hash, created_by, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(hash)
            .bind(by)
            .bind(now_ms())
            .bind(expires_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Consumes a join token for `node` and records the node as joined, in one
    /// transaction: a token works once, before it expires, for a new node id.
    pub async fn join(
        &self,
        id: &str,
        hash: &str,
        node: &str,
        now: i64,
    ) -> Result<std::result::Result<(), JoinRefusal>> {
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query("UPDATE join_tokens SET used_at_ms = $1, used_by_node = $2 WHERE id = $3 AND secret_hash = $4 AND used_at_ms IS NULL AND expires_at_ms > $1")
            .bind(now)
            .bind(node)
            .bind(id)
            .bind(hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if used != 1 {
            drop(tx);
            let r = sqlx::query("SELECT expires_at_ms, used_at_ms FROM join_tokens WHERE id = $1 AND secret_hash = $2")
                .bind(id)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(Err(match r {
                None => JoinRefusal::Unknown,
                Some(r) if r.try_get::<Option<i64>, _>(1)?.is_some() => JoinRefusal::Used,
                Some(_) => JoinRefusal::Expired,
            }));
        }
        let inserted = sqlx::query("INSERT INTO nodes (id, status, joined_at_ms, last_seen_ms, status_since_ms) VALUES ($1, 'joined', $2, $2, $2) ON CONFLICT (id) DO NOTHING")
            .bind(node)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted != 1 {
            // The token stays unused: the transaction is rolled back.
            return Err(ApiError::conflict(
                "node_exists",
                format!("a node named {node:?} already joined; pick another node id"),
            ));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    // ---- nodes ----

    /// Records a (re)registration: capacity, labels, images; the node is ready.
    pub async fn register_node(&self, id: &str, r: &Registration, now: i64) -> Result<()> {
        let Registration {
            capacity,
            slots,
            labels,
            cached,
            agent_version,
            ssh_host_key,
        } = r;
        let n = sqlx::query("UPDATE nodes SET status = 'ready', cap_cpu_millis = $1, cap_memory_bytes = $2, cap_disk_bytes = $3, cap_slots = $4, labels = $5, cached_images = $6, agent_version = $7, last_seen_ms = $8, status_since_ms = CASE WHEN status = 'ready' THEN status_since_ms ELSE $8 END, ssh_host_key = $10 WHERE id = $9")
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("node {id:?} never joined")))
        }
    }

    /// Adds `image` to a node's cached images (a workspace was just made from
    /// it there), so the scheduler prefers the node for the next one without
    /// waiting for the agent to register again. Compare-and-set on the list:
    /// a lost race means another writer changed it, so the loop makes progress;
    /// it only gives up (with `store_busy`) under implausible contention, and
    /// never drops a note silently.
    pub async fn note_cached_image(&self, id: &str, image: &str) -> Result<()> {
        for _ in 0..1000 {
            let Some(row) = sqlx::query("SELECT cached_images FROM nodes WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(());
            };
            let old: String = row.try_get("cached_images")?;
            let mut set: BTreeSet<String> = serde_json::from_str(&old).unwrap_or_default();
            if !set.insert(image.to_string()) {
                return Ok(());
            }
            let n = sqlx::query(
                "UPDATE nodes SET cached_images = $1 WHERE id = $2 AND cached_images = $3",
            )
            .bind(serde_json::to_string(&set).unwrap_or_default())
            .bind(id)
            .bind(&old)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n == 1 {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
        Err(ApiError::unavailable(
            "store_busy",
            format!("node {id:?}: its cached image list kept changing, retry"),
        ))
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
        tx.commit().await?;
        Ok(())
    }

    /// Moves a node from `from` to `to` if it is still in `from`; true if it moved.
    pub async fn set_node_status(&self, id: &str, from: &str, to: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE nodes SET status = $1, status_since_ms = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Sets the cordon / drain flags; false if the node does not exist.
    pub async fn set_node_flags(&self, id: &str, cordoned: bool, draining: bool) -> Result<bool> {
        let n = sqlx::query("UPDATE nodes SET cordoned = $1, draining = $2 WHERE id = $3")
            .bind(i64::from(cordoned))
            .bind(i64::from(draining))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
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

    // ---- workspaces ----

    /// Stores a new workspace; 409 if the owner has one of that name.
    pub async fn insert_workspace(&self, w: &WorkspaceRow) -> Result<()> {
        let q = format!(
            "INSERT INTO workspaces ({WS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        );
        let r = bind_ws(sqlx::query(&q), w).execute(&self.pool).await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::conflict(
                "name_taken",
                format!("you already have a workspace named {:?}", w.name),
            )),
            Err(e) => Err(e.into()),
        }
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
        let mut tx = self.pool.begin().await?;
        let n = cas(&mut tx, next).await?;
        if n != 1 {
            return Ok(None);
        }
        holds::follow(self, &mut tx, prev, next).await?;
        tx.commit().await?;
        let mut stored = next.clone();
        stored.version += 1;
        Ok(Some(stored))
    }

    /// Commits placement decisions in one transaction (one fsync for the
    /// batch). Each is applied only if the workspace is still pending at the
    /// version the scheduler read and its node still has room; the others are
    /// skipped. Returns the stored rows of those that were placed.
    pub async fn place(&self, decisions: &[Decision], by: &str) -> Result<Vec<WorkspaceRow>> {
        let now = now_ms();
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
            next.state_since_ms = now;
            next.updated_at_ms = now;
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
        tx.commit().await?;
        Ok(placed)
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
    let q = "UPDATE workspaces SET state = $1, desired = $2, node = $3, generation = $4, version = version + 1, reason = $5, ip = $6, exit_code = $7, updated_at_ms = $8, state_since_ms = $9 WHERE id = $10 AND version = $11";
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
}
