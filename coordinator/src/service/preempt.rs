//! A node's evacuation: on a preemption notice (a spot instance taken
//! back; the agent reads it from the cloud's metadata service,
//! `berth_agent::preempt`) or a drain, its running workspaces stop, each
//! gets its final backup, and each then starts on another node from that
//! backup (`service::moves`).

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

    fn forget_resume(&self, id: &str) {
        self.inner
            .resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
