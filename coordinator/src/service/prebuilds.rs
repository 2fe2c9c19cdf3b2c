//! Prebuilds (docs/prebuilds.md): a build placed on a node like a
//! workspace, which answers with the layer it committed; and, for a create
//! from a repository, the prebuild it starts from.

use super::Service;
use crate::domain::lifecycle::Command;
use crate::domain::scheduler;
use crate::domain::webhook;
use crate::domain::workspace::{self as ws, WorkspaceRow};
use crate::error::{Error, Result};
use crate::store::PrebuildRow;
use berth_proto::agent as pb;
use berth_proto::api::{CreateWorkspace, InitStep, Prebuild, Repo, RunPrebuild, WebhookResult};
use std::time::Duration;

/// How long a build may take before the coordinator stops waiting.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a build waits for its node to be connected here.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Most builds at once in the fleet.
const MAX_BUILDING: usize = 4;

/// A webhook that names no configured repository or is not signed with
/// its secret.
pub(super) fn bad_signature() -> Error {
    Error::unauthorized("no configured repository matches, or the signature is wrong")
        .with_code("bad_signature")
}

/// A webhook result that changed nothing.
pub(super) fn ignored(reason: String) -> WebhookResult {
    WebhookResult {
        outcome: "ignored".into(),
        reason,
        prebuild: None,
        workspace: None,
    }
}

/// A prebuild as the API shows it; `nodes`: those holding its layer.
pub fn view(p: &PrebuildRow, nodes: &[crate::domain::node::NodeRow]) -> Prebuild {
    let holders = nodes
        .iter()
        .filter(|n| !p.key.is_empty() && p.state == "ready" && n.cached_prebuilds.contains(&p.key))
        .map(|n| n.id.clone())
        .collect();
    Prebuild {
        id: p.id.clone(),
        repo_url: p.repo_url.clone(),
        branch: p.branch.clone(),
        state: p.state.clone(),
        key: p.key.clone(),
        commit: p.commit.clone(),
        node: p.node.clone(),
        nodes: holders,
        source: p.source.clone(),
        bytes: p.bytes,
        files: p.files,
        error_code: p.error_code.clone(),
        error: p.error.clone(),
        steps: serde_json::from_str::<Vec<InitStep>>(&p.steps).unwrap_or_default(),
        requested_by: p.requested_by.clone(),
        created_at_ms: p.created_at_ms,
        finished_at_ms: p.finished_at_ms,
    }
}

impl Service {
    /// Starts a prebuild of `req.repo` on a node the scheduler picks (as
    /// for a workspace of the same image and tier); answers at once, the
    /// build goes on in the background. One of the same repository and
    /// branch already building is answered instead; past `MAX_BUILDING`
    /// builds it waits (`queued`).
    pub async fn run_prebuild(&self, by: &str, req: &RunPrebuild) -> Result<Prebuild> {
        Ok(view(&self.request_prebuild(by, req, false).await?, &[]))
    }

    /// Records a prebuild request and starts it if it may start now. With
    /// `behind` (a push), one building for the same branch does not answer
    /// it: it waits behind that one, superseding an older waiting push.
    async fn request_prebuild(
        &self,
        by: &str,
        req: &RunPrebuild,
        behind: bool,
    ) -> Result<PrebuildRow> {
        let now = self.now();
        let id = format!("p{}", hex::encode(rand::random::<[u8; 8]>()));
        // Checked as a workspace's create is, before anything is stored.
        self.build_workspace(by, req, &id)?;
        let _one = self.inner.prebuild_lock.lock().await;
        let branch = req.repo.branch.clone().unwrap_or_default();
        let all = self.inner.store.prebuilds(None).await?;
        let building: Vec<&PrebuildRow> = all.iter().filter(|p| self.live(p, now)).collect();
        let same = |p: &&PrebuildRow| p.repo_url == req.repo.url && p.branch == branch;
        let busy = building.iter().find(|p| same(p));
        if let (Some(p), false) = (busy, behind) {
            return Ok((*p).clone());
        }
        let row = PrebuildRow {
            id,
            repo_url: req.repo.url.clone(),
            branch: branch.clone(),
            state: "queued".into(),
            image: req.image.clone().unwrap_or_default(),
            tier: req.tier.clone().unwrap_or_default(),
            commit: req.repo.commit.clone().unwrap_or_default(),
            requested_by: by.into(),
            created_at_ms: now,
            ..Default::default()
        };
        // A newer push supersedes one still waiting.
        for mut older in all
            .iter()
            .filter(|p| p.state == "queued" && same(p))
            .cloned()
        {
            older.state = "superseded".into();
            older.finished_at_ms = now;
            self.inner.store.put_prebuild(&older).await?;
        }
        self.inner.store.put_prebuild(&row).await?;
        if busy.is_some() || building.len() >= MAX_BUILDING {
            return Ok(row);
        }
        Ok(self.start_prebuild(row).await)
    }

    /// The build workspace of a request (validated as a create is).
    fn build_workspace(&self, by: &str, req: &RunPrebuild, id: &str) -> Result<WorkspaceRow> {
        let create = CreateWorkspace {
            name: "prebuild".into(),
            image: req.image.clone(),
            tier: req.tier.clone(),
            repo: Some(req.repo.clone()),
            ..Default::default()
        };
        let defaults = ws::Defaults {
            tiers: &self.inner.tiers,
            image: self.inner.default_image.as_deref(),
        };
        ws::resolve(&create, by, defaults, id.to_string(), self.now())
    }

    /// Whether `p` is building (one older than the timeout was lost with
    /// a coordinator).
    fn live(&self, p: &PrebuildRow, now: i64) -> bool {
        p.state == "building" && now - p.created_at_ms < BUILD_TIMEOUT.as_millis() as i64
    }

    /// Places a queued prebuild and starts its build; one that fits on no
    /// node fails at once (`unplaceable`).
    async fn start_prebuild(&self, mut row: PrebuildRow) -> PrebuildRow {
        let now = self.now();
        let req = RunPrebuild {
            repo: Repo {
                url: row.repo_url.clone(),
                branch: Some(row.branch.clone()).filter(|b| !b.is_empty()),
                commit: Some(row.commit.clone()).filter(|c| !c.is_empty()),
                ..Default::default()
            },
            image: Some(row.image.clone()).filter(|i| !i.is_empty()),
            tier: Some(row.tier.clone()).filter(|t| !t.is_empty()),
        };
        let placed = async {
            let w = self.build_workspace(&row.requested_by, &req, &row.id)?;
            let nodes = self.inner.store.nodes().await?;
            // The build is this coordinator's to send: its nodes first.
            let mut views = self.views(&nodes, now);
            if views.iter().any(|v| self.is_connected(&v.id)) {
                views.retain(|v| self.is_connected(&v.id));
            }
            let request = scheduler::Request {
                image: w.image.clone(),
                resources: w.resources,
                node_selector: w.node_selector.clone(),
                prebuild: None,
            };
            let p = scheduler::Fleet::new(views)
                .place(&request, self.inner.timing.strategy)
                .map_err(|nofit| Error::conflict("unplaceable", nofit.to_string()))?;
            Ok::<_, Error>((w, p.node))
        }
        .await;
        match placed {
            Ok((w, node)) => {
                row.state = "building".into();
                row.node = node;
                row.created_at_ms = now;
                if let Err(e) = self.inner.store.put_prebuild(&row).await {
                    tracing::warn!(prebuild = %row.id, error = %e, "recording a prebuild");
                    return row;
                }
                tokio::spawn(self.clone().build_in_background(w, row.clone()));
            }
            Err(e) => {
                self.inner.stats.prebuild("failed", None);
                row.state = "failed".into();
                row.error_code = e.code.to_string();
                row.error = e.message.clone();
                row.finished_at_ms = now;
                if let Err(e) = self.inner.store.put_prebuild(&row).await {
                    tracing::warn!(prebuild = %row.id, error = %e, "recording a prebuild");
                }
            }
        }
        row
    }

    /// Starts the queued prebuilds that may start now, oldest first.
    async fn start_queued(&self) -> Result<()> {
        let _one = self.inner.prebuild_lock.lock().await;
        let now = self.now();
        let mut all = self.inner.store.prebuilds(None).await?;
        all.reverse();
        let mut building: Vec<(String, String)> = all
            .iter()
            .filter(|p| self.live(p, now))
            .map(|p| (p.repo_url.clone(), p.branch.clone()))
            .collect();
        for p in all.into_iter().filter(|p| p.state == "queued") {
            let key = (p.repo_url.clone(), p.branch.clone());
            if building.len() >= MAX_BUILDING || building.contains(&key) {
                continue;
            }
            if self.start_prebuild(p).await.state == "building" {
                building.push(key);
            }
        }
        Ok(())
    }

    /// `build_prebuild` as a boxed future: a build's end starts queued
    /// builds, so the future types would contain themselves otherwise.
    fn build_in_background(
        self,
        w: WorkspaceRow,
        row: PrebuildRow,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.build_prebuild(w, row).await })
    }

    /// Asks the node to build, and records how it went.
    async fn build_prebuild(&self, w: WorkspaceRow, mut row: PrebuildRow) {
        let url = w.repo.as_ref().map(|r| r.url.clone()).unwrap_or_default();
        let credential = self.git_credential_for(&w.owner, &url).await;
        let pb::request::Command::Create(mut create) =
            Self::request(&w, Command::Create, credential, None, None)
        else {
            return;
        };
        // A prebuild sees only the secrets marked for prebuilds.
        create.secrets = self.secrets_for(&w, true).await;
        let cmd = pb::request::Command::Prebuild(pb::PrebuildRequest {
            create: Some(create),
        });
        // A node placed on may be reconnecting (to this coordinator); a
        // link that breaks during the build is waited for and the same
        // build asked again: the node answers with its outcome.
        let started = std::time::Instant::now();
        let mut attempts = 0;
        let answer = loop {
            let deadline = std::time::Instant::now() + CONNECT_WAIT;
            while !self.is_connected(&row.node) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            attempts += 1;
            let left = BUILD_TIMEOUT.saturating_sub(started.elapsed());
            match self.inner.link.call(&row.node, cmd.clone(), left).await {
                Err(e) if attempts < 5 && !left.is_zero() => {
                    tracing::warn!(prebuild = %row.id, error = %e, "prebuild: the link broke; asking again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                answer => break answer,
            }
        };
        use pb::response::Result as R;
        let mut reused = false;
        match answer {
            Ok(R::Prebuilt(p)) => {
                reused = p.reused;
                row.state = "ready".into();
                row.key = p.key;
                row.commit = p.commit;
                row.config_hash = p.config_hash;
                row.folder = p.folder;
                row.bytes = p.bytes;
                row.files = p.files;
                if let Some(init) = &p.init {
                    let steps = super::reconcile::init_of(init).steps;
                    row.steps = serde_json::to_string(&steps).unwrap_or_default();
                }
                tracing::info!(prebuild = %row.id, key = %row.key, bytes = row.bytes, reused = p.reused, "prebuild ready");
            }
            Ok(R::Error(e)) => {
                row.state = "failed".into();
                row.error_code = e.code;
                row.error = e.message;
            }
            Ok(other) => {
                row.state = "failed".into();
                row.error_code = "node_error".into();
                row.error = format!("unexpected answer {other:?}");
            }
            Err(e) => {
                row.state = "failed".into();
                row.error_code = "node_unreachable".into();
                row.error = e.to_string();
            }
        }
        if row.state == "failed" {
            tracing::warn!(prebuild = %row.id, code = %row.error_code, error = %row.error, "prebuild failed");
        }
        let outcome = match (row.state.as_str(), reused) {
            ("ready", true) => "reused",
            ("ready", false) => "ready",
            _ => "failed",
        };
        self.inner.stats.prebuild(outcome, Some(started.elapsed()));
        row.finished_at_ms = self.now();
        if let Err(e) = self.inner.store.put_prebuild(&row).await {
            tracing::warn!(prebuild = %row.id, error = %e, "recording a prebuild");
        }
        if row.state == "ready" {
            self.expire_prebuilds(&row).await;
        }
        if let Err(e) = self.start_queued().await {
            tracing::warn!(error = %e, "starting queued prebuilds");
        }
        if row.state == "ready" {
            self.share_prebuild(&mut row).await;
        }
    }

    /// Prebuilds, newest first (of one repository if given).
    pub async fn prebuilds(&self, repo_url: Option<&str>) -> Result<Vec<Prebuild>> {
        if repo_url.is_some_and(|u| u.len() > 2048) {
            return Err(Error::invalid(
                "invalid_repo",
                "repo: at most 2048 characters",
            ));
        }
        let rows = self.inner.store.prebuilds(repo_url).await?;
        let nodes = self.inner.store.nodes().await?;
        Ok(rows.iter().map(|p| view(p, &nodes)).collect())
    }

    /// The log of a building prebuild (its build workspace's init log).
    pub async fn prebuild_log(&self, id: &str, follow: bool) -> Result<crate::link::Duplex> {
        let p = self
            .inner
            .store
            .prebuild(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no prebuild {id:?}")))?;
        let gone = |why: String| Error::conflict("not_building", why);
        if p.state != "building" {
            return Err(gone(format!(
                "prebuild {id} is {}: its log went with its build workspace",
                p.state
            )));
        }
        let cmd = pb::request::Command::InitLog(pb::InitLogRequest {
            name: id.to_string(),
            follow,
        });
        crate::link::tunnel(&*self.inner.link, &p.node, cmd)
            .await?
            .map_err(|e| gone(format!("prebuild {id}: {}", e.message)))
    }

    pub async fn prebuild(&self, id: &str) -> Result<Prebuild> {
        match self.inner.store.prebuild(id).await? {
            Some(p) => Ok(view(&p, &self.inner.store.nodes().await?)),
            None => Err(Error::not_found(format!("no prebuild {id:?}"))),
        }
    }

    /// The prebuild a create from a repository starts from: of its branch,
    /// ready, of the commit asked for if there is one, held by its node if
    /// one is, the newest. One the node lacks is named with where to pull
    /// it from (the node clones instead if it cannot: the workspace shows that).
    pub(super) async fn prebuild_for(&self, w: &WorkspaceRow) -> Option<pb::PrebuildRef> {
        let repo = w.repo.as_ref()?;
        let store = &self.inner.store;
        let rows = self.candidates(repo).await;
        let held = match &w.node {
            Some(n) => store
                .node(n)
                .await
                .ok()
                .flatten()
                .map(|n| n.cached_prebuilds)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let here =
            |p: &PrebuildRow| held.contains(&p.key) || w.node.as_deref() == Some(p.node.as_str());
        let p = Self::best_prebuild(&rows, repo.commit.as_deref(), here)?;
        Some(pb::PrebuildRef {
            key: p.key.clone(),
            commit: p.commit.clone(),
            built_at_ms: p.finished_at_ms,
            config_hash: p.config_hash.clone(),
            folder: p.folder.clone(),
            source: p.source.clone(),
        })
    }

    /// The ready prebuilds a workspace of `repo` may start from, newest
    /// first: of its branch; if there is none, of the repository's other
    /// branches (the node brings one up to the branch asked for: a pull
    /// request's branch starts from its base's prebuild).
    async fn candidates(&self, repo: &Repo) -> Vec<PrebuildRow> {
        let branch = repo.branch.as_deref().unwrap_or_default();
        match self.inner.store.ready_prebuilds_of(&repo.url).await {
            Ok(rows) if rows.iter().any(|p| p.branch == branch) => {
                rows.into_iter().filter(|p| p.branch == branch).collect()
            }
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "prebuilds not read");
                Vec::new()
            }
        }
    }

    /// The key of the prebuild a pending workspace would start from
    /// (wherever it is held), for placement.
    pub(super) async fn prebuild_key_for(&self, w: &WorkspaceRow) -> Option<String> {
        let repo = w.repo.as_ref()?;
        let rows = self.candidates(repo).await;
        Self::best_prebuild(&rows, repo.commit.as_deref(), |_| false).map(|p| p.key.clone())
    }

    /// Keeps the newest `[prebuilds] keep` ready prebuilds of `row`'s
    /// repository and branch: older ones expire and their node drops them
    /// (keeping one a workspace still uses until that workspace goes).
    async fn expire_prebuilds(&self, row: &PrebuildRow) {
        let store = &self.inner.store;
        let Ok(ready) = store.ready_prebuilds(&row.repo_url, &row.branch).await else {
            return;
        };
        let keep = self.inner.prebuilds.keep;
        let (kept, old) = ready.split_at(keep.min(ready.len()));
        for old in old {
            let mut expired = old.clone();
            expired.state = "expired".into();
            if let Err(e) = store.put_prebuild(&expired).await {
                tracing::warn!(prebuild = %old.id, error = %e, "expiring a prebuild");
                continue;
            }
            // A newer prebuild of the same content is the same layer.
            if kept.iter().any(|k| k.key == old.key) {
                continue;
            }
            self.drop_everywhere(&old.key, &old.node, &old.source).await;
        }
    }

    /// A git host's push webhook: checked against the repository's secret
    /// (a bad signature changes nothing), then a prebuild of the pushed
    /// commit if the branch is one the configuration names.
    pub async fn webhook(
        &self,
        source: webhook::Source,
        event: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<WebhookResult> {
        if crate::domain::pull_request::is_event(source, event) {
            return self.pull_request_hook(source, signature, body).await;
        }
        let push = match webhook::parse(source, event, body) {
            Ok(Some(p)) => p,
            Ok(None) => {
                // A ping or a tag carries no repository to check against.
                return Ok(WebhookResult {
                    outcome: "ignored".into(),
                    reason: format!("not a push to a branch ({event})"),
                    prebuild: None,
                    workspace: None,
                });
            }
            Err(e) => return Err(Error::invalid("invalid_webhook", e.to_string())),
        };
        let policy = &self.inner.prebuilds;
        let (repo, watched) = webhook::route(policy, &push).map_err(|_| bad_signature())?;
        if !webhook::verify(source, &repo.secret, body, signature) {
            return Err(bad_signature());
        }
        if !watched {
            return Ok(WebhookResult {
                outcome: "ignored".into(),
                reason: format!("branch {} is not one prebuilds are kept of", push.branch),
                prebuild: None,
                workspace: None,
            });
        }
        if push.commit.bytes().all(|b| b == b'0') {
            return Ok(WebhookResult {
                outcome: "ignored".into(),
                reason: format!("branch {} was deleted", push.branch),
                prebuild: None,
                workspace: None,
            });
        }
        let req = RunPrebuild {
            repo: Repo {
                url: repo.url.clone(),
                branch: Some(push.branch.clone()),
                commit: Some(push.commit.clone()),
                ..Default::default()
            },
            image: repo.image.clone(),
            tier: repo.tier.clone(),
        };
        let row = self.request_prebuild("webhook", &req, true).await?;
        Ok(WebhookResult {
            outcome: match row.state.as_str() {
                "queued" => "queued",
                _ => "started",
            }
            .into(),
            reason: String::new(),
            prebuild: Some(view(&row, &[])),
            workspace: None,
        })
    }
}
