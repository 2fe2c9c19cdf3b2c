//! API and join tokens: made here, kept in the store as SHA-256 hashes.
//! API tokens are `bt_<id>_<secret>`; roles admin and member.

use crate::error::Result;
use crate::pki::{hash_secret, JoinToken};
use crate::store::Store;

/// Makes and stores an API token; returns it (the only time it is seen).
pub async fn create_api_token(store: &Store, user: &str, admin: bool) -> Result<String> {
    create_api_token_until(store, user, admin, None).await
}

/// `create_api_token` for a token that stops working at `expires_at_ms`.
pub async fn create_api_token_until(
    store: &Store,
    user: &str,
    admin: bool,
    expires_at_ms: Option<i64>,
) -> Result<String> {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let token = format!("bt_{id}_{}", hex::encode(rand::random::<[u8; 24]>()));
    store
        .add_api_token_until(&id, &hash_secret(&token), user, admin, expires_at_ms)
        .await?;
    Ok(token)
}

/// The most nodes one join token may join.
pub const MAX_JOIN_USES: u32 = 10_000;

/// Makes and stores a join token valid `ttl_seconds` from `now_ms` that
/// joins at most `uses` nodes (1: one-time).
pub async fn create_join_token(
    store: &Store,
    ca_fingerprint: &str,
    by: &str,
    ttl_seconds: u64,
    uses: u32,
    now_ms: i64,
) -> Result<(String, i64)> {
    if !(1..=MAX_JOIN_USES).contains(&uses) {
        return Err(crate::error::Error::invalid(
            "invalid_uses",
            format!("uses must be 1 to {MAX_JOIN_USES}"),
        ));
    }
    let t = JoinToken::generate(ca_fingerprint);
    let expires = now_ms + (ttl_seconds as i64) * 1000;
    store
        .add_join_token(&t.id, &t.secret_hash(), by, expires, uses)
        .await?;
    Ok((t.to_string(), expires))
}
