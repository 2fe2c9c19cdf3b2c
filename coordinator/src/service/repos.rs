//! Repository workspaces: the git credentials users keep (sealed, handed to
//! a node only with the clone or sync that needs them), a workspace's init
//! log, and sync.

use super::Service;
use crate::domain::repo;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::link::{self, Duplex};
use crate::store::GitCredentialRow;
use berth_proto::agent as pb;
use berth_proto::api::{AddGitCredential, GitCredential, SyncResult};
use berth_proto::codes::{self, Code};
use std::time::Duration;

/// Most git credentials a user may keep.
const MAX_CREDENTIALS: usize = 100;
/// How long a sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// The user name sent with a token when none is given (what GitHub and
/// Gitea take for a token).
pub const DEFAULT_GIT_USER: &str = "x-access-token";

fn context(owner: &str, host: &str) -> Vec<u8> {
    format!("git-credential\0{owner}\0{host}").into_bytes()
}

fn view(c: &GitCredentialRow) -> GitCredential {
    GitCredential {
        host: c.host.clone(),
        username: c.username.clone(),
        created_at_ms: c.created_at_ms,
    }
}

/// What the agent's refusal of an init log or sync means to the user.
fn refused(e: pb::Error) -> Error {
    match codes::of(&e) {
        Some(Code::NotFound | Code::Conflict) => Error::conflict("not_running", e.message),
        Some(Code::InvalidRequest) => Error::conflict("not_a_repository", e.message),
        _ => Error::node("node_error", format!("{}: {}", e.code, e.message)),
    }
}

impl Service {
    /// Keeps `owner`'s token for a git host (replacing one kept before).
    pub async fn add_git_credential(
        &self,
        owner: &str,
        req: &AddGitCredential,
    ) -> Result<GitCredential> {
        let host = repo::credential_host(&req.host)?;
        let bad = |why: &str| Error::invalid("invalid_git_credential", why.to_string());
        if req.token.is_empty() || req.token.chars().count() > 4096 {
            return Err(bad("the token must be 1 to 4096 characters"));
        }
        if req.token.chars().any(|c| c.is_control()) {
            return Err(bad("the token has a control character (a stray newline?)"));
        }
        let username = req.username.clone().unwrap_or(DEFAULT_GIT_USER.into());
        let printable = |s: &str| s.chars().all(|c| (' '..='~').contains(&c));
        if username.is_empty() || username.len() > 255 || !printable(&username) {
            return Err(bad(
                "the user name must be 1 to 255 printable ASCII characters",
            ));
        }
        let store = &self.inner.store;
        let kept = store.git_credentials(owner).await?;
        if kept.len() >= MAX_CREDENTIALS && !kept.iter().any(|c| c.host == host) {
            return Err(Error::conflict(
                "too_many_git_credentials",
                format!("at most {MAX_CREDENTIALS} git credentials per user"),
            ));
        }
        let row = GitCredentialRow {
            owner: owner.into(),
            sealed: self
                .inner
                .sealer
                .seal(req.token.as_bytes(), &context(owner, &host)),
            host,
            username,
            created_at_ms: self.now(),
        };
        store.put_git_credential(&row).await?;
        Ok(view(&row))
    }

    /// `owner`'s git credentials (hosts and user names; never the tokens).
    /// The caller's settings.
    pub async fn user_config(&self, user: &str) -> Result<berth_proto::api::UserConfig> {
        Ok(berth_proto::api::UserConfig {
            dotfiles: self.inner.store.dotfiles(user).await?,
        })
    }

    /// Sets (None: clears) the caller's dotfiles repository.
    pub async fn set_dotfiles(
        &self,
        user: &str,
        url: Option<&str>,
    ) -> Result<berth_proto::api::UserConfig> {
        if let Some(u) = url {
            crate::domain::repo::check_dotfiles(u)?;
        }
        self.inner
            .store
            .set_dotfiles(user, url.unwrap_or_default())
            .await?;
        self.user_config(user).await
    }

    pub async fn git_credentials(&self, owner: &str) -> Result<Vec<GitCredential>> {
        let rows = self.inner.store.git_credentials(owner).await?;
        Ok(rows.iter().map(view).collect())
    }

    /// Forgets `owner`'s credential for `host`.
    pub async fn delete_git_credential(&self, owner: &str, host: &str) -> Result<()> {
        let host = repo::credential_host(host)?;
        match self.inner.store.delete_git_credential(owner, &host).await? {
            true => Ok(()),
            false => Err(Error::not_found(format!("no git credential for {host}"))),
        }
    }

    /// `owner`'s credential for the host of `url`, opened, for one command.
    pub(super) async fn git_credential_for(
        &self,
        owner: &str,
        url: &str,
    ) -> Option<pb::GitCredential> {
        let host = repo::host_of(url)?;
        let rows = match self.inner.store.git_credentials(owner).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "git credentials not read");
                return None;
            }
        };
        let row = rows.into_iter().find(|c| c.host == host)?;
        let token = self.inner.sealer.open(&row.sealed, &context(owner, &host));
        let Some(token) = token.and_then(|t| String::from_utf8(t).ok()) else {
            tracing::warn!(%owner, %host, "a git credential does not open with this key");
            return None;
        };
        Some(pb::GitCredential {
            username: row.username,
            token,
        })
    }

    /// The output of a workspace's clone and lifecycle commands; with
    /// `follow`, what is appended until its steps are done.
    pub async fn init_log(&self, owner: &str, name: &str, follow: bool) -> Result<Duplex> {
        let w = self.find(owner, name).await?;
        // A workspace from an image has an init log once its dotfiles ran.
        let node = match (&w.init, &w.node) {
            (Some(_), Some(node)) if w.repo.is_none() => node.clone(),
            _ => repository_node(&w)?,
        };
        let cmd = pb::request::Command::InitLog(pb::InitLogRequest {
            name: w.id.clone(),
            follow,
        });
        link::tunnel(&*self.inner.link, &node, cmd)
            .await?
            .map_err(refused)
    }

    /// `git pull --rebase` (or `git push`) of the workspace's repository.
    pub async fn sync(&self, owner: &str, name: &str, push: bool) -> Result<SyncResult> {
        let w = self.find(owner, name).await?;
        let node = repository_node(&w)?;
        if w.state != crate::domain::lifecycle::State::Running {
            return Err(Error::conflict(
                "not_running",
                format!("workspace {name} is {}", w.state.as_str()),
            ));
        }
        let url = w.repo.as_ref().map(|r| r.url.as_str()).unwrap_or_default();
        let credential = self.git_credential_for(&w.owner, url).await;
        let cmd = pb::request::Command::Sync(pb::SyncRequest {
            name: w.id.clone(),
            push,
            credential,
        });
        match self.inner.link.call(&node, cmd, SYNC_TIMEOUT).await? {
            pb::response::Result::Synced(s) => Ok(SyncResult {
                outcome: s.outcome,
                files: s.files,
                message: s.message,
                commit: s.commit,
            }),
            pb::response::Result::Error(e) => Err(refused(e)),
            other => Err(Error::node(
                "node_error",
                format!("unexpected answer {other:?}"),
            )),
        }
    }
}

/// The node of a workspace made from a repository.
fn repository_node(w: &WorkspaceRow) -> Result<String> {
    if w.repo.is_none() {
        return Err(Error::conflict(
            "not_a_repository",
            format!("workspace {} was not made from a repository", w.name),
        ));
    }
    w.node.clone().ok_or_else(|| {
        Error::conflict(
            "not_running",
            format!("workspace {} is {}", w.name, w.state.as_str()),
        )
    })
}
