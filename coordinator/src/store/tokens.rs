//! The cluster CA, API tokens and join tokens.

use super::audit::Audited;
use super::Store;
use crate::domain::node::JoinRefusal;
use crate::error::{Error, Result};
use sqlx::Row;

/// Who a valid API token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub admin: bool,
    /// The token's id (the `<id>` of `bt_<id>_…`).
    pub token_id: String,
}

impl Store {
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
        .audited(self)
        .await?;
        let r = sqlx::query("SELECT cert_pem, key_pem FROM ca WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    // ---- API tokens ----

    /// Stores an API token (its hash only).
    pub async fn add_api_token(&self, id: &str, hash: &str, user: &str, admin: bool) -> Result<()> {
        self.add_api_token_until(id, hash, user, admin, None).await
    }

    /// Stores an API token that stops working at `expires_at_ms`.
    pub async fn add_api_token_until(
        &self,
        id: &str,
        hash: &str,
        user: &str,
        admin: bool,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (id, secret_hash, user_name, role, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(hash)
            .bind(user)
            .bind(if admin { "admin" } else { "member" })
            .bind(berth_proto::units::now_ms())
            .bind(expires_at_ms)
            .audited(self)
            .await?;
        Ok(())
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
        let r = sqlx::query("SELECT user_name, role, id FROM api_tokens WHERE secret_hash = $1 AND (expires_at_ms IS NULL OR expires_at_ms > $2)")
            .bind(hash)
            .bind(berth_proto::units::now_ms())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(Principal {
                user: r.try_get(0)?,
                admin: r.try_get::<String, _>(1)? == "admin",
                token_id: r.try_get(2)?,
            }),
            None => None,
        })
    }

    // ---- join tokens ----

    /// Stores a join token (its hash only) that joins at most `max_uses` nodes.
    pub async fn add_join_token(
        &self,
        id: &str,
        hash: &str,
        by: &str,
        expires_at_ms: i64,
        max_uses: u32,
    ) -> Result<()> {
        sqlx::query("INSERT INTO join_tokens (id, secret_hash, created_by, created_at_ms, expires_at_ms, max_uses) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(hash)
            .bind(by)
            .bind(berth_proto::units::now_ms())
            .bind(expires_at_ms)
            .bind(i64::from(max_uses))
            .audited(self)
            .await?;
        Ok(())
    }

    /// Revokes join token `id` (no node joins with it from now on; nodes it
    /// joined stay). False if there is no such token.
    pub async fn revoke_join_token(&self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE join_tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .audited(self)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Uses a join token for `node` and records the node as joined, in one
    /// transaction: a token joins at most its `max_uses` nodes, before it
    /// expires and unless it is revoked, each a new node id.
    pub async fn join(
        &self,
        id: &str,
        hash: &str,
        node: &str,
        now: i64,
    ) -> Result<std::result::Result<(), JoinRefusal>> {
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query("UPDATE join_tokens SET uses = uses + 1, used_at_ms = $1, used_by_node = $2 WHERE id = $3 AND secret_hash = $4 AND uses < max_uses AND revoked_at_ms IS NULL AND expires_at_ms > $1")
            .bind(now)
            .bind(node)
            .bind(id)
            .bind(hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if used != 1 {
            drop(tx);
            let r = sqlx::query("SELECT revoked_at_ms, uses, max_uses FROM join_tokens WHERE id = $1 AND secret_hash = $2")
                .bind(id)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(Err(match r {
                None => JoinRefusal::Unknown,
                Some(r) if r.try_get::<Option<i64>, _>(0)?.is_some() => JoinRefusal::Revoked,
                Some(r) if r.try_get::<i64, _>(1)? >= r.try_get::<i64, _>(2)? => JoinRefusal::Used,
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
            return Err(Error::conflict(
                "node_exists",
                format!("a node named {node:?} already joined; pick another node id"),
            ));
        }
        self.commit(tx).await?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token with an expiry works until then and not after; one without
    /// lasts.
    #[tokio::test]
    async fn an_expired_token_names_nobody() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", d.path().join("s.db").display()))
            .await
            .unwrap();
        let now = berth_proto::units::now_ms();
        store
            .add_api_token_until("a", "h-live", "alice", false, Some(now + 60_000))
            .await
            .unwrap();
        store
            .add_api_token_until("b", "h-gone", "alice", false, Some(now - 1))
            .await
            .unwrap();
        store
            .add_api_token("c", "h-lasting", "bob", true)
            .await
            .unwrap();
        assert_eq!(
            store.principal("h-live").await.unwrap().unwrap().user,
            "alice"
        );
        assert!(store.principal("h-gone").await.unwrap().is_none());
        assert!(store.principal("h-lasting").await.unwrap().unwrap().admin);
    }
}
