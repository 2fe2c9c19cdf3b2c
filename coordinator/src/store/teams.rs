//! Teams and their members.

use super::audit::Audited;
use super::Store;
use crate::domain::team::Role;
use crate::error::{Error, Result};
use sqlx::Row;

impl Store {
    /// Makes team `name`; 409 if it exists.
    pub async fn create_team(&self, name: &str, now_ms: i64) -> Result<()> {
        match sqlx::query("INSERT INTO teams (name, created_at_ms) VALUES ($1, $2)")
            .bind(name)
            .bind(now_ms)
            .audited(self)
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::conflict(
                "team_exists",
                format!("a team named {name:?} exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether team `name` exists.
    pub async fn team_exists(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Sets `user`'s role in `team` (adding them).
    pub async fn set_team_member(&self, team: &str, user: &str, role: Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO team_members (team, user_name, role) VALUES ($1, $2, $3) \
             ON CONFLICT (team, user_name) DO UPDATE SET role = excluded.role",
        )
        .bind(team)
        .bind(user)
        .bind(role.as_str())
        .audited(self)
        .await?;
        Ok(())
    }

    /// Removes `user` from `team`; false if they were not in it.
    pub async fn remove_team_member(&self, team: &str, user: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM team_members WHERE team = $1 AND user_name = $2")
            .bind(team)
            .bind(user)
            .audited(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// `user`'s role in `team`, if any.
    pub async fn team_role(&self, team: &str, user: &str) -> Result<Option<Role>> {
        let r = sqlx::query("SELECT role FROM team_members WHERE team = $1 AND user_name = $2")
            .bind(team)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.and_then(|r| Role::parse(&r.get::<String, _>(0))))
    }

    /// Teams and their members (`user`'s teams only, or all), by name.
    pub async fn teams(&self, user: Option<&str>) -> Result<Vec<(String, Vec<(String, Role)>)>> {
        let rows = match user {
            Some(u) => sqlx::query(
                "SELECT t.name, m.user_name, m.role FROM teams t LEFT JOIN team_members m ON m.team = t.name \
                 WHERE t.name IN (SELECT team FROM team_members WHERE user_name = $1) ORDER BY t.name, m.user_name",
            )
            .bind(u)
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(
                "SELECT t.name, m.user_name, m.role FROM teams t LEFT JOIN team_members m ON m.team = t.name \
                 ORDER BY t.name, m.user_name",
            )
            .fetch_all(&self.pool)
            .await?,
        };
        let mut out: Vec<(String, Vec<(String, Role)>)> = Vec::new();
        for r in rows {
            let team: String = r.try_get(0)?;
            if out.last().is_none_or(|(t, _)| *t != team) {
                out.push((team, Vec::new()));
            }
            let member: Option<String> = r.try_get(1)?;
            let role: Option<String> = r.try_get(2)?;
            if let (Some(m), Some(role)) = (member, role.as_deref().and_then(Role::parse)) {
                if let Some((_, members)) = out.last_mut() {
                    members.push((m, role));
                }
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Shares workspace `id` read-only with `user`.
    pub async fn share(&self, id: &str, user: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO workspace_shares (workspace_id, user_name, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, user_name) DO NOTHING",
        )
        .bind(id)
        .bind(user)
        .bind(now_ms)
        .audited(self)
        .await?;
        Ok(())
    }

    /// Stops sharing workspace `id` with `user`; false if it was not.
    pub async fn unshare(&self, id: &str, user: &str) -> Result<bool> {
        let r =
            sqlx::query("DELETE FROM workspace_shares WHERE workspace_id = $1 AND user_name = $2")
                .bind(id)
                .bind(user)
                .audited(self)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Who workspace `id` is shared with.
    pub async fn shares(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT user_name FROM workspace_shares WHERE workspace_id = $1 ORDER BY user_name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Whether workspace `id` is shared with `user`.
    pub async fn shared_with(&self, id: &str, user: &str) -> Result<bool> {
        Ok(
            sqlx::query(
                "SELECT 1 FROM workspace_shares WHERE workspace_id = $1 AND user_name = $2",
            )
            .bind(id)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .is_some(),
        )
    }

    /// Ids of the workspaces shared with `user`.
    pub async fn shared_ids(&self, user: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT workspace_id FROM workspace_shares WHERE user_name = $1")
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
