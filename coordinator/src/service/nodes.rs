//! What nodes say (registrations, inventories, reports, joins) and node
//! liveness; the operations on nodes (cordon, drain).

use super::reconcile::observed;
use super::Service;
use crate::domain::lifecycle::{Event, Observed, State};
use crate::domain::node::{self, NodeRow, NodeStatus};
use crate::error::{Error, Result};
use crate::link::LinkEvent;
use crate::store::WorkspaceFilter;
use berth_proto::agent as pb;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Answers a question of the link (a join, a registration) from a task of
/// its own, so a slow store never holds up the other events.
fn answer<T: Send + 'static>(
    reply: tokio::sync::oneshot::Sender<T>,
    work: impl std::future::Future<Output = T> + Send + 'static,
) {
    tokio::spawn(async move {
        let _ = reply.send(work.await);
    });
}

impl Service {
    pub(super) async fn link_loop(&self, mut rx: mpsc::UnboundedReceiver<LinkEvent>) {
        while let Some(ev) = rx.recv().await {
            let me = self.clone();
            match ev {
                LinkEvent::Join {
                    node_id,
                    token_id,
                    secret_hash,
                    reply,
                } => {
                    answer(reply, async move {
                        let store = &me.inner.store;
                        store
                            .join(&token_id, &secret_hash, &node_id, me.now())
                            .await
                    });
                }
                LinkEvent::Register {
                    node,
                    registration,
                    reply,
                } => {
                    answer(reply, async move {
                        let store = &me.inner.store;
                        store.register_node(&node, &registration, me.now()).await
                    });
                }
                LinkEvent::Registered {
                    node,
                    inventory,
                    at_ms,
                } => {
                    tokio::spawn(async move { me.reconcile_node(&node, inventory, at_ms).await });
                }
                LinkEvent::Status { node, status } => {
                    tokio::spawn(async move { me.report(&node, *status).await });
                }
                LinkEvent::Prebuilds { node, keys } => {
                    tokio::spawn(async move { me.note_node_prebuilds(&node, keys).await });
                }
                LinkEvent::Progress { node, progress } => {
                    tokio::spawn(async move { me.pull_progress(&node, progress).await });
                }
                LinkEvent::Images { node, names } => {
                    tokio::spawn(async move {
                        let names = names.into_iter().collect();
                        if let Err(e) = me.inner.store.set_node_images(&node, &names).await {
                            tracing::warn!(%node, error = %e, "node images not recorded");
                        }
                    });
                }
                LinkEvent::Preempted { node, notice } => {
                    tokio::spawn(async move { me.preempted(&node, notice).await });
                }
                LinkEvent::Usage { node, usage } => me.inner.stats.node_used(node, usage, me.now()),
                LinkEvent::Disconnected { .. } => {}
            }
        }
    }

    /// How far a pull that a workspace placed on `node` waits on got:
    /// kept for reads and sent on the event stream, while the workspace is
    /// being made (a report that arrives after it is ignored).
    async fn pull_progress(&self, node: &str, p: pb::PullProgress) {
        let Ok(Some(w)) = self.inner.store.workspace(&p.workspace).await else {
            return;
        };
        if w.node.as_deref() != Some(node) || !matches!(w.state, State::Scheduled | State::Starting)
        {
            return;
        }
        let progress = berth_proto::api::Progress {
            what: p.what,
            reference: p.reference,
            phase: p.phase,
            done_bytes: p.done_bytes,
            total_bytes: p.total_bytes,
            done_layers: p.done_layers,
            total_layers: p.total_layers,
        };
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone(), progress.clone());
        let mut ev = w.event();
        ev.progress = Some(progress);
        let _ = self.inner.events.send(ev);
    }

    /// A report from `node` about one workspace: applied only if the
    /// workspace is placed on that node.
    async fn report(&self, node: &str, st: pb::WorkspaceStatus) {
        let Ok(Some(w)) = self.inner.store.workspace(&st.name).await else {
            tracing::warn!(%node, workspace = %st.name, "report about an unknown workspace ignored");
            return;
        };
        if w.node.as_deref() != Some(node) {
            tracing::warn!(%node, workspace = %st.name, "report about another node's workspace refused");
            return;
        }
        if st.generation != 0 && st.generation < w.generation && w.state != State::Unknown {
            // An answer to an older intent: the pending command will bring a fresh one.
            return;
        }
        self.apply(&w.id, &[Event::Observed(observed(&st))], Some(&st))
            .await;
    }

    /// Reconciles the store with a node's full inventory after it (re)connected.
    /// Workspaces updated after `at_ms` (e.g. by a command's answer) are newer
    /// than the inventory and left alone.
    async fn reconcile_node(&self, node: &str, inventory: Vec<pb::WorkspaceStatus>, at_ms: i64) {
        let placed = match self
            .inner
            .store
            .workspaces(&crate::store::WorkspaceFilter {
                node: Some(node.into()),
                ..Default::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cannot reconcile");
                return;
            }
        };
        let have: HashMap<&str, &pb::WorkspaceStatus> =
            inventory.iter().map(|s| (s.name.as_str(), s)).collect();
        for w in &placed {
            match have.get(w.id.as_str()) {
                Some(st) => {
                    let ev = [Event::Observed(observed(st))];
                    self.apply_as_of(&w.id, &ev, Some(st), Some(at_ms)).await;
                }
                None if matches!(w.state, State::Scheduled | State::Pending) => {}
                None => {
                    let ev = [Event::Observed(Observed::Absent)];
                    self.apply_as_of(&w.id, &ev, None, Some(at_ms)).await;
                }
            }
        }
        // Workspaces the node runs that the store has deleted: delete them there.
        let known: HashSet<&str> = placed.iter().map(|w| w.id.as_str()).collect();
        for st in &inventory {
            if known.contains(st.name.as_str()) {
                continue;
            }
            match self.inner.store.workspace(&st.name).await {
                Ok(Some(w)) if w.state != State::Deleted && self.is_stale_copy(node, &w).await => {
                    self.delete_stale_copy(node, &w).await;
                }
                Ok(Some(w)) if w.state == State::Deleted => {
                    let _ = self
                        .inner
                        .link
                        .call(
                            node,
                            pb::request::Command::Delete(pb::NameRequest {
                                name: st.name.clone(),
                                generation: w.generation,
                            }),
                            self.inner.timing.command_timeout,
                        )
                        .await;
                }
                _ => {
                    tracing::info!(%node, workspace = %st.name, "node runs a workspace the store does not place there; left alone")
                }
            }
        }
        self.wake();
    }

    pub(super) async fn liveness_loop(&self) {
        let tick = (self.inner.timing.unreachable_after / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(tick).await;
            if let Err(e) = self.liveness_once().await {
                tracing::warn!(error = %e, "liveness pass failed");
            }
        }
    }

    pub(super) async fn liveness_once(&self) -> Result<()> {
        let store = &self.inner.store;
        let now = self.now();
        store.touch_nodes(&self.inner.link.connected(), now).await?;
        let t = &self.inner.timing;
        // After a restart nobody is declared lost before agents had a full
        // grace period to reconnect.
        let may_lose = now - self.inner.started_ms >= t.lost_after.as_millis() as i64;
        let silence = node::Silence {
            unreachable_after_ms: t.unreachable_after.as_millis() as i64,
            lost_after_ms: t.lost_after.as_millis() as i64,
        };
        for n in store.nodes().await? {
            let silent = now - n.last_seen_ms;
            let Some(next) = node::after_silence(n.status, silent, may_lose, silence) else {
                continue;
            };
            if !store.set_node_status(&n.id, n.status, next, now).await? {
                continue;
            }
            if next == NodeStatus::Unreachable {
                tracing::warn!(node = %n.id, silent_ms = silent, "node unreachable");
                continue;
            }
            tracing::warn!(node = %n.id, silent_ms = silent, "node lost; its workspaces are unknown");
            let on = store
                .workspaces(&WorkspaceFilter {
                    node: Some(n.id.clone()),
                    ..Default::default()
                })
                .await?;
            for w in on {
                self.apply(&w.id, &[Event::NodeLost], None).await;
            }
        }
        Ok(())
    }

    // ---- operations on nodes ----

    /// Every node.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        self.inner.store.nodes().await
    }

    /// The node `id`.
    pub async fn node(&self, id: &str) -> Result<NodeRow> {
        crate::domain::validate::node_id(id)?;
        self.inner
            .store
            .node(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no node {id:?}")))
    }

    /// Sets a node's cordon and drain flags (uncordon clears both).
    pub async fn set_flags(&self, id: &str, cordoned: bool, draining: bool) -> Result<NodeRow> {
        crate::domain::validate::node_id(id)?;
        if !self
            .inner
            .store
            .set_node_flags(id, cordoned, draining)
            .await?
        {
            return Err(Error::not_found(format!("no node {id:?}")));
        }
        self.node(id).await
    }

    /// Drains a node: cordons it and stops its running workspaces, which
    /// start on other nodes from their stop's backups when the backups are
    /// shared (else their volumes stay on the node, stopped). With a
    /// `deadline`, they are warned and run on until then (or until they
    /// stop by themselves); `drain_pass` moves what still runs then.
    pub async fn drain(&self, id: &str, deadline: Option<std::time::Duration>) -> Result<NodeRow> {
        self.set_flags(id, true, true).await?;
        let wait = deadline.map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
        if wait == 0 {
            self.inner.store.set_drain_deadline(id, 0).await?;
            self.evacuate(id, &format!("drain: node {id} is drained"))
                .await?;
        } else {
            let at = self.now().saturating_add(wait);
            self.inner.store.set_drain_deadline(id, at).await?;
            self.warn_drain(id, at).await?;
        }
        self.node(id).await
    }
}
