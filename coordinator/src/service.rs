//! The service: the one writer of the coordinator's state. The HTTP layer,
//! the link and the loops act through it; nothing else writes the store.
//! It creates workspaces and applies intents and what nodes report (each a
//! compare-and-set through the lifecycle), and runs the loops that drive
//! workspaces from the store's desired state to the nodes and back
//! (`reconcile`, `nodes`). Level-triggered: everything it does is derived
//! from the store, so a coordinator killed at any point resumes where it
//! was. The link is a `NodeLink` and the wall clock a `Clock`, both handed
//! in: a test drives the service with a fake link and its own clock.

mod access;
mod audit;
mod backups;
mod deletes;
mod exec;
mod fenced;
pub mod files;
mod idle;
mod moves;
mod nodes;
mod oidc;
mod prebuild_nodes;
mod prebuilds;
mod preempt;
mod pull_requests;
mod quotas;
mod reconcile;
mod report;
mod repos;
mod retention;
mod reviews;
mod secrets;
mod stats;
mod teams;
mod tunnels;

#[cfg(test)]
mod tests;

pub use exec::Exec;
pub use repos::DEFAULT_GIT_USER;
pub use stats::Stats;

use crate::domain::lifecycle::{self, Event, State};
use crate::domain::scheduler::Strategy;
use crate::domain::tier::Tiers;
use crate::domain::workspace::{self as ws, WorkspaceRow};
use crate::error::{Error, Result};
use crate::link::{LinkEvent, NodeLink};
use crate::store::{Store, WorkspaceFilter};
use berth_proto::agent as pb;
use berth_proto::api::{CreateWorkspace, WorkspaceEvent};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, Notify};

/// Timing and policy of the loops.
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
    /// How often running workspaces are checked against the idle policy.
    pub idle_check: Duration,
    /// How often workspaces are checked for a due backup.
    pub backup_check: Duration,
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
            idle_check: Duration::from_secs(2),
            backup_check: Duration::from_secs(2),
        }
    }
}

/// The wall clock, in milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(berth_proto::units::now_ms)
}

/// What a service is made of.
pub struct Parts {
    /// This coordinator's name in placement records.
    pub id: String,
    pub store: Store,
    pub link: Arc<dyn NodeLink>,
    pub timing: Timing,
    pub tiers: Tiers,
    /// Image of a workspace created without one.
    pub default_image: Option<String>,
    /// The cluster CA's fingerprint (join tokens pin it).
    pub ca_fingerprint: String,
    pub clock: Clock,
    /// Seals the secrets users keep (git tokens).
    pub sealer: crate::secrets::Sealer,
    /// Prebuilds kept, and the repositories whose pushes start them.
    pub prebuilds: crate::domain::webhook::PrebuildPolicy,
    /// Where workspaces are backed up, and how often.
    pub backups: crate::domain::backup::Policy,
    /// Prices for the cost reports, and how often usage is sampled.
    pub cost: crate::domain::report::CostPolicy,
    /// Every user's default limits.
    pub quotas: crate::domain::quota::Limits,
}

/// Why `Service::change` did not change a workspace.
#[derive(Debug)]
pub enum Change {
    /// The event makes no sense in the workspace's state.
    Invalid(lifecycle::Invalid),
    /// No such workspace.
    Gone,
    /// The store failed, or the row kept changing under us.
    Store(Error),
}

struct Inner {
    id: String,
    store: Store,
    link: Arc<dyn NodeLink>,
    timing: Timing,
    tiers: Tiers,
    default_image: Option<String>,
    ca_fingerprint: String,
    clock: Clock,
    sealer: crate::secrets::Sealer,
    prebuilds: crate::domain::webhook::PrebuildPolicy,
    backups: crate::domain::backup::Policy,
    cost: crate::domain::report::CostPolicy,
    quotas: crate::domain::quota::Limits,
    stats: Stats,
    /// Workspace ids with a backup or restore on its way.
    backing_up: Mutex<HashSet<String>>,
    /// Workspaces stopped by a preemption notice, to start elsewhere once
    /// their final backup is confirmed.
    resume: Mutex<HashSet<String>>,
    /// When each unknown workspace's repository was last looked in for a
    /// backup its node took after fencing it (`fenced`).
    fence_looked: Mutex<HashMap<String, i64>>,
    /// Bounds the backups running at once.
    backup_slots: Arc<tokio::sync::Semaphore>,
    /// Held while a prebuild is requested or started (one decision at a time).
    prebuild_lock: tokio::sync::Mutex<()>,
    /// When this service was made, by its clock.
    started_ms: i64,
    wake_schedule: Notify,
    wake_dispatch: Notify,
    /// Wakes the backup pass: a workspace stopped (its final backup is due now).
    wake_backup: Notify,
    /// Workspace ids with a command on its way.
    inflight: Mutex<HashSet<String>>,
    retry_after: Mutex<HashMap<String, Instant>>,
    events: broadcast::Sender<WorkspaceEvent>,
    /// The last pull progress of workspaces being made, by id (this
    /// coordinator's link only; cleared by the next change of the workspace).
    progress: Mutex<HashMap<String, berth_proto::api::Progress>>,
    /// Idle warnings sent, by workspace id: the stop they were about, and when.
    idle_warned: Mutex<HashMap<String, (i64, i64)>>,
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(p: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: p.id,
                store: p.store,
                link: p.link,
                timing: p.timing,
                tiers: p.tiers,
                default_image: p.default_image,
                ca_fingerprint: p.ca_fingerprint,
                started_ms: (p.clock)(),
                clock: p.clock,
                sealer: p.sealer,
                prebuilds: p.prebuilds,
                backup_slots: Arc::new(tokio::sync::Semaphore::new(p.backups.parallel.max(1))),
                backups: p.backups,
                cost: p.cost,
                quotas: p.quotas,
                stats: Stats::default(),
                backing_up: Mutex::default(),
                resume: Mutex::default(),
                fence_looked: Mutex::default(),
                prebuild_lock: Default::default(),
                wake_schedule: Notify::new(),
                wake_dispatch: Notify::new(),
                wake_backup: Notify::new(),
                inflight: Mutex::default(),
                retry_after: Mutex::default(),
                events: broadcast::channel(4096).0,
                progress: Mutex::default(),
                idle_warned: Mutex::default(),
            }),
        }
    }

    /// Now, by the service's clock (Unix ms).
    pub fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    pub fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    /// The resource tiers workspaces are created from.
    pub fn tiers(&self) -> &Tiers {
        &self.inner.tiers
    }

    /// Whether `node` has a live link to this coordinator.
    pub fn is_connected(&self, node: &str) -> bool {
        self.inner.link.is_connected(node)
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
    /// A notice about workspace `id` on the event stream (not a change of
    /// it): sent with the workspace as the store has it now, so a client
    /// never sees its state or desired state go back to what it was before
    /// the notice was decided.
    pub(crate) async fn announce(&self, id: &str, reason: String) {
        if let Ok(Some(w)) = self.inner.store.workspace(id).await {
            let mut ev = w.event();
            ev.reason = Some(reason);
            ev.at_ms = self.now();
            let _ = self.inner.events.send(ev);
        }
    }

    fn published(&self, w: &WorkspaceRow) {
        self.inner.stats.saw(w, self.now());
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&w.id);
        let _ = self.inner.events.send(w.event());
    }

    /// What the service counted, for `/metrics`.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// How many nodes are connected to this coordinator.
    pub fn connected_nodes(&self) -> usize {
        self.inner.link.connected().len()
    }

    /// The last pull progress of workspace `id`, while it is being made.
    pub fn progress_of(&self, id: &str) -> Option<berth_proto::api::Progress> {
        let p = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.get(id).cloned()
    }

    /// Runs every loop until the future is dropped.
    pub async fn run(self, link_events: mpsc::UnboundedReceiver<LinkEvent>) {
        tokio::join!(
            self.schedule_loop(),
            self.dispatch_loop(),
            self.liveness_loop(),
            self.idle_loop(),
            self.backup_loop(),
            self.usage_loop(),
            self.link_loop(link_events),
        );
    }

    // ---- workspaces ----

    /// Creates a workspace of `owner` (stored, so acknowledged, before it is
    /// placed and started).
    pub async fn create(&self, owner: &str, req: &CreateWorkspace) -> Result<WorkspaceRow> {
        let defaults = ws::Defaults {
            tiers: &self.inner.tiers,
            image: self.inner.default_image.as_deref(),
        };
        if let Some(team) = &req.team {
            self.check_team_of_create(owner, team).await?;
        }
        let id = format!("w{}", hex::encode(rand::random::<[u8; 8]>()));
        let w = ws::resolve(req, owner, defaults, id, self.now())?;
        let t = Instant::now();
        self.inner
            .store
            .insert_workspace_within(&w, &self.inner.quotas)
            .await?;
        self.inner.stats.store("insert", t.elapsed());
        self.published(&w);
        self.wake();
        Ok(w)
    }

    /// `owner`'s workspace named `name`; a deleted one is gone (404), as
    /// for every request after its deletion.
    pub async fn find(&self, owner: &str, name: &str) -> Result<WorkspaceRow> {
        crate::domain::validate::workspace_name(name)?;
        match self.inner.store.workspace_by_name(owner, name).await? {
            Some(w) if w.state != State::Deleted => Ok(w),
            _ => Err(Error::not_found(format!("no workspace named {name:?}"))),
        }
    }

    /// The workspace with id `id`, whatever its state.
    pub async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRow>> {
        self.inner.store.workspace(id).await
    }

    /// The workspaces `f` selects.
    pub async fn workspaces(&self, f: &WorkspaceFilter) -> Result<Vec<WorkspaceRow>> {
        self.inner.store.workspaces(f).await
    }

    /// A user's request about `owner`'s workspace `name` (start, stop,
    /// delete): refused with `invalid_state` if it makes no sense now.
    pub async fn intent(&self, owner: &str, name: &str, ev: Event) -> Result<WorkspaceRow> {
        let w = self.find(owner, name).await?;
        let changed = match ev {
            Event::StartRequested => self.request_start(&w).await,
            Event::DeleteRequested => self.request_delete(&w, false).await,
            ev => self.change(&w.id, &[ev], None, true, None).await,
        };
        match changed {
            Ok(stored) => Ok(stored),
            Err(Change::Invalid(e)) => Err(Error::conflict(
                "invalid_state",
                format!("workspace {name} is {}: {e}", e.state.as_str()),
            )),
            Err(Change::Gone) => Err(Error::not_found(format!("no workspace named {name:?}"))),
            Err(Change::Store(e)) => Err(e),
        }
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
    pub(crate) async fn apply_as_of(
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
        let mut last = Error::conflict("busy", "the workspace changed concurrently; retry");
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
            let mut next = w.with_lifecycle(&lc, self.now());
            if let Some(st) = status {
                next.ip = (!st.ip.is_empty()).then(|| st.ip.clone());
                next.exit_code =
                    (st.state == pb::State::Stopped as i32).then_some(i64::from(st.exit_code));
                if let Some(init) = &st.init {
                    next.init = Some(reconcile::init_of(init));
                }
                if let Some(v) = &st.idle {
                    next.idle = Some(idle::idle_of(v));
                }
            }
            if next.state != w.state && matches!(next.state, State::Starting | State::Pending) {
                // A verdict of its last run says nothing of the next one.
                next.idle = None;
            }
            if next.lifecycle() == w.lifecycle()
                && next.ip == w.ip
                && next.exit_code == w.exit_code
                && next.init == w.init
                && next.idle == w.idle
            {
                return Ok(w);
            }
            let t = Instant::now();
            let updated = self
                .inner
                .store
                .update_workspace_within(&w, &next, &self.inner.quotas)
                .await;
            self.inner.stats.store("update", t.elapsed());
            match updated {
                Ok(Some(stored)) => {
                    if stored.state != w.state {
                        tracing::info!(workspace = %id, from = w.state.as_str(), to = stored.state.as_str(), "workspace state");
                        if stored.state == State::Stopped {
                            // Its stop's backup is due: not a pass later.
                            self.inner.wake_backup.notify_one();
                        }
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
                // A limit reached: refused, not retried.
                Err(e) if e.code == crate::store::QUOTA_EXCEEDED => return Err(Change::Store(e)),
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(Change::Store(last))
    }
}
