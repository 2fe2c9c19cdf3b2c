//! The `[oidc]` table: sign-in with an OpenID Connect provider
//! (docs/admin.md, "OIDC sign-in").

use super::{invalid, ConfigError};
use crate::domain::oidc::{GroupGrant, OidcPolicy};
use crate::domain::team::{self, Role};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The provider's issuer URL.
    pub issuer: String,
    pub client_id: String,
    /// The client's secret, or a file holding it (neither: a public client).
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// The coordinator's URL as browsers reach it.
    pub public_url: String,
    /// Claims naming the user, first present wins (default
    /// ["preferred_username", "email"]).
    pub username_claims: Option<Vec<String>>,
    /// The claim listing the user's groups (default "groups").
    pub groups_claim: Option<String>,
    /// Scopes asked for (default ["openid", "profile", "email"]; "openid" is
    /// always asked).
    pub scopes: Option<Vec<String>>,
    /// Hours the API token of a sign-in lasts (default 12).
    pub token_hours: Option<f64>,
    /// What each group gives; none: anyone the provider signs in is a member.
    #[serde(default)]
    pub groups: Vec<GroupFile>,
}

/// `[[oidc.groups]]`: members of `group` get the platform's admin role,
/// and/or `role` (default member) in `team` (made if missing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub group: String,
    pub admin: Option<bool>,
    pub team: Option<String>,
    pub role: Option<String>,
}

pub(super) fn validate_oidc(o: OidcFile) -> Result<OidcPolicy, ConfigError> {
    let url = |key: &str, v: &str| match v.starts_with("https://") || v.starts_with("http://") {
        true => Ok(v.trim_end_matches('/').to_string()),
        false => Err(invalid(key, "an http(s) URL")),
    };
    let issuer = url("oidc.issuer", &o.issuer)?;
    let public_url = url("oidc.public_url", &o.public_url)?;
    if o.client_id.is_empty() {
        return Err(invalid("oidc.client_id", "must not be empty"));
    }
    let client_secret = match (o.client_secret, o.client_secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "oidc.client_secret",
                "give it or client_secret_file, not both",
            ))
        }
        (Some(s), None) => Some(s),
        (None, Some(p)) => Some(
            std::fs::read_to_string(&p)
                .map_err(|e| invalid("oidc.client_secret_file", &format!("{}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let hours = o.token_hours.unwrap_or(12.0);
    if !(0.01..=24.0 * 90.0).contains(&hours) {
        return Err(invalid("oidc.token_hours", "must be 0.01 to 2160"));
    }
    let mut scopes = o
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let mut groups = Vec::new();
    for (i, g) in o.groups.into_iter().enumerate() {
        let key = |k: &str| format!("oidc.groups[{i}].{k}");
        if g.group.is_empty() {
            return Err(invalid(&key("group"), "must not be empty"));
        }
        let team = match g.team {
            Some(t) => {
                team::check_name(&t).map_err(|e| invalid(&key("team"), &e.message))?;
                let role = g.role.as_deref().unwrap_or("member");
                let role = Role::parse(role)
                    .ok_or_else(|| invalid(&key("role"), "admin, member or viewer"))?;
                Some((t, role))
            }
            None if g.role.is_some() => return Err(invalid(&key("role"), "needs a team")),
            None => None,
        };
        let admin = g.admin.unwrap_or(false);
        if !admin && team.is_none() {
            return Err(invalid(
                &key("group"),
                "gives nothing: set admin = true or a team",
            ));
        }
        groups.push(GroupGrant {
            group: g.group,
            admin,
            team,
        });
    }
    Ok(OidcPolicy {
        issuer,
        client_id: o.client_id,
        client_secret,
        public_url,
        username_claims: o
            .username_claims
            .unwrap_or_else(|| vec!["preferred_username".into(), "email".into()]),
        groups_claim: o.groups_claim.unwrap_or_else(|| "groups".into()),
        scopes,
        token_ttl_ms: (hours * 3_600_000.0) as i64,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::domain::team::Role;

    const BASE: &str = "[oidc]\nissuer = \"https://id.example/\"\nclient_id = \"berth\"\npublic_url = \"https://berth.example\"\n";

    #[test]
    fn an_oidc_table_is_read_with_its_defaults_and_checked() {
        let p = parse(&format!(
            "{BASE}[[oidc.groups]]\ngroup = \"ops\"\nadmin = true\n[[oidc.groups]]\ngroup = \"dev\"\nteam = \"web\"\n"
        ))
        .unwrap()
        .oidc
        .unwrap();
        assert_eq!(p.issuer, "https://id.example");
        assert_eq!(p.scopes, ["openid", "profile", "email"]);
        assert_eq!(p.token_ttl_ms, 12 * 3_600_000);
        assert_eq!(p.groups[1].team, Some(("web".into(), Role::Member)));
        for (extra, key) in [
            ("[[oidc.groups]]\ngroup = \"x\"\n", "oidc.groups[0].group"),
            (
                "[[oidc.groups]]\ngroup = \"x\"\nteam = \"web\"\nrole = \"owner\"\n",
                "oidc.groups[0].role",
            ),
            (
                "[[oidc.groups]]\ngroup = \"x\"\nrole = \"admin\"\nadmin = true\n",
                "oidc.groups[0].role",
            ),
            ("token_hours = 0\n", "oidc.token_hours"),
        ] {
            let e = parse(&format!("{BASE}{extra}")).unwrap_err().to_string();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
        let e = parse(
            "[oidc]\nissuer = \"id.example\"\nclient_id = \"b\"\npublic_url = \"https://b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("oidc.issuer"), "{e}");
    }
}
