//! Drives workspaces from the store's desired state to the nodes and back:
//! schedules pending workspaces in batches, (re)sends the command each
//! workspace waits on to its node, applies what nodes report, and watches
//! node liveness. Level-triggered: everything it does is derived from the
//! store, so a coordinator killed at any point resumes where it was.

use crate::agents::{Agents, LinkError, LinkEvent};
use crate::error::ApiError;
use crate::lifecycle::{self, Command, Desired, Event, Observed, State};
use crate::scheduler::{self, NodeView, Strategy};
use crate::store::{now_ms, Decision, NodeRow, Store, WorkspaceRow};
use berth_proto::agent as pb;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, Notify};

/// Timing and policy of the controller.
#[derive(Debug, Clone)]
pub struct Timing {
    /// A node silent this long is unreachable (not scheduled on).
    pub unreachable_after: Duration,
    /// A node silent this long is lost: its workspaces become unknown.
    pub lost_after: Duration,
    /// A workspace scheduled or starting this long has failed.
    pub start_timeout: Duration,
    /// How long to wait for a node's answer to a command.
    pub command_timeout: Duration,
    /// A workspace whose node cannot reach its image's registry this long
    /// after placement has failed (`registry_unreachable`).
    pub registry_timeout: Duration,
    pub strategy: Strategy,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            unreachable_after: Duration::from_secs(10),
            lost_after: Duration::from_secs(60),
            start_timeout: Duration::from_secs(600),
            command_timeout: Duration::from_secs(600),
            registry_timeout: Duration::from_secs(120),
            strategy: Strategy::BinPack,
        }
    }
}

/// Why `Controller::change` did not change a workspace.
#[derive(Debug)]
pub enum Change {
    /// The event makes no sense in the workspace's state.
    Invalid(lifecycle::Invalid),
    /// No such workspace.
    Gone,
    /// The store failed, or the row kept changing under us.
    Store(ApiError),
}

/// A change of a workspace, as the event stream shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceEvent {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub state: String,
    pub desired: String,
    pub node: Option<String>,
    pub generation: u64,
    pub reason: Option<String>,
    pub at_ms: i64,
}

impl WorkspaceEvent {
    pub fn of(w: &WorkspaceRow) -> Self {
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            owner: w.owner.clone(),
            state: w.state.as_str().into(),
            desired: w.desired.as_str().into(),
            node: w.node.clone(),
            generation: w.generation,
            reason: w.reason.clone(),
            at_ms: w.updated_at_ms,
        }
    }
}

struct Inner {
    id: String,
    store: Store,
    agents: Agents,
    timing: Timing,
    started: Instant,
    wake_schedule: Notify,
    wake_dispatch: Notify,
    /// Workspace ids with a command on its way, and when it was last sent.
    inflight: Mutex<HashSet<String>>,
    retry_after: Mutex<HashMap<String, Instant>>,
    events: broadcast::Sender<WorkspaceEvent>,
}

/// The controller; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

fn observed(s: &pb::WorkspaceStatus) -> Observed {
    match pb::State::try_from(s.state).unwrap_or(pb::State::Unspecified) {
        pb::State::Running => Observed::Running,
        pb::State::Created | pb::State::Stopped => Observed::Stopped,
        pb::State::Deleted => Observed::Absent,
        pb::State::Unspecified => Observed::Failed("the node reported no state".into()),
    }
}

/// Agent error codes that no retry will fix.
fn permanent(code: &str) -> bool {
    matches!(
        code,
        "invalid_name"
            | "invalid_resources"
            | "invalid_request"
            | "invalid_image"
            | "image_not_found"
            | "registry_unauthorized"
            | "digest_mismatch"
            | "disk_too_large"
            | "addresses_exhausted"
    )
}

impl Controller {
    pub fn new(id: String, store: Store, agents: Agents, timing: Timing) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                store,
                agents,
                timing,
                started: Instant::now(),
                wake_schedule: Notify::new(),
                wake_dispatch: Notify::new(),
                inflight: Mutex::default(),
                retry_after: Mutex::default(),
                events: broadcast::channel(4096).0,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn agents(&self) -> &Agents {
        &self.inner.agents
    }

    pub fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    /// Workspace changes made by this coordinator.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkspaceEvent> {
        self.inner.events.subscribe()
    }

    /// Something changed: look for work now.
    pub fn wake(&self) {
        self.inner.wake_schedule.notify_one();
        self.inner.wake_dispatch.notify_one();
    }

    /// Publishes a row this coordinator wrote.
    pub fn published(&self, w: &WorkspaceRow) {
        let _ = self.inner.events.send(WorkspaceEvent::of(w));
    }

    /// Runs every loop until the future is dropped.
    pub async fn run(self, link_events: mpsc::UnboundedReceiver<LinkEvent>) {
        tokio::join!(
            self.schedule_loop(),
            self.dispatch_loop(),
            self.liveness_loop(),
            self.link_loop(link_events),
        );
    }

    // ---- scheduling ----

    async fn schedule_loop(&self) {
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
                ready: n.status == "ready" && now - n.last_seen_ms <= fresh,
                cordoned: n.cordoned,
                draining: n.draining,
                labels: n.labels.clone(),
                capacity: n.capacity,
                allocated: n.allocated,
                max_workspaces: n.slots,
                workspaces: n.allocated_slots,
                cached_images: n.cached_images.clone(),
            })
            .collect()
    }

    /// One batch: decide for up to 1,024 pending workspaces, commit the
    /// decisions in one transaction. Returns how many were placed.
    pub async fn schedule_once(&self) -> crate::error::Result<usize> {
        let store = &self.inner.store;
        self.retry_waiting_starts().await?;
        let pending = store.workspaces_in(&[State::Pending], 1024).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut fleet = scheduler::Fleet::new(self.views(&store.nodes().await?, now));
        let mut decisions = Vec::new();
        for w in pending.iter().filter(|w| w.desired != Desired::Deleted) {
            let req = scheduler::Request {
                image: w.image.clone(),
                resources: w.resources,
                node_selector: w.node_selector.clone(),
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
                        self.apply(&w.id, &[Event::Unplaceable(why)], None).await;
                    }
                }
            }
        }
        let placed = store.place(&decisions, &self.inner.id).await?;
        let n = placed.len();
        for w in placed {
            tracing::debug!(workspace = %w.id, node = ?w.node, "placed");
            self.published(&w);
            self.dispatch(w);
        }
        Ok(n)
    }

    /// Tries again the starts that found no room on their node.
    async fn retry_waiting_starts(&self) -> crate::error::Result<()> {
        let stopped = self
            .inner
            .store
            .workspaces_in(&[State::Stopped], 1024)
            .await?;
        for w in stopped.iter().filter(|w| w.desired == Desired::Running) {
            self.apply(&w.id, &[Event::StartRequested], None).await;
        }
        Ok(())
    }

    // ---- commands ----

    async fn dispatch_loop(&self) {
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

    async fn dispatch_once(&self) -> crate::error::Result<()> {
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
    fn dispatch(&self, w: WorkspaceRow) {
        let Some(cmd) = lifecycle::pending_command(&w.lifecycle()) else {
            return;
        };
        if matches!(w.state, State::Scheduled | State::Starting)
            && now_ms() - w.state_since_ms > self.inner.timing.start_timeout.as_millis() as i64
        {
            let me = self.clone();
            tokio::spawn(async move { me.apply(&w.id, &[Event::Timeout], None).await });
            return;
        }
        let node = w.node.clone().unwrap_or_default();
        if !self.inner.agents.is_connected(&node) {
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

    fn request(w: &WorkspaceRow, cmd: Command) -> pb::request::Command {
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
                }),
                auth: None,
                start: w.desired == Desired::Running,
            }),
            Command::Start => C::Start(pb::NameRequest { name, generation }),
            Command::Stop => C::Stop(pb::StopRequest {
                name,
                grace_seconds: 0,
                generation,
            }),
            Command::Delete => C::Delete(pb::NameRequest { name, generation }),
        }
    }

    async fn send(&self, w: WorkspaceRow, cmd: Command) {
        let node = w.node.clone().unwrap_or_default();
        let timeout = self.inner.timing.command_timeout;
        let started = Instant::now();
        let answer = self
            .inner
            .agents
            .call(&node, Self::request(&w, cmd), timeout)
            .await;
        tracing::debug!(workspace = %w.id, ?cmd, ms = started.elapsed().as_millis() as u64, "command answered");
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
            Ok(R::Error(e)) if e.code == "not_found" && cmd != Command::Create => {
                (vec![Event::Observed(Observed::Absent)], None)
            }
            Ok(R::Error(e)) if e.code == "already_exists" => {
                // The create went through before (its answer was lost): ask what it is.
                match self
                    .inner
                    .agents
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
            Ok(R::Error(e)) if e.code == "registry_error" => {
                let why = format!("registry_unreachable: {}", e.message);
                let waited = now_ms() - w.state_since_ms;
                if waited < self.inner.timing.registry_timeout.as_millis() as i64 {
                    tracing::info!(workspace = %w.id, error = %e.message, "registry not reachable; will retry");
                    self.apply(&w.id, &[Event::Retrying(why)], None).await;
                    self.retry_later(&w.id);
                    return;
                }
                (vec![Event::Observed(Observed::Failed(why))], None)
            }
            Ok(R::Error(e)) if permanent(&e.code) => {
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
        self.apply(&w.id, &events, status.as_ref()).await;
        // After the answer is recorded, not before: the start path waits on that write only.
        if cmd == Command::Create && status.is_some() {
            if let Err(e) = self.inner.store.note_cached_image(&node, &w.image).await {
                tracing::debug!(node = %node, error = %e, "cached image not noted");
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

    /// Applies `events` in order to workspace `id`, with the address and exit
    /// code of the node's `status` if given, as one write (one commit on the
    /// start path), re-reading the row if another writer got there first.
    /// Lenient: an event that does not apply in the current state is skipped.
    pub async fn apply(
        &self,
        id: &str,
        events: &[Event],
        status: Option<&pb::WorkspaceStatus>,
    ) -> Option<WorkspaceRow> {
        self.apply_as_of(id, events, status, None).await
    }

    /// Like `apply`, but leaves the workspace alone if its row changed after
    /// `as_of` (what is applied was observed before that).
    async fn apply_as_of(
        &self,
        id: &str,
        events: &[Event],
        status: Option<&pb::WorkspaceStatus>,
        as_of: Option<i64>,
    ) -> Option<WorkspaceRow> {
        match self.change(id, events, status, false, as_of).await {
            Ok(w) => Some(w),
            Err(Change::Invalid(_)) | Err(Change::Gone) => None,
            Err(Change::Store(e)) => {
                tracing::warn!(workspace = %id, error = %e, "workspace not updated");
                None
            }
        }
    }

    /// Like `apply`; with `strict`, an event that does not apply is an error
    /// (what a user's request gets) instead of being skipped; with `as_of`,
    /// a row updated after that time is left as it is.
    pub async fn change(
        &self,
        id: &str,
        events: &[Event],
        status: Option<&pb::WorkspaceStatus>,
        strict: bool,
        as_of: Option<i64>,
    ) -> Result<WorkspaceRow, Change> {
        let mut last = ApiError::conflict("busy", "the workspace changed concurrently; retry");
        for _ in 0..10 {
            let w = match self.inner.store.workspace(id).await {
                Ok(Some(w)) => w,
                Ok(None) => return Err(Change::Gone),
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if as_of.is_some_and(|t| w.updated_at_ms > t) {
                return Ok(w);
            }
            let mut lc = w.lifecycle();
            for event in events {
                match lifecycle::step(&lc, event) {
                    Ok((next, _)) => lc = next,
                    Err(e) if strict => return Err(Change::Invalid(e)),
                    Err(e) => tracing::debug!(workspace = %id, error = %e, "event ignored"),
                }
            }
            let mut next = w.with_lifecycle(&lc, now_ms());
            if let Some(st) = status {
                next.ip = (!st.ip.is_empty()).then(|| st.ip.clone());
                next.exit_code =
                    (st.state == pb::State::Stopped as i32).then_some(i64::from(st.exit_code));
            }
            if next.lifecycle() == w.lifecycle() && next.ip == w.ip && next.exit_code == w.exit_code
            {
                return Ok(w);
            }
            match self.inner.store.update_workspace(&w, &next).await {
                Ok(Some(stored)) => {
                    if stored.state != w.state {
                        tracing::info!(workspace = %id, from = w.state.as_str(), to = stored.state.as_str(), "workspace state");
                    }
                    self.published(&stored);
                    if stored.state == State::Pending {
                        self.wake();
                    } else if lifecycle::pending_command(&stored.lifecycle()).is_some() {
                        // Now, unless a command for it is in flight (an answer
                        // being applied); then the pass woken here sends it.
                        self.dispatch(stored.clone());
                        self.inner.wake_dispatch.notify_one();
                    }
                    return Ok(stored);
                }
                Ok(None) => {}
                // A start without room on the workspace's node: it stays
                // where it is, wanting to run, with the reason shown; the
                // scheduling pass tries again.
                Err(e)
                    if e.code == crate::store::NO_ROOM
                        && w.reason.as_deref() != Some(&e.message) =>
                {
                    let mut waiting = next.clone();
                    waiting.state = w.state;
                    waiting.state_since_ms = w.state_since_ms;
                    waiting.reason = Some(e.message.clone());
                    if let Ok(Some(stored)) = self.inner.store.update_workspace(&w, &waiting).await
                    {
                        self.published(&stored);
                        return Ok(stored);
                    }
                }
                Err(e) if e.code == crate::store::NO_ROOM => return Ok(w),
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(Change::Store(last))
    }

    // ---- what nodes say ----

    async fn link_loop(&self, mut rx: mpsc::UnboundedReceiver<LinkEvent>) {
        while let Some(ev) = rx.recv().await {
            match ev {
                LinkEvent::Registered {
                    node,
                    inventory,
                    at_ms,
                } => {
                    let me = self.clone();
                    tokio::spawn(async move { me.reconcile_node(&node, inventory, at_ms).await });
                }
                LinkEvent::Status { node, status } => {
                    let me = self.clone();
                    tokio::spawn(async move { me.report(&node, status).await });
                }
                LinkEvent::Disconnected { .. } => {}
            }
        }
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
                Ok(Some(w)) if w.state == State::Deleted => {
                    let _ = self
                        .inner
                        .agents
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

    // ---- node liveness ----

    async fn liveness_loop(&self) {
        let tick = (self.inner.timing.unreachable_after / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(tick).await;
            if let Err(e) = self.liveness_once().await {
                tracing::warn!(error = %e, "liveness pass failed");
            }
        }
    }

    async fn liveness_once(&self) -> crate::error::Result<()> {
        let store = &self.inner.store;
        let now = now_ms();
        store
            .touch_nodes(&self.inner.agents.connected(), now)
            .await?;
        let t = &self.inner.timing;
        // After a restart nobody is declared lost before agents had a full
        // grace period to reconnect.
        let may_lose = self.inner.started.elapsed() >= t.lost_after;
        for n in store.nodes().await? {
            let silent = now - n.last_seen_ms;
            if n.status == "ready" && silent > t.unreachable_after.as_millis() as i64 {
                if store
                    .set_node_status(&n.id, "ready", "unreachable", now)
                    .await?
                {
                    tracing::warn!(node = %n.id, silent_ms = silent, "node unreachable");
                }
            } else if n.status == "unreachable"
                && may_lose
                && silent > t.lost_after.as_millis() as i64
                && store
                    .set_node_status(&n.id, "unreachable", "lost", now)
                    .await?
            {
                tracing::warn!(node = %n.id, silent_ms = silent, "node lost; its workspaces are unknown");
                let on = store
                    .workspaces(&crate::store::WorkspaceFilter {
                        node: Some(n.id.clone()),
                        ..Default::default()
                    })
                    .await?;
                for w in on {
                    self.apply(&w.id, &[Event::NodeLost], None).await;
                }
            }
        }
        Ok(())
    }
}
