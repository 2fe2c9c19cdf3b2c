//! Prebuilds (docs/prebuilds.md): a build placed on a node like a
//! workspace, which answers with the layer it committed; and, for a create
//! from a repository, the prebuild it starts from.

use super::Service;
use crate::domain::lifecycle::Command;
use crate::domain::scheduler;
use crate::domain::workspace::{self as ws, WorkspaceRow};
use crate::error::{Error, Result};
use crate::store::PrebuildRow;
use berth_proto::agent as pb;
use berth_proto::api::{CreateWorkspace, InitStep, Prebuild, RunPrebuild};
use std::time::Duration;

/// How long a build may take before the coordinator stops waiting.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a build waits for its node to be connected here.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Most builds at once in the fleet.
const MAX_BUILDING: usize = 4;

/// A prebuild as the API shows it.
pub fn view(p: &PrebuildRow) -> Prebuild {
    Prebuild {
        id: p.id.clone(),
        repo_url: p.repo_url.clone(),
        branch: p.branch.clone(),
        state: p.state.clone(),
        key: p.key.clone(),
        commit: p.commit.clone(),
        node: p.node.clone(),
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
    /// build goes on in the background.
    pub async fn run_prebuild(&self, by: &str, req: &RunPrebuild) -> Result<Prebuild> {
        let now = self.now();
        let id = format!("p{}", hex::encode(rand::random::<[u8; 8]>()));
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
        let w = ws::resolve(&create, by, defaults, id.clone(), now)?;
        let branch = req.repo.branch.clone().unwrap_or_default();
        let all = self.inner.store.prebuilds(None).await?;
        // A build older than the timeout was lost with a coordinator.
        let live = |p: &&PrebuildRow| {
            p.state == "building" && now - p.created_at_ms < BUILD_TIMEOUT.as_millis() as i64
        };
        let building: Vec<&PrebuildRow> = all.iter().filter(live).collect();
        if let Some(p) = building
            .iter()
            .find(|p| p.repo_url == req.repo.url && p.branch == branch)
        {
            return Ok(view(p));
        }
        if building.len() >= MAX_BUILDING {
            return Err(Error::conflict(
                "too_many_prebuilds",
                format!("{MAX_BUILDING} prebuilds are building; try again when one is done"),
            ));
        }
        let nodes = self.inner.store.nodes().await?;
        // The build is this coordinator's to send: its nodes first.
        let mut views = self.views(&nodes, now);
        if views.iter().any(|v| self.is_connected(&v.id)) {
            views.retain(|v| self.is_connected(&v.id));
        }
        let fleet = scheduler::Fleet::new(views);
        let request = scheduler::Request {
            image: w.image.clone(),
            resources: w.resources,
            node_selector: w.node_selector.clone(),
        };
        let placed = fleet
            .place(&request, self.inner.timing.strategy)
            .map_err(|nofit| Error::conflict("unplaceable", nofit.to_string()))?;
        let row = PrebuildRow {
            id,
            repo_url: req.repo.url.clone(),
            branch,
            state: "building".into(),
            node: placed.node,
            requested_by: by.into(),
            created_at_ms: now,
            ..Default::default()
        };
        self.inner.store.put_prebuild(&row).await?;
        let me = self.clone();
        let building = row.clone();
        tokio::spawn(async move { me.build_prebuild(w, building).await });
        Ok(view(&row))
    }

    /// Asks the node to build, and records how it went.
    async fn build_prebuild(&self, w: WorkspaceRow, mut row: PrebuildRow) {
        let url = w.repo.as_ref().map(|r| r.url.clone()).unwrap_or_default();
        let credential = self.git_credential_for(&w.owner, &url).await;
        let pb::request::Command::Create(create) =
            Self::request(&w, Command::Create, credential, None)
        else {
            return;
        };
        let cmd = pb::request::Command::Prebuild(pb::PrebuildRequest {
            create: Some(create),
        });
        // A node placed on may be reconnecting (to this coordinator).
        let deadline = std::time::Instant::now() + CONNECT_WAIT;
        while !self.is_connected(&row.node) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer = self.inner.link.call(&row.node, cmd, BUILD_TIMEOUT).await;
        use pb::response::Result as R;
        match answer {
            Ok(R::Prebuilt(p)) => {
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
        row.finished_at_ms = self.now();
        if let Err(e) = self.inner.store.put_prebuild(&row).await {
            tracing::warn!(prebuild = %row.id, error = %e, "recording a prebuild");
        }
    }

    /// Prebuilds, newest first (of one repository if given).
    pub async fn prebuilds(&self, repo_url: Option<&str>) -> Result<Vec<Prebuild>> {
        let rows = self.inner.store.prebuilds(repo_url).await?;
        Ok(rows.iter().map(view).collect())
    }

    pub async fn prebuild(&self, id: &str) -> Result<Prebuild> {
        match self.inner.store.prebuild(id).await? {
            Some(p) => Ok(view(&p)),
            None => Err(Error::not_found(format!("no prebuild {id:?}"))),
        }
    }

    /// The prebuild a create from a repository starts from: of its branch,
    /// ready, of the commit asked for if there is one, on its node if one
    /// is there, the newest. One on another node is still named (the node
    /// says it does not hold it and clones: the workspace shows that).
    pub(super) async fn prebuild_for(&self, w: &WorkspaceRow) -> Option<pb::PrebuildRef> {
        let repo = w.repo.as_ref()?;
        let branch = repo.branch.clone().unwrap_or_default();
        let rows = match self.inner.store.ready_prebuilds(&repo.url, &branch).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "prebuilds not read");
                return None;
            }
        };
        let rank = |p: &PrebuildRow| {
            let commit = repo
                .commit
                .as_deref()
                .is_some_and(|c| p.commit.starts_with(c));
            let here = w.node.as_deref() == Some(p.node.as_str());
            (commit, here)
        };
        // Newest first already: the first of the best rank.
        let best = rows.iter().map(rank).max()?;
        let p = rows.iter().find(|p| rank(p) == best)?;
        Some(pb::PrebuildRef {
            key: p.key.clone(),
            commit: p.commit.clone(),
            built_at_ms: p.finished_at_ms,
            config_hash: p.config_hash.clone(),
            folder: p.folder.clone(),
        })
    }
}
