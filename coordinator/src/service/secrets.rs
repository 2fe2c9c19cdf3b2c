//! Secrets (`docs/admin.md`, "Secrets"): a user's or a team's, sealed in
//! the store, given to their workspaces at each create and start, and to
//! running ones at once when a file secret changes.

use super::Service;
use crate::domain::lifecycle::State;
use crate::domain::team::{self, Role};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::secrets::SecretRow;
use crate::store::WorkspaceFilter;
use base64::Engine;
use berth_proto::agent as pb;
use berth_proto::api::{
    is_secret_name, Secret, SecretChange, SecretInput, SecretKind, SECRET_MAX_BYTES,
};

/// Secrets one user or team may hold.
pub const MAX_SECRETS: i64 = 100;
/// How long a running workspace's node has to take a rotation.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whose secrets: the caller's own, or a team's.
fn scope(user: &str, team: Option<&str>) -> String {
    match team {
        Some(t) => format!("team:{t}"),
        None => format!("user:{user}"),
    }
}

/// What a sealed value is bound to: moved to another scope or name, it
/// does not open.
fn context(scope: &str, name: &str) -> Vec<u8> {
    format!("secret\0{scope}\0{name}").into_bytes()
}

/// The scope of a workspace's secrets: its team's when it has one (never
/// its owner's there, which its teammates could read), else its owner's.
fn scope_of(w: &WorkspaceRow) -> String {
    match w.team.is_empty() {
        true => scope(&w.owner, None),
        false => scope("", Some(&w.team)),
    }
}

fn listed(r: &SecretRow) -> Secret {
    Secret {
        name: r.name.clone(),
        team: r
            .scope
            .strip_prefix("team:")
            .unwrap_or_default()
            .to_string(),
        kind: if r.file {
            SecretKind::File
        } else {
            SecretKind::Env
        },
        prebuild: r.prebuild,
        bytes: r.bytes as u64,
        version: r.version,
        updated_at_ms: r.updated_at_ms,
        updated_by: r.updated_by.clone(),
    }
}

/// The value of `input`, checked.
fn value_of(name: &str, input: &SecretInput) -> Result<Vec<u8>> {
    let bad = |why: String| Error::invalid("invalid_secret", format!("secret {name:?}: {why}"));
    if !is_secret_name(name) || name.to_ascii_uppercase().starts_with("BERTH_") {
        return Err(bad(
            "a name is a letter or _, then letters, digits or _ (at most 64), not starting BERTH_"
                .into(),
        ));
    }
    let value = match (&input.value, &input.value_base64) {
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| bad(format!("value_base64: {e}")))?,
        _ => return Err(bad("give exactly one of value and value_base64".into())),
    };
    if value.len() > SECRET_MAX_BYTES {
        return Err(bad(format!("{} bytes; at most 64 KiB", value.len())));
    }
    let text_ok = std::str::from_utf8(&value).is_ok() && !value.contains(&0);
    if input.kind == SecretKind::Env && !text_ok {
        return Err(bad(
            "an environment variable's value is UTF-8 without NUL (use kind file)".into(),
        ));
    }
    Ok(value)
}

impl Service {
    /// Whether `caller` may read (`Role::Member`) or change (`Role::Admin`)
    /// team `t`'s secrets; platform admins may both.
    async fn secrets_access(&self, caller: &str, admin: bool, t: &str, need: Role) -> Result<()> {
        team::check_name(t)?;
        if !self.inner.store.team_exists(t).await? {
            return Err(Error::not_found(format!("no team named {t:?}")));
        }
        if admin {
            return Ok(());
        }
        match self.inner.store.team_role(t, caller).await? {
            Some(r) if r >= need => Ok(()),
            Some(_) if need == Role::Admin => Err(Error::forbidden(format!(
                "only an admin of team {t} changes its secrets"
            ))),
            Some(_) => Err(Error::forbidden(format!(
                "viewers of team {t} do not see its secrets"
            ))),
            None => Err(Error::forbidden(format!("you are not in team {t}"))),
        }
    }

    /// The caller's secrets, or team `t`'s, without their values.
    pub async fn secrets(&self, caller: &str, admin: bool, t: Option<&str>) -> Result<Vec<Secret>> {
        if let Some(t) = t {
            self.secrets_access(caller, admin, t, Role::Member).await?;
        }
        let rows = self.inner.store.secrets(&[scope(caller, t)]).await?;
        Ok(rows.iter().map(listed).collect())
    }

    /// Sets a secret of the caller's (or team `t`'s); running workspaces
    /// that have it as a file get the new value at once.
    pub async fn set_secret(
        &self,
        caller: &str,
        admin: bool,
        t: Option<&str>,
        name: &str,
        input: &SecretInput,
    ) -> Result<SecretChange> {
        let value = value_of(name, input)?;
        if let Some(t) = t {
            self.secrets_access(caller, admin, t, Role::Admin).await?;
        }
        let scope = scope(caller, t);
        let row = SecretRow {
            sealed: self.inner.sealer.seal(&value, &context(&scope, name)),
            scope: scope.clone(),
            name: name.to_string(),
            file: input.kind == SecretKind::File,
            prebuild: input.prebuild,
            bytes: value.len() as i64,
            version: 0,
            updated_at_ms: self.now(),
            updated_by: caller.to_string(),
        };
        if !self.inner.store.put_secret(&row, MAX_SECRETS).await? {
            return Err(Error::conflict(
                "too_many_secrets",
                format!("{scope} holds {MAX_SECRETS} secrets; remove one first"),
            ));
        }
        let now = self
            .inner
            .store
            .secrets(std::slice::from_ref(&scope))
            .await?;
        let secret = now.iter().find(|r| r.name == name).map(listed);
        let (updated, at_next_start) = self.rotate(&scope, row.file).await;
        Ok(SecretChange {
            secret,
            updated,
            at_next_start,
        })
    }

    /// Removes a secret of the caller's (or team `t`'s).
    pub async fn remove_secret(
        &self,
        caller: &str,
        admin: bool,
        t: Option<&str>,
        name: &str,
    ) -> Result<SecretChange> {
        if let Some(t) = t {
            self.secrets_access(caller, admin, t, Role::Admin).await?;
        }
        let scope = scope(caller, t);
        let was = self
            .inner
            .store
            .secrets(std::slice::from_ref(&scope))
            .await?;
        let file = was.iter().any(|r| r.name == name && r.file);
        if !self.inner.store.delete_secret(&scope, name).await? {
            return Err(Error::not_found(format!("no secret named {name:?}")));
        }
        let (updated, at_next_start) = self.rotate(&scope, file).await;
        Ok(SecretChange {
            secret: None,
            updated,
            at_next_start,
        })
    }

    /// What a workspace (or, with `prebuild`, a prebuild build of it) is
    /// given: its scope's secrets, opened; for a prebuild only those marked
    /// for prebuilds. One that no longer opens (another key) is left out.
    pub(super) async fn secrets_for(
        &self,
        w: &WorkspaceRow,
        prebuild: bool,
    ) -> Option<pb::SecretSet> {
        let scope = scope_of(w);
        let rows = match self.inner.store.secrets(std::slice::from_ref(&scope)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(workspace = %w.id, error = %e, "reading secrets; sent without");
                return None;
            }
        };
        let secrets = rows
            .iter()
            .filter(|r| r.prebuild || !prebuild)
            .filter_map(|r| {
                let value = self.inner.sealer.open(&r.sealed, &context(&r.scope, &r.name));
                if value.is_none() {
                    tracing::warn!(scope = %r.scope, secret = %r.name, "a secret does not open with this key");
                }
                Some(pb::Secret {
                    name: r.name.clone(),
                    value: value?,
                    file: r.file,
                })
            })
            .collect();
        Some(pb::SecretSet { secrets })
    }

    /// Gives `scope`'s running workspaces their secrets now when a file
    /// secret changed; returns those updated and those that see the change
    /// at their next start.
    async fn rotate(&self, scope: &str, file: bool) -> (Vec<String>, Vec<String>) {
        let filter = match scope.split_once(':') {
            Some(("team", t)) => WorkspaceFilter {
                team: Some(t.to_string()),
                ..Default::default()
            },
            _ => WorkspaceFilter {
                owner: scope.strip_prefix("user:").map(str::to_string),
                ..Default::default()
            },
        };
        let running: Vec<WorkspaceRow> = match self.inner.store.workspaces(&filter).await {
            Ok(all) => all
                .into_iter()
                .filter(|w| w.state == State::Running && scope_of(w) == scope)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing workspaces for a secret's rotation");
                return (vec![], vec![]);
            }
        };
        if !file {
            return (vec![], running.into_iter().map(|w| w.name).collect());
        }
        let pushes = running.into_iter().map(|w| async move {
            let Some(node) = w.node.clone() else {
                return Err(w.name);
            };
            let cmd = pb::request::Command::Secrets(pb::SecretsRequest {
                name: w.id.clone(),
                secrets: self.secrets_for(&w, false).await,
            });
            match self.inner.link.call(&node, cmd, PUSH_TIMEOUT).await {
                Ok(pb::response::Result::Status(_)) => Ok(w.name),
                other => {
                    let why = match other {
                        Ok(pb::response::Result::Error(e)) => e.message,
                        Err(e) => e.to_string(),
                        Ok(_) => "an unexpected answer".into(),
                    };
                    tracing::warn!(workspace = %w.id, %node, error = %why, "a secret's rotation did not reach the node");
                    Err(w.name)
                }
            }
        });
        let mut updated = vec![];
        let mut later = vec![];
        for r in futures::future::join_all(pushes).await {
            match r {
                Ok(n) => updated.push(n),
                Err(n) => later.push(n),
            }
        }
        (updated, later)
    }
}
