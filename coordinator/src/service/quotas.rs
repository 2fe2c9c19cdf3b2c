//! Users' quotas: the limits in force and what is used; an admin's limits
//! for one user. The check itself is the store's, in the transaction of
//! each create and start.

use super::Service;
use crate::domain::quota::{self, Limits};
use crate::error::{Error, Result};
use crate::store::Subject;
use berth_proto::api::{Quota, QuotaLimits, QuotaUsage};

/// A user's or team's limits as the API says them, and back.
fn view(l: Limits) -> QuotaLimits {
    QuotaLimits {
        running: l.running,
        workspaces: l.workspaces,
        cpu_millis: l.cpu_millis,
        memory_bytes: l.memory_bytes,
        disk_bytes: l.disk_bytes,
        monthly_budget: l.monthly_budget,
    }
}

fn limits_of(l: &QuotaLimits) -> Limits {
    Limits {
        running: l.running,
        workspaces: l.workspaces,
        cpu_millis: l.cpu_millis,
        memory_bytes: l.memory_bytes,
        disk_bytes: l.disk_bytes,
        monthly_budget: l.monthly_budget,
    }
}

impl Service {
    /// `user`'s quota and usage.
    pub async fn quota(&self, user: &str) -> Result<Quota> {
        crate::domain::validate::user_name(user)?;
        self.quota_of(Subject::User(user)).await
    }

    /// A team's quota and usage (what its workspaces use, whoever owns them).
    pub async fn team_quota(&self, team: &str) -> Result<Quota> {
        self.check_team(team).await?;
        self.quota_of(Subject::Team(team)).await
    }

    async fn check_team(&self, team: &str) -> Result<()> {
        crate::domain::team::check_name(team)?;
        if !self.inner.store.team_exists(team).await? {
            return Err(Error::not_found(format!("no team named {team:?}")));
        }
        Ok(())
    }

    async fn quota_of(&self, who: Subject<'_>) -> Result<Quota> {
        let store = &self.inner.store;
        let own = store.quota_override(who).await?;
        let (u, spent) = store
            .quota_usage(who, quota::month_start_ms(self.now()))
            .await?;
        // Users have the configured defaults; teams only what is set.
        let (name, team, defaults) = match who {
            Subject::User(u) => (u, false, self.inner.quotas),
            Subject::Team(t) => (t, true, Limits::default()),
        };
        Ok(Quota {
            user: name.to_string(),
            team,
            limits: view(defaults.overridden_by(own)),
            set_for_user: view(own),
            usage: QuotaUsage {
                running: u.running,
                workspaces: u.workspaces,
                cpu_millis: u.cpu_millis,
                memory_bytes: u.memory_bytes,
                disk_bytes: u.disk_bytes,
            },
            spent_this_month: spent,
        })
    }

    /// Sets `user`'s own limits (absent: the default). Lowering one below
    /// what is used refuses more, and keeps what is there.
    pub async fn set_quota(&self, user: &str, l: &QuotaLimits) -> Result<Quota> {
        crate::domain::validate::user_name(user)?;
        self.set_quota_of(Subject::User(user), l).await
    }

    /// Sets a team's limits (absent: none).
    pub async fn set_team_quota(&self, team: &str, l: &QuotaLimits) -> Result<Quota> {
        self.check_team(team).await?;
        self.set_quota_of(Subject::Team(team), l).await
    }

    async fn set_quota_of(&self, who: Subject<'_>, l: &QuotaLimits) -> Result<Quota> {
        let over = |v: Option<u64>, max: u64| v.is_some_and(|v| v > max);
        if l.monthly_budget
            .is_some_and(|b| !(b.is_finite() && (0.0..=1e9).contains(&b)))
            || over(l.running, 1_000_000)
            || over(l.workspaces, 1_000_000)
            || over(l.cpu_millis, 1_000_000_000)
            || over(l.memory_bytes, 1 << 50)
            || over(l.disk_bytes, 1 << 50)
        {
            return Err(Error::invalid(
                "invalid_quota",
                "running and workspaces are at most 1000000, cpu_millis 1000000000, memory_bytes and disk_bytes 2^50, monthly_budget 0 to 1000000000",
            ));
        }
        self.inner.store.set_quota(who, &limits_of(l)).await?;
        self.quota_of(who).await
    }
}
