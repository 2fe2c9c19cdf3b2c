//! The idle policy at work: running workspaces whose node says they are
//! idle are warned (a notice in their open terminals, and an event), then
//! stopped, as their tier says; a keepalive holds them. Wake on connect
//! starts them again. A workspace stopped longer than its tier's TTL is
//! deleted, once a confirmed backup holds what it had.

use super::Service;
use crate::domain::idle::{self, Due, Facts, Policy, Ttl};
use crate::domain::lifecycle::{Desired, Event, State};
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::store::WorkspaceFilter;
use berth_proto::agent as pb;
use berth_proto::api::{Idle, IdleReason};
use std::time::Duration;

/// A node's verdict as the API keeps it.
pub(super) fn idle_of(v: &pb::IdleVerdict) -> Idle {
    let ms = |t: u64| t.min(i64::MAX as u64) as i64;
    Idle {
        idle_since_ms: (v.idle_since_ms != 0).then(|| ms(v.idle_since_ms)),
        reasons: v
            .reasons
            .iter()
            .map(|r| IdleReason {
                kind: r.kind.clone(),
                detail: r.detail.clone(),
                percent: r.percent,
                since_ms: ms(r.since_ms),
                last_ms: ms(r.last_ms),
            })
            .collect(),
        sampled_at_ms: ms(v.sampled_at_ms),
        processes: v.processes,
        newest: v.newest.clone(),
        ..Default::default()
    }
}

impl Service {
    pub(super) async fn idle_loop(&self) {
        loop {
            tokio::time::sleep(self.inner.timing.idle_check).await;
            if let Err(e) = self.idle_once().await {
                tracing::warn!(error = %e, "idle pass failed");
            }
            if let Err(e) = self.ttl_once().await {
                tracing::warn!(error = %e, "TTL pass failed");
            }
        }
    }

    /// Deletes the stopped workspaces past their tier's TTL whose data a
    /// confirmed backup holds; the others wait for that backup.
    pub async fn ttl_once(&self) -> Result<()> {
        let stopped = self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                state: Some(State::Stopped),
                ..Default::default()
            })
            .await?;
        let now = self.now();
        for w in stopped.iter().filter(|w| w.desired == Desired::Stopped) {
            let p = self.policy(w);
            // The store is read only for those past their TTL.
            if idle::ttl(&p, w.state_since_ms, None, now) == Ttl::Keep {
                continue;
            }
            let (newest, _) = self.inner.store.newest_backup(&w.id).await?;
            let backup = newest
                .as_ref()
                .map(|b| (b.backup.taken_at_ms, b.backup.consistency == "stopped"));
            match idle::ttl(&p, w.state_since_ms, backup, now) {
                Ttl::Keep => {}
                Ttl::Held => {
                    tracing::debug!(workspace = %w.id, "past its TTL; waits for the backup of its stop")
                }
                Ttl::Delete(why) => {
                    tracing::info!(workspace = %w.id, %why, "TTL: deleting");
                    self.announce(&w.id, format!("ttl: {why}")).await;
                    self.apply(&w.id, &[Event::DeleteRequested], None).await;
                }
            }
        }
        Ok(())
    }

    /// Workspace `w`'s idle policy: its tier's, with its own timeout.
    fn policy(&self, w: &WorkspaceRow) -> Policy {
        let mut p = self.tier_of(w).map_or_else(Policy::default, Policy::of);
        if w.idle_timeout_ms > 0 {
            p.timeout_ms = w.idle_timeout_ms;
        }
        p
    }

    fn tier_of(&self, w: &WorkspaceRow) -> Option<&crate::domain::tier::Tier> {
        let tiers = &self.inner.tiers;
        tiers
            .get(&w.tier)
            .or_else(|| tiers.get(tiers.default_name()))
    }

    /// Sets workspace `name`'s own idle timeout (`seconds`; None: back to
    /// its tier's), within its tier's bound.
    pub async fn set_idle_timeout(
        &self,
        owner: &str,
        name: &str,
        seconds: Option<u64>,
    ) -> Result<WorkspaceRow> {
        let w = self.find(owner, name).await?;
        let tier = self
            .tier_of(&w)
            .ok_or_else(|| Error::internal(format!("workspace {name}'s tier is not configured")))?;
        let ms = idle::own_timeout(tier, seconds)
            .map_err(|why| Error::invalid("idle_timeout_out_of_bounds", why))?;
        self.inner.store.set_idle_timeout(&w.id, ms).await?;
        self.find(owner, name).await
    }

    fn facts<'a>(&self, w: &'a WorkspaceRow, p: &Policy) -> Facts<'a> {
        let mut f = Facts {
            // A verdict from before it last started says nothing of now.
            idle: w
                .idle
                .as_ref()
                .filter(|i| i.sampled_at_ms >= w.state_since_ms),
            keepalive_until_ms: w.keepalive_until_ms,
            running_since_ms: w.state_since_ms,
            warned_at_ms: None,
        };
        // A warning counts for the stop it announced only.
        if let Some((at, _)) = idle::due_at(p, &f) {
            let warned = self
                .inner
                .idle_warned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            f.warned_at_ms = warned.get(&w.id).filter(|(a, _)| *a == at).map(|(_, t)| *t);
        }
        f
    }

    /// One pass over the running workspaces.
    pub async fn idle_once(&self) -> Result<()> {
        let rows = self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                state: Some(State::Running),
                ..Default::default()
            })
            .await?;
        let now = self.now();
        for w in rows {
            let Some(node) = w.node.clone().filter(|n| self.inner.link.is_connected(n)) else {
                continue;
            };
            let p = self.policy(&w);
            let f = self.facts(&w, &p);
            match idle::due(&p, &f, now) {
                Due::Nothing if idle::due_at(&p, &f).is_none() => {
                    self.inner
                        .idle_warned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&w.id);
                }
                Due::Nothing => {}
                Due::Warn { stops_at_ms, why } => {
                    if let Some((at, _)) = idle::due_at(&p, &f) {
                        self.inner
                            .idle_warned
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(w.id.clone(), (at, now));
                    }
                    self.warn_idle(&w, &node, stops_at_ms, &why, now).await;
                }
                Due::Stop(why) => {
                    tracing::info!(workspace = %w.id, %why, "stopping");
                    self.apply(&w.id, &[Event::IdleStop(why)], None).await;
                    self.inner
                        .idle_warned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&w.id);
                }
            }
        }
        Ok(())
    }

    /// Tells the workspace's terminals and the event stream that it stops soon.
    async fn warn_idle(&self, w: &WorkspaceRow, node: &str, stops_at_ms: i64, why: &str, now: i64) {
        let message = idle::warning(&w.name, stops_at_ms, why, now);
        self.notify(w, node, &message).await;
        self.announce(&w.id, format!("idle_warning: {message}"))
            .await;
    }

    /// Writes `message` into workspace `w`'s open terminals on `node`.
    pub(super) async fn notify(&self, w: &WorkspaceRow, node: &str, message: &str) {
        let cmd = pb::request::Command::Notify(pb::NotifyRequest {
            name: w.id.clone(),
            message: message.to_string(),
        });
        match self
            .inner
            .link
            .call(node, cmd, Duration::from_secs(10))
            .await
        {
            Ok(pb::response::Result::Notified(n)) => {
                tracing::info!(workspace = %w.id, terminals = n.terminals, "notice written to its terminals");
            }
            other => {
                tracing::warn!(workspace = %w.id, answer = ?other, "notice not delivered")
            }
        }
    }

    /// Holds workspace `name` of `owner` from an idle stop for `seconds`
    /// (0 ends a keepalive), at most its tier's `max_keepalive_seconds`.
    pub async fn keepalive(&self, owner: &str, name: &str, seconds: u64) -> Result<WorkspaceRow> {
        let w = self.find(owner, name).await?;
        let p = self.policy(&w);
        let ms = (seconds as i64).saturating_mul(1000);
        if ms > p.max_keepalive_ms {
            return Err(Error::invalid(
                "keepalive_too_long",
                format!(
                    "its tier allows a keepalive of at most {} s",
                    p.max_keepalive_ms / 1000
                ),
            ));
        }
        let until = if ms == 0 { 0 } else { self.now() + ms };
        for _ in 0..10 {
            let w = self.find(owner, name).await?;
            let mut next = w.clone();
            next.keepalive_until_ms = until;
            next.updated_at_ms = self.now();
            if let Some(stored) = self.inner.store.update_workspace(&w, &next).await? {
                self.published(&stored);
                return Ok(stored);
            }
        }
        Err(Error::conflict(
            "busy",
            "the workspace changed concurrently; retry",
        ))
    }

    /// The idle part of a workspace's view: its node's verdict, in words,
    /// and when the policy stops it.
    pub fn idle_view(&self, w: &WorkspaceRow) -> Option<Idle> {
        let now = self.now();
        if w.idle.is_none() && w.keepalive_until_ms <= now && w.idle_timeout_ms == 0 {
            return None;
        }
        let mut idle = w.idle.clone().unwrap_or_default();
        let p = self.policy(w);
        idle.timeout_seconds = (p.timeout_ms / 1000) as u64;
        idle.keepalive_until_ms = (w.keepalive_until_ms > now).then_some(w.keepalive_until_ms);
        if w.idle.is_none() {
            idle.summary = "not sampled yet".into();
        } else if w.state == State::Running {
            idle.summary = idle.describe(now);
            idle.stops_at_ms = idle::stops_at(&p, &self.facts(w, &p)).map(|(at, _)| at);
        } else {
            // Kept after an idle stop to say why; nothing of it holds now.
            idle.summary = w.reason.clone().unwrap_or_default();
            idle.reasons.clear();
        }
        Some(idle)
    }

    /// The API's view of a workspace: its row, with what this coordinator
    /// knows beside the store (pull progress, the idle policy's reading).
    pub fn view(&self, w: &WorkspaceRow) -> berth_proto::api::Workspace {
        let mut v = w.view();
        v.progress = self.progress_of(&w.id);
        v.idle = self.idle_view(w);
        v.usage = self.usage_of(w);
        v
    }

    /// What a running workspace uses, if its node said so lately.
    fn usage_of(&self, w: &WorkspaceRow) -> Option<berth_proto::api::Usage> {
        if w.state != State::Running {
            return None;
        }
        let since = self.now() - 3 * self.inner.timing.unreachable_after.as_millis() as i64;
        self.inner
            .stats
            .workspace_used(&w.id, w.node.as_deref()?, since)
    }
}
