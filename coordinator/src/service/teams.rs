//! Teams: made by platform admins, their members managed by the team's
//! admins; who may read or act on a workspace that is not theirs.

use super::Service;
use crate::domain::lifecycle::State;
use crate::domain::team::{self, Need, Role};
use crate::domain::validate;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use berth_proto::api::{Team, TeamMember};

impl Service {
    /// Makes a team (platform admins; the HTTP layer checks).
    pub async fn create_team(&self, name: &str) -> Result<Team> {
        team::check_name(name)?;
        self.inner.store.create_team(name, self.now()).await?;
        Ok(Team {
            name: name.to_string(),
            members: Vec::new(),
        })
    }

    /// The teams `user` is in (`all`: every team).
    pub async fn teams(&self, user: &str, all: bool) -> Result<Vec<Team>> {
        let rows = self.inner.store.teams((!all).then_some(user)).await?;
        Ok(rows
            .into_iter()
            .map(|(name, members)| Team {
                name,
                members: members
                    .into_iter()
                    .map(|(user, role)| TeamMember {
                        user,
                        role: role.as_str().to_string(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// One team, as its members (or a platform admin) see it.
    async fn team(&self, name: &str) -> Result<Team> {
        self.teams("", true)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::not_found(format!("no team named {name:?}")))
    }

    /// `caller` may manage `team`'s members: a platform admin or the team's admin.
    async fn manages(&self, caller: &str, platform_admin: bool, team: &str) -> Result<()> {
        team::check_name(team)?;
        if !self.inner.store.team_exists(team).await? {
            return Err(Error::not_found(format!("no team named {team:?}")));
        }
        if platform_admin || self.inner.store.team_role(team, caller).await? == Some(Role::Admin) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "only an admin of team {team} manages its members"
            )))
        }
    }

    /// Sets `user`'s role in `team`.
    pub async fn set_team_member(
        &self,
        caller: &str,
        platform_admin: bool,
        team: &str,
        user: &str,
        role: &str,
    ) -> Result<Team> {
        self.manages(caller, platform_admin, team).await?;
        validate::user_name(user)?;
        let role = Role::parse(role).ok_or_else(|| {
            Error::invalid("invalid_role", "role must be admin, member or viewer")
        })?;
        self.inner.store.set_team_member(team, user, role).await?;
        self.team(team).await
    }

    /// Removes `user` from `team`.
    pub async fn remove_team_member(
        &self,
        caller: &str,
        platform_admin: bool,
        team: &str,
        user: &str,
    ) -> Result<Team> {
        self.manages(caller, platform_admin, team).await?;
        validate::user_name(user)?;
        if !self.inner.store.remove_team_member(team, user).await? {
            return Err(Error::not_found(format!("{user} is not in team {team}")));
        }
        self.team(team).await
    }

    /// `user`'s role in `team`; refused unless it allows `need`.
    pub async fn team_allows(&self, team: &str, user: &str, need: Need) -> Result<Role> {
        match self.inner.store.team_role(team, user).await? {
            Some(r) if r.allows(need) => Ok(r),
            Some(_) => Err(Error::forbidden(format!(
                "viewers of team {team} read its workspaces; they do not act on them"
            ))),
            None => Err(Error::forbidden(format!("you are not in team {team}"))),
        }
    }

    /// Whether `caller` may `need` `owner`'s workspace `name` through a team
    /// (the HTTP layer has let owners and platform admins through).
    pub async fn may_access(
        &self,
        caller: &str,
        owner: &str,
        name: &str,
        need: Need,
    ) -> Result<()> {
        let w = self.find(owner, name).await?;
        let shared = self.inner.store.shared_with(&w.id, caller).await?;
        if shared && need == Need::Read {
            return Ok(());
        }
        let in_team =
            !w.team.is_empty() && self.inner.store.team_role(&w.team, caller).await?.is_some();
        if !in_team {
            return Err(Error::forbidden(if shared {
                format!("{name} is shared with you to read; you do not act on it")
            } else {
                "members can only act on their own workspaces, their teams' and those shared with them".to_string()
            }));
        }
        self.team_allows(&w.team, caller, need).await.map(|_| ())
    }

    /// Shares `owner`'s workspace `name` read-only with `user` (or stops).
    pub async fn share(
        &self,
        owner: &str,
        name: &str,
        user: &str,
        on: bool,
    ) -> Result<Vec<String>> {
        validate::user_name(user)?;
        let w = self.find(owner, name).await?;
        if on {
            self.inner.store.share(&w.id, user, self.now()).await?;
        } else if !self.inner.store.unshare(&w.id, user).await? {
            return Err(Error::not_found(format!(
                "{name} is not shared with {user}"
            )));
        }
        self.inner.store.shares(&w.id).await
    }

    /// Who `owner`'s workspace `name` is shared with.
    pub async fn shares(&self, owner: &str, name: &str) -> Result<Vec<String>> {
        let w = self.find(owner, name).await?;
        self.inner.store.shares(&w.id).await
    }

    /// The workspaces shared with `user`.
    pub async fn shared_with(&self, user: &str) -> Result<Vec<WorkspaceRow>> {
        let mut out = Vec::new();
        for id in self.inner.store.shared_ids(user).await? {
            if let Some(w) = self.inner.store.workspace(&id).await? {
                if w.state != State::Deleted {
                    out.push(w);
                }
            }
        }
        Ok(out)
    }

    /// A create naming a team: the team exists and the owner acts in it.
    pub(super) async fn check_team_of_create(&self, owner: &str, team: &str) -> Result<()> {
        team::check_name(team)?;
        if !self.inner.store.team_exists(team).await? {
            return Err(Error::not_found(format!("no team named {team:?}")));
        }
        self.team_allows(team, owner, Need::Act).await.map(|_| ())
    }
}
