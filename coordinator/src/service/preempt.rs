//! A node's evacuation: on a preemption notice (a spot instance taken
//! back; the agent reads it from the cloud's metadata service,
//! `berth_agent::preempt`) or a drain, its running workspaces stop, each
//! gets its final backup, and each then starts on another node from that
//! backup (`service::moves`). A drain with a deadline warns first and
//! evacuates at the deadline what still runs.

use super::Service;
use crate::domain::backup::Away;
use crate::domain::lifecycle::{Desired, Event, State};
use crate::error::Result;
use crate::store::WorkspaceFilter;
use berth_proto::link as lk;

impl Service {
    /// Drains `node` and stops its running workspaces, to resume elsewhere.
    /// A repeated notice (after a reconnect) finds nothing more to stop.
    pub(super) async fn preempted(&self, node: &str, notice: lk::Preemption) {
        if notice.warning {
            return self.at_risk(node, &notice).await;
        }
        tracing::warn!(%node, source = %notice.source, detail = %notice.detail, at_ms = notice.at_ms, "preemption notice: draining the node");
        if let Err(e) = self.inner.store.set_node_flags(node, true, true).await {
            tracing::warn!(%node, error = %e, "node not drained");
        }
        let when = if notice.at_ms > 0 {
            format!(" at {}", super::moves::rfc3339(notice.at_ms))
        } else {
            String::new()
        };
        let why = format!(
            "preempted: node {node} is being taken back ({} {}{when})",
            notice.source, notice.detail
        );
        if let Err(e) = self.evacuate(node, &why).await {
            tracing::warn!(%node, error = %e, "preempted node's workspaces not read");
        }
    }

    /// A warning that `node` may be taken back soon (AWS's rebalance
    /// recommendation): nothing new goes there, and its running workspaces
    /// are backed up now, so a notice that follows has little left to
    /// upload. They keep running.
    async fn at_risk(&self, node: &str, notice: &lk::Preemption) {
        tracing::warn!(%node, source = %notice.source, detail = %notice.detail, "preemption warning: cordoning the node, backing up its workspaces");
        let cordoned = match self.inner.store.node(node).await {
            Ok(Some(n)) => {
                self.inner
                    .store
                    .set_node_flags(node, true, n.draining)
                    .await
            }
            Ok(None) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = cordoned {
            tracing::warn!(%node, error = %e, "node not cordoned");
        }
        let running = self.running_on(node).await.unwrap_or_default();
        for w in running {
            self.announce(
                &w.id,
                format!(
                    "at_risk: node {node} may be taken back ({} {}); backing up now",
                    notice.source, notice.detail
                ),
            )
            .await;
            self.back_up_soon(w, node.to_string());
        }
    }

    /// Stops `node`'s running workspaces (it is drained or preempted) and
    /// has each start elsewhere once its stop's backup is confirmed, when
    /// the backups are shared; else they stay stopped there.
    pub(super) async fn evacuate(&self, node: &str, why: &str) -> Result<()> {
        let on = self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                node: Some(node.to_string()),
                ..Default::default()
            })
            .await?;
        let shared = self.inner.backups.shared();
        let then = match shared {
            true => "stopping, backing up and moving",
            false => "stopping (backups are per node: it stays here)",
        };
        for w in on.iter().filter(|w| {
            w.desired == Desired::Running && matches!(w.state, State::Running | State::Starting)
        }) {
            if shared {
                self.inner
                    .resume
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(w.id.clone());
            }
            self.apply(&w.id, &[Event::StopRequested], None).await;
            self.announce(&w.id, format!("{why}; {then}")).await;
        }
        Ok(())
    }

    /// Moves each workspace an evacuation stopped, once a backup of it
    /// stopped is confirmed.
    pub(super) async fn resume_pass(&self) {
        let ids: Vec<String> = self
            .inner
            .resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for id in ids {
            let w = match self.inner.store.workspace(&id).await {
                Ok(Some(w)) => w,
                Ok(None) => {
                    self.forget_resume(&id);
                    continue;
                }
                Err(_) => continue,
            };
            // Someone else decided meanwhile (a delete, a start).
            if w.desired != Desired::Stopped {
                self.forget_resume(&id);
                continue;
            }
            if w.state != State::Stopped {
                continue;
            }
            // Off the node, once a backup of it stopped is confirmed; never
            // started again on the node it is leaving.
            let Ok(Some(ev)) = self.move_event(&w, Away::Draining).await else {
                continue;
            };
            self.forget_resume(&id);
            if self.start_or_move(&id, ev, false).await.is_err() {
                tracing::warn!(workspace = %id, "evacuated workspace not moved");
            }
        }
    }

    /// Tells `node`'s running workspaces (their terminals, the event
    /// stream) that they stop and move at `at_ms`.
    pub(super) async fn warn_drain(&self, node: &str, at_ms: i64) -> Result<()> {
        let on = self.running_on(node).await?;
        let then = match self.inner.backups.shared() {
            true => "stops, is backed up and moves to another node",
            false => "stops (backups are per node: it stays there, stopped)",
        };
        for w in on {
            let message = format!(
                "node {node} is being drained: workspace {} {then} at {} unless stopped before",
                w.name,
                super::moves::rfc3339(at_ms)
            );
            self.notify(&w, node, &message).await;
            self.announce(&w.id, format!("drain: {message}")).await;
        }
        Ok(())
    }

    /// Evacuates the draining nodes whose deadline passed.
    pub(super) async fn drain_pass(&self) -> Result<()> {
        let now = self.now();
        for n in self.inner.store.nodes().await? {
            if !n.draining || n.drain_deadline_ms == 0 || n.drain_deadline_ms > now {
                continue;
            }
            tracing::info!(node = %n.id, "drain deadline reached: evacuating");
            self.evacuate(
                &n.id,
                &format!("drain: node {} is drained (deadline reached)", n.id),
            )
            .await?;
            self.inner.store.set_drain_deadline(&n.id, 0).await?;
        }
        Ok(())
    }

    /// Whether draining `node` is drained: none of its workspaces runs or
    /// is on its way, and each stopped one's stop is backed up (or it has
    /// been moved off).
    pub async fn drained(&self, node: &crate::domain::node::NodeRow) -> Result<bool> {
        if !node.draining || node.allocated_slots > 0 {
            return Ok(false);
        }
        let on = self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                node: Some(node.id.clone()),
                ..Default::default()
            })
            .await?;
        for w in on {
            match w.state {
                State::Deleted | State::Failed => {}
                State::Stopped => {
                    let (newest, _) = self.inner.store.newest_backup(&w.id).await?;
                    if newest.is_none_or(|b| b.backup.taken_at_ms < w.state_since_ms) {
                        return Ok(false);
                    }
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The workspaces running on `node`.
    async fn running_on(&self, node: &str) -> Result<Vec<crate::domain::workspace::WorkspaceRow>> {
        self.inner
            .store
            .workspaces(&WorkspaceFilter {
                node: Some(node.to_string()),
                state: Some(State::Running),
                ..Default::default()
            })
            .await
    }

    fn forget_resume(&self, id: &str) {
        self.inner
            .resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
