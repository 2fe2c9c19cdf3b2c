//! The audit log's rows, and the scope of one audited API request.
//!
//! A request that may change state runs inside a `Scope` (a task-local the
//! HTTP layer sets). The first store transaction that commits inside it
//! writes the request's entry in that same transaction (`Store::commit`),
//! so a change is never stored without its entry, nor an entry of a change
//! without the change. A request that changed nothing (refused, failed, a
//! tunnel session) gets its entry on its own afterwards (`append_now`).
//! Entries are chained (`domain::audit`): the head row numbers them and
//! keeps the newest MAC; updating it first in the transaction serialises
//! writers on SQLite and PostgreSQL alike.

use super::Store;
use crate::domain::audit::{self, Entry};
use crate::error::Result;
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::{Any, Row, Transaction};
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// One audited request: its entry, until a transaction writes it.
#[derive(Debug)]
pub struct Scope {
    key: [u8; 32],
    state: Mutex<Draft>,
}

#[derive(Debug)]
struct Draft {
    entry: Entry,
    written: bool,
}

impl Scope {
    /// A scope whose entry is `entry` (its `status` the answer expected on
    /// success; `seq` is given at write).
    pub fn new(key: [u8; 32], entry: Entry) -> Arc<Self> {
        Arc::new(Self {
            key,
            state: Mutex::new(Draft {
                entry,
                written: false,
            }),
        })
    }

    /// Runs `f` inside this scope.
    pub async fn run<F: std::future::Future>(self: Arc<Self>, f: F) -> F::Output {
        SCOPE.scope(self, f).await
    }

    /// Whether a transaction wrote the entry, and the status it recorded.
    pub fn written(&self) -> Option<i64> {
        let d = self.state.lock().unwrap_or_else(|p| p.into_inner());
        d.written.then_some(d.entry.status)
    }

    /// The entry, with `change` (what the committing transaction changed,
    /// secrets redacted) in its diff.
    fn entry(&self, change: Option<serde_json::Value>) -> Option<Entry> {
        let d = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if d.written {
            return None;
        }
        let mut e = d.entry.clone();
        if let Some(mut change) = change {
            audit::redact(&mut change);
            let mut diff: serde_json::Value =
                serde_json::from_str(&e.diff).unwrap_or_else(|_| serde_json::json!({}));
            if let Some(m) = diff.as_object_mut() {
                m.insert("change".into(), change);
            }
            e.diff = diff.to_string();
        }
        Some(e)
    }

    fn mark_written(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).written = true;
    }
}

/// The current request's scope, if its entry is still to be written.
/// Names who the current request acts as when it could not say at its
/// start (a sign-in learns it from the provider): its entry's actor and role.
pub fn act_as(user: &str, admin: bool) {
    if let Some(s) = pending() {
        let mut d = s.state.lock().unwrap_or_else(|p| p.into_inner());
        d.entry.actor = user.to_string();
        d.entry.role = if admin { "admin" } else { "member" }.to_string();
    }
}

fn pending() -> Option<Arc<Scope>> {
    SCOPE
        .try_with(|s| s.clone())
        .ok()
        .filter(|s| s.written().is_none())
}

/// Filters of the audit log's listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A prefix of the action, e.g. `POST /v1/workspaces`.
    pub action: Option<String>,
    /// A prefix of the resource, e.g. `/v1/workspaces/ws1`.
    pub resource: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Entries up to this sequence number (a walk up to the head).
    pub until_seq: Option<i64>,
    /// Entries after this sequence number (paging).
    pub after: i64,
    pub limit: i64,
    /// The newest entries first (the admin page's latest ones).
    pub newest_first: bool,
}

const COLS: &str = "seq, at_ms, actor, token_id, role, source_ip, user_agent, action, resource, \
    status, error_code, request_id, diff, mac";

fn entry_from(r: &AnyRow) -> Result<(Entry, String)> {
    Ok((
        Entry {
            seq: r.try_get("seq")?,
            at_ms: r.try_get("at_ms")?,
            actor: r.try_get("actor")?,
            token_id: r.try_get("token_id")?,
            role: r.try_get("role")?,
            source_ip: r.try_get("source_ip")?,
            user_agent: r.try_get("user_agent")?,
            action: r.try_get("action")?,
            resource: r.try_get("resource")?,
            status: r.try_get("status")?,
            error_code: r.try_get("error_code")?,
            request_id: r.try_get("request_id")?,
            diff: r.try_get("diff")?,
        },
        r.try_get("mac")?,
    ))
}

/// Appends `e` to the chain inside `tx` (numbering it).
async fn append(
    tx: &mut Transaction<'static, Any>,
    key: &[u8; 32],
    mut e: Entry,
) -> Result<(), sqlx::Error> {
    // The new number and the previous entry's MAC, the row locked.
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, mac")
        .fetch_one(&mut **tx)
        .await?;
    e.seq = head.try_get(0)?;
    let prev: String = head.try_get(1)?;
    let mac = audit::mac(key, &prev, &e);
    let q = format!(
        "INSERT INTO audit_log ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    sqlx::query(&q)
        .bind(e.seq)
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.token_id)
        .bind(&e.role)
        .bind(&e.source_ip)
        .bind(&e.user_agent)
        .bind(&e.action)
        .bind(&e.resource)
        .bind(e.status)
        .bind(&e.error_code)
        .bind(&e.request_id)
        .bind(&e.diff)
        .bind(&mac)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE audit_head SET mac = $1 WHERE id = 1")
        .bind(&mac)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A write statement that, inside an audited request, runs in a
/// transaction with the request's entry.
pub(super) trait Audited {
    fn audited(
        self,
        store: &Store,
    ) -> impl std::future::Future<Output = Result<AnyQueryResult, sqlx::Error>> + Send;
}

impl<'q> Audited for sqlx::query::Query<'q, Any, AnyArguments<'q>> {
    async fn audited(self, store: &Store) -> Result<AnyQueryResult, sqlx::Error> {
        if pending().is_none() {
            return self.execute(&store.pool).await;
        }
        let mut tx = store.pool.begin().await?;
        let r = self.execute(&mut *tx).await?;
        if r.rows_affected() == 0 {
            // Nothing changed (a conditional write that did not apply): the
            // entry is written once, with the answer's status, at the end.
            tx.rollback().await?;
            return Ok(r);
        }
        store.commit(tx).await?;
        Ok(r)
    }
}

impl Store {
    /// Commits `tx`, with the current request's audit entry if it is still
    /// to be written: the change and its entry land together or not at all.
    pub(super) async fn commit(&self, tx: Transaction<'static, Any>) -> Result<(), sqlx::Error> {
        self.commit_noting(tx, || None).await
    }

    /// Like `commit`, with what the transaction changed in the entry's diff.
    pub(super) async fn commit_noting(
        &self,
        mut tx: Transaction<'static, Any>,
        change: impl FnOnce() -> Option<serde_json::Value>,
    ) -> Result<(), sqlx::Error> {
        let Some(scope) = pending() else {
            tx.commit().await?;
            return Ok(());
        };
        if let Some(e) = scope.entry(change()) {
            append(&mut tx, &scope.key, e).await?;
        }
        tx.commit().await?;
        scope.mark_written();
        Ok(())
    }

    /// Writes `scope`'s entry on its own (a request that changed nothing),
    /// with the answer's `status` and `error_code`, unless a transaction
    /// already wrote it with that status.
    pub async fn append_audit(&self, scope: &Scope, status: i64, error_code: &str) -> Result<()> {
        if scope.written() == Some(status) {
            return Ok(());
        }
        let mut e = scope
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry
            .clone();
        if scope.written().is_some() {
            // The change was stored, then the request failed: say so too.
            e.diff = serde_json::json!({"after_commit": true}).to_string();
        }
        e.status = status;
        e.error_code = error_code.to_string();
        let mut tx = self.pool.begin().await?;
        append(&mut tx, &scope.key, e).await?;
        tx.commit().await?;
        scope.mark_written();
        Ok(())
    }

    /// Audit entries `f` selects, oldest first (or newest), with their MACs.
    pub async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<(Entry, String)>> {
        let mut q = format!("SELECT {COLS} FROM audit_log WHERE seq > $1");
        let mut n = 1;
        // Each `?` becomes the next numbered parameter.
        let mut cond = |q: &mut String, c: &str| {
            for (i, part) in c.split('?').enumerate() {
                if i > 0 {
                    n += 1;
                    q.push_str(&format!("${n}"));
                }
                q.push_str(part);
            }
        };
        fn prefix(v: &Option<String>) -> Option<(i64, &String)> {
            v.as_ref().map(|p| (p.chars().count() as i64, p))
        }
        let (action, resource) = (prefix(&f.action), prefix(&f.resource));
        if f.actor.is_some() {
            cond(&mut q, " AND actor = ?");
        }
        if action.is_some() {
            cond(&mut q, " AND substr(action, 1, CAST(? AS INTEGER)) = ?");
        }
        if resource.is_some() {
            cond(&mut q, " AND substr(resource, 1, CAST(? AS INTEGER)) = ?");
        }
        if f.since_ms.is_some() {
            cond(&mut q, " AND at_ms >= ?");
        }
        if f.until_ms.is_some() {
            cond(&mut q, " AND at_ms < ?");
        }
        if f.until_seq.is_some() {
            cond(&mut q, " AND seq <= ?");
        }
        let order = if f.newest_first { "DESC" } else { "" };
        cond(&mut q, &format!(" ORDER BY seq {order} LIMIT ?"));
        let mut query = sqlx::query(&q).bind(f.after);
        if let Some(a) = &f.actor {
            query = query.bind(a);
        }
        for (len, p) in [action, resource].into_iter().flatten() {
            query = query.bind(len).bind(p);
        }
        for v in [f.since_ms, f.until_ms, f.until_seq].into_iter().flatten() {
            query = query.bind(v);
        }
        query
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(entry_from)
            .collect()
    }

    /// The chain's head: how many entries were written, and the newest MAC.
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let r = sqlx::query("SELECT seq, mac FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry {
        Entry {
            seq: 0,
            at_ms: 1,
            actor: "alice".into(),
            token_id: "t".into(),
            role: "member".into(),
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
            action: action.into(),
            resource: "/r".into(),
            status: 201,
            error_code: String::new(),
            request_id: "r".into(),
            diff: "{}".into(),
        }
    }

    async fn all(store: &Store) -> Vec<(Entry, String)> {
        store
            .audit_entries(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
    }

    /// The entry lands with the change or not at all: a committed write
    /// carries it; a write that fails (rolled back) does not, and the
    /// request's own entry then records the refusal; writes outside a
    /// request are not audited.
    #[tokio::test]
    async fn the_entry_commits_with_the_change_only() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", d.path().join("s.db").display()))
            .await
            .unwrap();
        let key = [3; 32];

        let ok = Scope::new(key, entry("PUT /v1/config/dotfiles"));
        ok.clone()
            .run(store.set_dotfiles("alice", "https://git.example/d"))
            .await
            .unwrap();
        assert_eq!(ok.written(), Some(201));
        store.append_audit(&ok, 201, "").await.unwrap();
        let rows = all(&store).await;
        assert_eq!(rows.len(), 1, "the answer matched: one entry");
        assert_eq!(rows[0].0.seq, 1);

        store
            .add_api_token("dup", "h1", "alice", false)
            .await
            .unwrap();
        assert_eq!(all(&store).await.len(), 1, "outside a request: no entry");
        let refused = Scope::new(key, entry("POST /v1/tokens"));
        let r = refused
            .clone()
            .run(store.add_api_token("dup", "h2", "alice", false))
            .await;
        assert!(r.is_err());
        assert_eq!(refused.written(), None, "rolled back with the change");
        assert_eq!(all(&store).await.len(), 1);
        store.append_audit(&refused, 409, "conflict").await.unwrap();
        let rows = all(&store).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].0.status, rows[1].0.error_code.as_str()),
            (409, "conflict")
        );

        let mut v = crate::domain::audit::Verifier::new(key);
        for (e, m) in &rows {
            v.next(e, m);
        }
        let (seq, mac) = store.audit_head().await.unwrap();
        assert_eq!(v.finish(seq, &mac), None);
    }
}
