//! OIDC sign-in's policy (docs/admin.md, "OIDC sign-in"): who a verified
//! ID token's claims make a user, and what their groups give them: the
//! platform's admin role, teams and roles in them. Pure.

use crate::domain::team::Role;

/// The `[oidc]` configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcPolicy {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// None: a public client (PKCE only).
    pub client_secret: Option<String>,
    /// The coordinator's URL as browsers reach it; the provider sends them
    /// back to `<public_url>/auth/oidc/callback`.
    pub public_url: String,
    /// Claims naming the user, the first present wins.
    pub username_claims: Vec<String>,
    /// The claim holding the user's groups (a list of strings).
    pub groups_claim: String,
    pub scopes: Vec<String>,
    /// How long the API token a sign-in gives lasts.
    pub token_ttl_ms: i64,
    /// What each group gives. Empty: anyone the provider signs in is a member.
    pub groups: Vec<GroupGrant>,
}

/// What members of one provider group get.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupGrant {
    pub group: String,
    /// The platform's admin role.
    pub admin: bool,
    /// A team and the role in it.
    pub team: Option<(String, Role)>,
}

/// What a sign-in gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub user: String,
    pub admin: bool,
    /// Teams and roles (the highest any of the user's groups gives).
    pub teams: Vec<(String, Role)>,
}

/// Why a sign-in is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No username claim, or one that is not a Berth user name.
    NoUser(String),
    /// None of the user's groups is one the policy names.
    NoGroup(String),
}

impl OidcPolicy {
    /// Where the provider sends the browser back.
    pub fn redirect_url(&self) -> String {
        format!(
            "{}/auth/oidc/callback",
            self.public_url.trim_end_matches('/')
        )
    }

    /// What the verified `claims` give, or why they give nothing.
    pub fn grant(&self, claims: &serde_json::Value) -> Result<Grant, Refusal> {
        let raw = self
            .username_claims
            .iter()
            .find_map(|c| claims.get(c).and_then(|v| v.as_str()))
            .ok_or_else(|| {
                Refusal::NoUser(format!(
                    "the ID token has none of the claims {:?}",
                    self.username_claims
                ))
            })?;
        let user = raw.to_ascii_lowercase();
        if crate::domain::validate::user_name(&user).is_err() {
            return Err(Refusal::NoUser(format!(
                "{raw:?} is not a user name (1 to 64 of a-z, 0-9, '.', '_', '@', '-')"
            )));
        }
        if self.groups.is_empty() {
            return Ok(Grant {
                user,
                admin: false,
                teams: vec![],
            });
        }
        let theirs: Vec<&str> = match claims.get(&self.groups_claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|g| g.as_str()).collect(),
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            _ => vec![],
        };
        let matched: Vec<&GroupGrant> = self
            .groups
            .iter()
            .filter(|g| theirs.contains(&g.group.as_str()))
            .collect();
        if matched.is_empty() {
            return Err(Refusal::NoGroup(format!(
                "{user} is in none of the groups that may sign in (claim {:?})",
                self.groups_claim
            )));
        }
        let mut teams: Vec<(String, Role)> = Vec::new();
        for (team, role) in matched.iter().filter_map(|g| g.team.clone()) {
            match teams.iter_mut().find(|(t, _)| *t == team) {
                Some((_, r)) => *r = (*r).max(role),
                None => teams.push((team, role)),
            }
        }
        teams.sort();
        Ok(Grant {
            user,
            admin: matched.iter().any(|g| g.admin),
            teams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(groups: Vec<GroupGrant>) -> OidcPolicy {
        OidcPolicy {
            issuer: "https://id.example".into(),
            client_id: "berth".into(),
            client_secret: None,
            public_url: "https://berth.example/".into(),
            username_claims: vec!["preferred_username".into(), "email".into()],
            groups_claim: "groups".into(),
            scopes: vec!["openid".into()],
            token_ttl_ms: 1000,
            groups,
        }
    }

    fn g(group: &str, admin: bool, team: Option<(&str, Role)>) -> GroupGrant {
        GroupGrant {
            group: group.into(),
            admin,
            team: team.map(|(t, r)| (t.into(), r)),
        }
    }

    #[test]
    fn groups_give_teams_and_roles_and_no_group_is_refused() {
        let p = policy(vec![
            g("ops", true, None),
            g("web-dev", false, Some(("web", Role::Member))),
            g("web-lead", false, Some(("web", Role::Admin))),
            g("reviewers", false, Some(("review", Role::Viewer))),
        ]);
        assert_eq!(p.redirect_url(), "https://berth.example/auth/oidc/callback");
        let got = p
            .grant(&json!({"preferred_username": "Alice", "groups": ["web-dev", "web-lead", "reviewers", "other"]}))
            .unwrap();
        assert_eq!(
            got,
            Grant {
                user: "alice".into(),
                admin: false,
                teams: vec![("review".into(), Role::Viewer), ("web".into(), Role::Admin)],
            }
        );
        let got = p
            .grant(&json!({"email": "bob@x.io", "groups": "ops"}))
            .unwrap();
        assert_eq!((got.user.as_str(), got.admin), ("bob@x.io", true));
        for claims in [
            json!({"preferred_username": "carol"}),
            json!({"preferred_username": "carol", "groups": ["other"]}),
            json!({"preferred_username": "carol", "groups": 7}),
        ] {
            assert!(
                matches!(p.grant(&claims), Err(Refusal::NoGroup(_))),
                "{claims}"
            );
        }
        for claims in [
            json!({"sub": "x"}),
            json!({"preferred_username": "no spaces"}),
        ] {
            assert!(
                matches!(p.grant(&claims), Err(Refusal::NoUser(_))),
                "{claims}"
            );
        }
        // No groups configured: anyone signed in is a member.
        let open = policy(vec![])
            .grant(&json!({"email": "dave@x.io"}))
            .unwrap();
        assert_eq!((open.admin, open.teams.len()), (false, 0));
    }
}
