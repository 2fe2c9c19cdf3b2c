//! A node's preemption notice (a spot instance taken back; the agent reads
//! it from the cloud's metadata service, `berth_agent::preempt`): the node
//! is drained, its running workspaces stop, each gets its final backup, and
//! each then starts on another node from that backup (`service::moves`).

use super::Service;
use crate::domain::lifecycle::{Desired, Event, State};
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
        let on = match self
            .inner
            .store
            .workspaces(&WorkspaceFilter {
                node: Some(node.to_string()),
                ..Default::default()
            })
            .await
        {
            Ok(on) => on,
            Err(e) => {
                tracing::warn!(%node, error = %e, "preempted node's workspaces not read");
                return;
            }
        };
        let when = if notice.at_ms > 0 {
            format!(" at {}", super::moves::rfc3339(notice.at_ms))
        } else {
            String::new()
        };
        for w in on.iter().filter(|w| {
            w.desired == Desired::Running && matches!(w.state, State::Running | State::Starting)
        }) {
            self.inner
                .resume
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(w.id.clone());
            self.apply(&w.id, &[Event::StopRequested], None).await;
            self.announce(
                &w.id,
                format!(
                    "preempted: node {node} is being taken back ({} {}{when}); stopping, backing up and moving",
                    notice.source, notice.detail
                ),
            )
            .await;
        }
    }

    /// Starts (so moves) each workspace a preemption stopped, once a
    /// backup of it stopped is confirmed.
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
            let held = matches!(
                self.inner.store.newest_backup(&id).await,
                Ok((Some(b), _)) if b.generation == w.generation && b.backup.consistency == "stopped"
            );
            if !held {
                continue;
            }
            self.forget_resume(&id);
            match self.request_start(&w).await {
                Ok(now) => {
                    tracing::info!(workspace = %id, state = now.state.as_str(), "preempted workspace started again")
                }
                Err(_) => tracing::warn!(workspace = %id, "preempted workspace not started again"),
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
