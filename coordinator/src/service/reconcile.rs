//! Scheduling and command dispatch: pending workspaces are placed in
//! batches, and the command each workspace waits on is (re)sent to its
//! node until its answer is recorded.

use super::Service;
use crate::domain::backup::Away;
use crate::domain::lifecycle::{self, Command, Desired, Event, Observed, State};
use crate::domain::node::{NodeRow, NodeStatus};
use crate::domain::scheduler::{self, NodeView};
use crate::domain::workspace::WorkspaceRow;
use crate::error::Result;
use crate::link::LinkError;
use crate::store::Decision;
use berth_proto::agent as pb;
use berth_proto::codes::{self, Code};
use std::time::{Duration, Instant};

pub(super) fn observed(s: &pb::WorkspaceStatus) -> Observed {
    match pb::State::try_from(s.state).unwrap_or(pb::State::Unspecified) {
        pb::State::Running => Observed::Running,
        pb::State::Created | pb::State::Stopped => Observed::Stopped,
        pb::State::Deleted => Observed::Absent,
        pb::State::Unspecified => Observed::Failed("the node reported no state".into()),
    }
}

/// A repository workspace's report as the API shows it.
pub(super) fn init_of(r: &pb::InitReport) -> berth_proto::api::Init {
    use berth_proto::api::{ForwardPort, Init, InitStep, PrebuildUse};
    Init {
        commit: r.commit.clone(),
        folder: r.folder.clone(),
        source: r.source.clone(),
        steps: r
            .steps
            .iter()
            .map(|s| InitStep {
                name: s.name.clone(),
                state: s.state.clone(),
                command: s.command.clone(),
                exit_code: matches!(s.state.as_str(), "done" | "failed")
                    .then_some(s.exit_code)
                    .filter(|_| !s.command.is_empty()),
                duration_ms: s.duration_ms,
                tail: s.tail.clone(),
                code: s.code.clone(),
            })
            .collect(),
        warnings: r.warnings.clone(),
        ports: r
            .ports
            .iter()
            .filter_map(|p| {
                Some(ForwardPort {
                    port: u16::try_from(p.port).ok()?,
                    label: p.label.clone(),
                })
            })
            .collect(),
        prebuild: r.prebuild.as_ref().map(|p| PrebuildUse {
            key: p.key.clone(),
            commit: p.commit.clone(),
            built_at_ms: p.built_at_ms,
            outcome: p.outcome.clone(),
            note: p.note.clone(),
        }),
    }
}

impl Service {
    pub(super) async fn schedule_loop(&self) {
        loop {
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                self.inner.wake_schedule.notified(),
            )
            .await;
            match self.schedule_once().await {
                Ok(n) if n > 0 => self.inner.wake_dispatch.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduling pass failed"),
            }
        }
    }

    /// The scheduler's view of the nodes.
    pub fn views(&self, nodes: &[NodeRow], now: i64) -> Vec<NodeView> {
        let fresh = self.inner.timing.unreachable_after.as_millis() as i64;
        nodes
            .iter()
            .map(|n| NodeView {
                id: n.id.clone(),
                ready: n.status == NodeStatus::Ready && now - n.last_seen_ms <= fresh,
                cordoned: n.cordoned,
                draining: n.draining,
                labels: n.labels.clone(),
                capacity: n.capacity,
                allocated: n.allocated,
                max_workspaces: n.slots,
                workspaces: n.allocated_slots,
                cached_images: n.cached_images.clone(),
                cached_prebuilds: n.cached_prebuilds.clone(),
            })
            .collect()
    }

    /// One batch: decide for up to 1,024 pending workspaces, commit the
    /// decisions in one transaction. Returns how many were placed.
    pub async fn schedule_once(&self) -> Result<usize> {
        let store = &self.inner.store;
        self.retry_waiting_starts().await?;
        let pending = store.workspaces_in(&[State::Pending], 1024).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let mut fleet = scheduler::Fleet::new(self.views(&store.nodes().await?, now));
        let mut decisions = Vec::new();
        for w in pending.iter().filter(|w| w.desired != Desired::Deleted) {
            let req = scheduler::Request {
                image: w.image.clone(),
                resources: w.resources,
                node_selector: w.node_selector.clone(),
                prebuild: self.prebuild_key_for(w).await,
            };
            match fleet.place(&req, self.inner.timing.strategy) {
                Ok(p) => {
                    let Ok((next, _)) =
                        lifecycle::step(&w.lifecycle(), &Event::Placed(p.node.clone()))
                    else {
                        continue;
                    };
                    fleet.reserve(&p.node, w.resources);
                    decisions.push(Decision {
                        workspace: w.clone(),
                        next: w.with_lifecycle(&next, now),
                        node: p.node,
                    });
                }
                Err(nofit) => {
                    let why = nofit.to_string();
                    if w.reason.as_deref() != Some(why.as_str()) {
                        self.inner.stats.unplaceable(&nofit);
                        self.apply(&w.id, &[Event::Unplaceable(why)], None).await;
                    }
                }
            }
        }
        let t = std::time::Instant::now();
        let placed = store.place(&decisions, &self.inner.id).await?;
        self.inner.stats.store("place", t.elapsed());
        let n = placed.len();
        self.inner.stats.placed(n);
        for w in placed {
            tracing::debug!(workspace = %w.id, node = ?w.node, "placed");
            self.published(&w);
            self.dispatch(w);
        }
        Ok(n)
    }

    /// Tries again the starts that found no room on their node, or moves
    /// them elsewhere when a backup holds all they had.
    async fn retry_waiting_starts(&self) -> Result<()> {
        let stopped = self
            .inner
            .store
            .workspaces_in(&[State::Stopped], 1024)
            .await?;
        for w in stopped.iter().filter(|w| w.desired == Desired::Running) {
            // Stopped and wanted running: its node had no room. A backup
            // that holds all it had moves it to a node with room.
            let moved = self.move_event(w, Away::Full).await.ok().flatten();
            let ev = moved.unwrap_or(Event::StartRequested);
            let _ = self.start_or_move(&w.id, ev, false).await;
        }
        Ok(())
    }

    pub(super) async fn dispatch_loop(&self) {
        loop {
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                self.inner.wake_dispatch.notified(),
            )
            .await;
            if let Err(e) = self.dispatch_once().await {
                tracing::warn!(error = %e, "dispatch pass failed");
            }
        }
    }

    async fn dispatch_once(&self) -> Result<()> {
        let waiting = self
            .inner
            .store
            .workspaces_in(
                &[
                    State::Scheduled,
                    State::Starting,
                    State::Stopping,
                    State::Deleting,
                ],
                100_000,
            )
            .await?;
        for w in waiting {
            self.dispatch(w);
        }
        Ok(())
    }

    /// Sends `w`'s pending command unless one is in flight, its node is not
    /// connected here or it waits for a retry; fails it past the start
    /// timeout. Called by the dispatch pass and right after a write that
    /// leaves a command pending (placement, a request, an answer), so a
    /// command does not wait for the next pass to re-read the store.
    pub(super) fn dispatch(&self, w: WorkspaceRow) {
        let Some(cmd) = lifecycle::pending_command(&w.lifecycle()) else {
            return;
        };
        if matches!(w.state, State::Scheduled | State::Starting)
            && self.now() - w.state_since_ms > self.inner.timing.start_timeout.as_millis() as i64
        {
            let me = self.clone();
            tokio::spawn(async move { me.apply(&w.id, &[Event::Timeout], None).await });
            return;
        }
        let node = w.node.clone().unwrap_or_default();
        if !self.inner.link.is_connected(&node) {
            return;
        }
        if self
            .inner
            .retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.id)
            .is_some_and(|t| *t > Instant::now())
        {
            return;
        }
        if !self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone())
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let id = w.id.clone();
            me.send(w, cmd).await;
            me.inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    pub(super) fn request(
        w: &WorkspaceRow,
        cmd: Command,
        credential: Option<pb::GitCredential>,
        prebuild: Option<pb::PrebuildRef>,
        restore: Option<pb::RestoreRequest>,
    ) -> pb::request::Command {
        use pb::request::Command as C;
        let name = w.id.clone();
        let generation = w.generation;
        match cmd {
            Command::Create => C::Create(pb::CreateRequest {
                spec: Some(pb::WorkspaceSpec {
                    name,
                    image: w.image.clone(),
                    cpu_millis: w.resources.cpu_millis as u32,
                    memory_bytes: w.resources.memory_bytes,
                    pids: w.pids,
                    disk_bytes: w.resources.disk_bytes,
                    env: w.env.clone(),
                    generation,
                    nested_userns: w.nested_userns,
                    egress_allow: w.egress_allow.clone(),
                    hostname: w.name.clone(),
                    repo: w.repo.as_ref().map(|r| pb::RepoInit {
                        url: r.url.clone(),
                        branch: r.branch.clone().unwrap_or_default(),
                        commit: r.commit.clone().unwrap_or_default(),
                        credential,
                        init_command: r.init_command.clone(),
                        partial: r.partial,
                        prebuild,
                    }),
                    dotfiles: String::new(),
                }),
                auth: None,
                start: w.desired == Desired::Running,
                restore,
                secrets: None,
            }),
            Command::Start => C::Start(pb::StartRequest {
                name,
                generation,
                secrets: None,
            }),
            Command::Stop => C::Stop(pb::StopRequest {
                name,
                grace_seconds: 0,
                generation,
            }),
            Command::Delete => C::Delete(pb::NameRequest { name, generation }),
        }
    }

    /// Sends a pending command to the workspace's node and records the
    /// answer. Its span names the workspace; a create's last line gives the
    /// time spent waiting for a node, in the agent and recording the answer.
    #[tracing::instrument(name = "command", skip_all, fields(
        workspace = %w.id, node = w.node.as_deref().unwrap_or(""), ?cmd,
    ))]
    async fn send(&self, w: WorkspaceRow, cmd: Command) {
        let node = w.node.clone().unwrap_or_default();
        let timeout = self.inner.timing.command_timeout;
        let started = Instant::now();
        let waited_ms = self.now() - w.created_at_ms;
        // The owner's credential for the repository's host travels with the
        // create (over the link, in memory) and nowhere else.
        let (credential, prebuild) = match (&w.repo, cmd) {
            (Some(r), Command::Create) => (
                self.git_credential_for(&w.owner, &r.url).await,
                self.prebuild_for(&w).await,
            ),
            _ => (None, None),
        };
        // A moved workspace's create restores its backup: never without it.
        let (moving, restore) = match cmd {
            Command::Create => match self.pending_move(&w).await {
                Ok(m) => m.unzip(),
                Err(e) => {
                    tracing::warn!(workspace = %w.id, error = %e, "the move's backup is not at hand; will retry");
                    self.retry_later(&w.id);
                    return;
                }
            },
            _ => (None, None),
        };
        // The owner's dotfiles, for a new workspace (a moved one has its home).
        let dotfiles = match (cmd, &restore) {
            (Command::Create, None) => self.inner.store.dotfiles(&w.owner).await.ok().flatten(),
            _ => None,
        };
        let mut request = Self::request(&w, cmd, credential, prebuild, restore);
        if let (pb::request::Command::Create(c), Some(d)) = (&mut request, dotfiles) {
            if let Some(spec) = c.spec.as_mut() {
                spec.dotfiles = d;
            }
        }
        // The secrets of whoever the workspace belongs to travel with each
        // create and start (over the link, in memory) and nowhere else.
        match &mut request {
            pb::request::Command::Create(c) => c.secrets = self.secrets_for(&w, false).await,
            pb::request::Command::Start(s) => s.secrets = self.secrets_for(&w, false).await,
            _ => {}
        }
        let answer = self.inner.link.call(&node, request, timeout).await;
        let agent_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(agent_ms, "command answered");
        use pb::response::Result as R;
        let (events, status) = match answer {
            Ok(R::Status(st)) => {
                let mut ev = Vec::new();
                if cmd == Command::Create {
                    ev.push(Event::Accepted);
                }
                ev.push(Event::Observed(observed(&st)));
                (ev, Some(st))
            }
            Ok(R::Error(e)) if codes::of(&e) == Some(Code::NotFound) && cmd != Command::Create => {
                (vec![Event::Observed(Observed::Absent)], None)
            }
            Ok(R::Error(e)) if codes::of(&e) == Some(Code::AlreadyExists) => {
                // The create went through before (its answer was lost): ask what it is.
                match self
                    .inner
                    .link
                    .call(
                        &node,
                        pb::request::Command::Status(pb::NameRequest {
                            name: w.id.clone(),
                            generation: 0,
                        }),
                        timeout,
                    )
                    .await
                {
                    Ok(R::Status(st)) => (
                        vec![Event::Accepted, Event::Observed(observed(&st))],
                        Some(st),
                    ),
                    _ => {
                        self.retry_later(&w.id);
                        return;
                    }
                }
            }
            Ok(R::Error(e)) if codes::of(&e) == Some(Code::RegistryError) => {
                let why = format!("registry_unreachable: {}", e.message);
                let waited = self.now() - w.state_since_ms;
                if waited < self.inner.timing.registry_timeout.as_millis() as i64 {
                    tracing::info!(workspace = %w.id, error = %e.message, "registry not reachable; will retry");
                    self.apply(&w.id, &[Event::Retrying(why)], None).await;
                    self.retry_later(&w.id);
                    return;
                }
                (vec![Event::Observed(Observed::Failed(why))], None)
            }
            Ok(R::Error(e)) if codes::of(&e).is_some_and(Code::is_permanent) => {
                let why = format!("{}: {}", e.code, e.message);
                (vec![Event::Observed(Observed::Failed(why))], None)
            }
            Ok(R::Error(e)) => {
                tracing::info!(workspace = %w.id, code = %e.code, error = %e.message, "command refused; will retry");
                self.retry_later(&w.id);
                return;
            }
            Ok(other) => {
                tracing::warn!(workspace = %w.id, answer = ?other, "unexpected answer");
                self.retry_later(&w.id);
                return;
            }
            Err(LinkError::NotConnected(_)) => return,
            Err(e) => {
                tracing::info!(workspace = %w.id, error = %e, "command not answered; will retry");
                self.retry_later(&w.id);
                return;
            }
        };
        if cmd == Command::Delete && events.contains(&Event::Observed(Observed::Absent)) {
            // Gone from its node: so must be a copy a move left elsewhere.
            self.delete_moved_copy(&w).await;
        }
        let t = Instant::now();
        self.apply(&w.id, &events, status.as_ref()).await;
        if cmd == Command::Create {
            let record_ms = t.elapsed().as_millis() as u64;
            tracing::info!(waited_ms, agent_ms, record_ms, "create answered");
        }
        // After the answer is recorded, not before: the start path waits on that write only.
        if cmd == Command::Create && status.is_some() {
            if let Some(m) = &moving {
                self.moved(&w, m).await;
            }
            if let Err(e) = self.inner.store.note_cached_image(&node, &w.image).await {
                tracing::debug!(node = %node, error = %e, "cached image not noted");
            }
            // A prebuild the node used, maybe pulled for this workspace.
            let used = status
                .as_ref()
                .and_then(|s| s.init.as_ref())
                .and_then(|i| i.prebuild.as_ref())
                .filter(|p| p.outcome == "used" || p.outcome == "updated");
            if let Some(p) = used {
                if let Err(e) = self.inner.store.note_cached_prebuild(&node, &p.key).await {
                    tracing::debug!(node = %node, error = %e, "cached prebuild not noted");
                }
            }
        }
    }

    fn retry_later(&self, id: &str) {
        self.inner
            .retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), Instant::now() + Duration::from_secs(1));
    }
}
