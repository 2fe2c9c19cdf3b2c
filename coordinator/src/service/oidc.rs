//! What an OIDC sign-in does (docs/admin.md, "OIDC sign-in"): the user's
//! teams and roles as their provider groups give them (teams made if
//! missing), then an API token that expires.

use super::Service;
use crate::domain::oidc::Grant;
use crate::error::Result;

impl Service {
    /// Signs `grant`'s user in: their mapped teams and roles set (other
    /// memberships kept), and a token lasting `ttl_ms`; returns it and when
    /// it expires.
    pub async fn oidc_sign_in(&self, grant: &Grant, ttl_ms: i64) -> Result<(String, i64)> {
        let store = &self.inner.store;
        for (team, role) in &grant.teams {
            if !store.team_exists(team).await? {
                match store.create_team(team, self.now()).await {
                    Ok(()) => {}
                    // Made meanwhile by another sign-in.
                    Err(e) if e.code == "team_exists" => {}
                    Err(e) => return Err(e),
                }
            }
            if store.team_role(team, &grant.user).await? != Some(*role) {
                store.set_team_member(team, &grant.user, *role).await?;
            }
        }
        let expires_at_ms = self.now() + ttl_ms;
        let token = crate::auth::create_api_token_until(
            store,
            &grant.user,
            grant.admin,
            Some(expires_at_ms),
        )
        .await?;
        Ok((token, expires_at_ms))
    }
}
