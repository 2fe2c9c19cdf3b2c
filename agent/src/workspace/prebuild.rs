//! Prebuilds as overlay layers (docs/prebuilds.md). A prebuild is a build
//! workspace's /workspace after its clone, onCreateCommand and
//! updateContentCommand, committed as the containerd snapshot
//! `berth-prebuild/<key>` with the workspace's ids made the image's own.
//! A workspace started from it gets /workspace as an overlay: the lower is
//! that snapshot (a read-only view, idmapped to the workspace's id range,
//! shared by every workspace of the prebuild), the upper and work dirs are
//! on the workspace's own volume. Starting costs one mount whatever the
//! prebuild's size, the volume's limit applies to what the user writes,
//! and the upper holds exactly the user's changes.

use super::run::{InitCommand, InitLog};
use super::*;
use crate::build as b;
use crate::init::prebuild as p;
use crate::init::state::{InitState, Phase as StepPhase};
use berth_proto::codes::Code;

/// The lease holding prebuild snapshots and their views (a GC root).
const PREBUILD_LEASE: &str = "berth-prebuilds";
/// Committed prebuilds are `berth-prebuild/<key>`.
const PREBUILD_PREFIX: &str = "berth-prebuild/";
/// A workspace's view of its prebuild: `berth-prebuild-view/<name>`.
const VIEW_PREFIX: &str = "berth-prebuild-view/";
/// Label of a prebuild retention dropped while a workspace used it: it
/// goes with the last such workspace.
const EXPIRED_LABEL: &str = "berth.prebuild.expired";
/// Label of a prebuild: when a workspace last mounted it (Unix ms).
const USED_LABEL: &str = "berth.prebuild.used-ms";
/// Overlays of /workspace are mounted at `<state_dir>/prebuilt/<name>`.
pub(super) const MERGED_DIR: &str = "prebuilt";

/// The snapshot a prebuild of `key` is.
pub(super) fn snapshot_name(key: &str) -> String {
    format!("{PREBUILD_PREFIX}{key}")
}

impl Manager {
    /// The node directory /workspace is: the overlay over the prebuild, or
    /// the volume's own directory.
    pub(super) fn workspace_root(&self, r: &Record) -> std::path::PathBuf {
        match r.prebuild {
            Some(_) => self.merged_dir(&r.name),
            None => self.inner.volumes.workspace_dir(r.parts()),
        }
    }

    fn merged_dir(&self, name: &str) -> std::path::PathBuf {
        self.inner.cfg.file.state_dir.join(MERGED_DIR).join(name)
    }

    /// The key of a prebuild asked for that this node holds.
    pub(super) async fn held_prebuild(
        &self,
        repo: Option<&pb::RepoInit>,
    ) -> Result<Option<String>> {
        let Some(want) = repo.and_then(|r| r.prebuild.as_ref()) else {
            return Ok(None);
        };
        if !p::is_key(&want.key) {
            return Err(AgentError::InvalidRequest(format!(
                "prebuild key {:?} is not one",
                want.key
            )));
        }
        let held = self
            .inner
            .ctd
            .snapshot_exists(&snapshot_name(&want.key))
            .await?;
        Ok(held.then(|| want.key.clone()))
    }

    /// Mounts /workspace over the prebuild if it is not (after a reboot,
    /// say): the view, the idmapped lower, the overlay.
    pub(super) async fn mount_prebuild(&self, r: &Record) -> Result<()> {
        let Some(key) = &r.prebuild else {
            return Ok(());
        };
        let merged = self.merged_dir(&r.name);
        if self.inner.volumes.is_mounted(&merged) {
            return Ok(());
        }
        let ctd = &self.inner.ctd;
        ctd.create_lasting_lease(PREBUILD_LEASE).await?;
        // For the cache's least-recently-used order.
        ctd.set_snapshot_labels(
            &snapshot_name(key),
            HashMap::from([(USED_LABEL.to_string(), now_ms().to_string())]),
        )
        .await?;
        let view = format!("{VIEW_PREFIX}{}", r.name);
        let mounts = ctd.view(PREBUILD_LEASE, &view, &snapshot_name(key)).await?;
        let lower = match mounts.first() {
            Some(m) if m.r#type == "bind" => m.source.clone(),
            Some(m) => rootfs::lowers(&mounts).into_iter().next().ok_or_else(|| {
                AgentError::InvalidRequest(format!("prebuild view: a {} mount", m.r#type))
            })?,
            None => return Err(AgentError::InvalidRequest("prebuild view: no mount".into())),
        };
        let vol = self.inner.volumes.mountpoint(r.parts());
        let upper = self.inner.volumes.workspace_dir(r.parts());
        let work = vol.join("workspace.work");
        if let Err(e) = std::fs::create_dir(&work) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(AgentError::io("mkdir the overlay's work dir")(e));
            }
        }
        std::fs::create_dir_all(&merged).map_err(AgentError::io("mkdir /workspace's overlay"))?;
        let mapped = task::MappedLowers::mount(
            &self
                .inner
                .cfg
                .file
                .state_dir
                .join(IDMAPPED_DIR)
                .join(format!("{}-workspace", r.name)),
            &[lower],
            &self.inner.net.userns_path(r.parts()),
        )?;
        // redirect_dir: a directory of the lower can be renamed (rename(2),
        // not EXDEV); index off, as containerd's own overlays.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on,index=off",
            mapped.paths()[0],
            upper.display(),
            work.display()
        );
        let mounted = nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(options.as_str()),
        );
        // The overlay holds its own reference to the lower: the idmapped
        // mount is detached now (`mapped` dropped).
        drop(mapped);
        mounted.map_err(|e| AgentError::Volume(format!("overlay of /workspace ({options}): {e}")))
    }

    /// Unmounts /workspace's overlay and drops the workspace's view of the
    /// prebuild `key` (idempotent); the prebuild goes too if retention
    /// dropped it and no other workspace uses it.
    pub(super) async fn unmount_prebuild(&self, name: &str, key: Option<&str>) -> Result<()> {
        let merged = self.merged_dir(name);
        while self.inner.volumes.is_mounted(&merged) {
            nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| AgentError::Volume(format!("umount {}: {e}", merged.display())))?;
        }
        match std::fs::remove_dir(&merged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AgentError::io("remove /workspace's overlay dir")(e))
            }
            _ => {}
        }
        let ctd = &self.inner.ctd;
        ctd.remove_snapshot(&format!("{VIEW_PREFIX}{name}")).await?;
        if let Some(key) = key {
            let snapshot = snapshot_name(key);
            let labels = ctd.snapshot_labels(&snapshot).await?.unwrap_or_default();
            // Another workspace's view keeps it: the removal fails then.
            if labels.contains_key(EXPIRED_LABEL) && ctd.remove_snapshot(&snapshot).await.is_ok() {
                tracing::info!(key, "expired prebuild removed with its last workspace");
            }
        }
        Ok(())
    }

    /// Drops prebuilds retention expired: removed now, or labelled to go
    /// with the last workspace that uses them.
    pub async fn drop_prebuilds(&self, keys: Vec<String>) -> Result<pb::PrebuildList> {
        let ctd = &self.inner.ctd;
        for key in &keys {
            if !p::is_key(key) {
                return Err(AgentError::InvalidRequest(format!(
                    "{key:?} is not a prebuild key"
                )));
            }
            if self.prebuild_in_use(key)? {
                let label = HashMap::from([(EXPIRED_LABEL.to_string(), now_ms().to_string())]);
                if ctd.snapshot_exists(&snapshot_name(key)).await? {
                    ctd.set_snapshot_labels(&snapshot_name(key), label).await?;
                }
                continue;
            }
            ctd.remove_snapshot(&snapshot_name(key)).await?;
            tracing::info!(key, "expired prebuild removed");
        }
        self.prebuilds().await
    }

    /// Whether a workspace on the node has /workspace over prebuild `key`.
    fn prebuild_in_use(&self, key: &str) -> Result<bool> {
        Ok(self
            .inner
            .records
            .all()?
            .iter()
            .any(|r| r.prebuild.as_deref() == Some(key)))
    }

    /// Keeps the prebuild layers within the cache's budget: the least
    /// recently used ones no workspace uses are removed.
    pub(super) async fn enforce_cache(&self) -> Result<Vec<String>> {
        let ctd = &self.inner.ctd;
        let budget = match self.inner.cfg.file.cache.max_bytes {
            0 => {
                let st = nix::sys::statvfs::statvfs(&self.inner.cfg.file.state_dir)
                    .map_err(|e| AgentError::Volume(format!("statvfs: {e}")))?;
                crate::cache::default_budget(st.blocks() as u64 * st.fragment_size() as u64)
            }
            b => b,
        };
        let mut entries = Vec::new();
        for key in self.prebuilds().await?.keys {
            let snapshot = snapshot_name(&key);
            let labels = ctd.snapshot_labels(&snapshot).await?.unwrap_or_default();
            let (bytes, _) = ctd.usage(&snapshot).await?;
            entries.push(crate::cache::Entry {
                last_used_ms: labels
                    .get(USED_LABEL)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                in_use: self.prebuild_in_use(&key)?,
                key,
                bytes,
            });
        }
        let evicted = crate::cache::evict(&entries, budget);
        for key in &evicted {
            ctd.remove_snapshot(&snapshot_name(key)).await?;
            tracing::info!(key, budget, "prebuild evicted from the node's cache");
        }
        Ok(evicted)
    }

    /// Builds a prebuild: a build workspace clones and runs the steps a
    /// prebuild holds, its /workspace is committed as a snapshot layer,
    /// and it is deleted whatever happened.
    #[tracing::instrument(name = "prebuild", skip_all, fields(
        workspace = req.create.as_ref().and_then(|c| c.spec.as_ref()).map_or("", |s| s.name.as_str()),
    ))]
    pub async fn prebuild(&self, req: pb::PrebuildRequest) -> Result<pb::PrebuildResult> {
        let mut create = req
            .create
            .ok_or_else(|| AgentError::InvalidRequest("create missing".into()))?;
        let spec = create
            .spec
            .as_mut()
            .ok_or_else(|| AgentError::InvalidRequest("spec missing".into()))?;
        let repo = spec
            .repo
            .as_mut()
            .ok_or_else(|| AgentError::InvalidRequest("a prebuild needs a repository".into()))?;
        // A build never starts from another prebuild.
        repo.prebuild = None;
        create.start = true;
        let name = spec.name.clone();
        validate::name(&name)?;
        // What a crashed build left goes first.
        self.delete(&name, 0).await?;
        self.inner
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        let built = Box::pin(self.build_prebuild(create, &name)).await;
        self.inner
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        if let Err(e) = self.delete(&name, 0).await {
            tracing::warn!(workspace = %name, error = %e, "deleting a prebuild's build workspace");
        }
        built
    }

    /// Whether workspace `name` is a prebuild's build.
    pub(super) fn is_building(&self, name: &str) -> bool {
        self.inner
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    async fn build_prebuild(
        &self,
        create: pb::CreateRequest,
        name: &str,
    ) -> Result<pb::PrebuildResult> {
        self.create(create).await?;
        let _guard = self.lock(name).await;
        let r = self.record(name)?;
        let st = r
            .init
            .clone()
            .ok_or_else(|| AgentError::InvalidRequest("the build has no init".into()))?;
        if let Some(s) = st.steps.iter().find(|s| s.phase == StepPhase::Failed) {
            return Err(AgentError::init(
                Code::PrebuildFailed,
                format!(
                    "{} failed (exit status {}): {}",
                    s.name, s.exit_code, s.tail
                ),
            ));
        }
        let grace = Duration::from_secs(self.inner.cfg.file.workspace.stop_grace_seconds.into());
        self.stop_task(name, grace).await?;
        let key = p::key(&st.repo_url, &st.commit, &st.config_hash);
        let snapshot = snapshot_name(&key);
        let t = Instant::now();
        let reused = self.inner.ctd.snapshot_exists(&snapshot).await?;
        if !reused {
            self.capture(&r, &snapshot).await?;
            self.inner
                .ctd
                .set_snapshot_labels(
                    &snapshot,
                    HashMap::from([(USED_LABEL.to_string(), now_ms().to_string())]),
                )
                .await?;
            // The new layer counts against the budget; older ones go.
            let evicted = self.enforce_cache().await?;
            if evicted.contains(&key) {
                return Err(AgentError::init(
                    Code::PrebuildFailed,
                    "the prebuild is larger than the node's cache ([cache] max_bytes)".to_string(),
                ));
            }
        }
        let capture_ms = ms(t);
        let (bytes, files) = self.inner.ctd.usage(&snapshot).await?;
        tracing::info!(key, bytes, files, capture_ms, reused, "prebuild committed");
        Ok(pb::PrebuildResult {
            key,
            commit: st.commit.clone(),
            config_hash: st.config_hash.clone(),
            folder: st.folder.clone(),
            bytes,
            files,
            init: Some(st.report(&r.image)),
            reused,
            capture_ms,
        })
    }

    /// Commits the stopped build workspace's /workspace as `snapshot`: its
    /// ids made the image's own (0-based, as an image layer's), then its
    /// files copied into a fresh snapshot (cp keeps links, modes, xattrs).
    async fn capture(&self, r: &Record, snapshot: &str) -> Result<()> {
        let ctd = &self.inner.ctd;
        let dir = self.inner.volumes.workspace_dir(r.parts());
        b::shift_ids(&dir, r.userns.host_base, r.userns.size)
            .map_err(AgentError::io("shift the prebuild's ids"))?;
        ctd.create_lasting_lease(PREBUILD_LEASE).await?;
        let active = format!("berth-prebuild-active-{}", r.name);
        let _ = ctd.remove_snapshot(&active).await;
        let mounts = ctd
            .prepare(Some(PREBUILD_LEASE), &active, "", HashMap::new())
            .await?;
        let copied = async {
            let target = b::upperdir(&mounts)
                .ok_or_else(|| AgentError::InvalidRequest("prebuild snapshot: no dir".into()))?;
            let out = tokio::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", dir.display()))
                .arg(&target)
                .output()
                .await
                .map_err(AgentError::io("cp"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(AgentError::init(
                    Code::PrebuildFailed,
                    format!(
                        "committing the layer: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                )),
            }
        }
        .await;
        let committed = match copied {
            Ok(()) => ctd.commit(PREBUILD_LEASE, snapshot, &active).await,
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let _ = ctd.remove_snapshot(&active).await;
        }
        committed
    }

    /// The prebuilds this node holds.
    pub async fn prebuilds(&self) -> Result<pb::PrebuildList> {
        let keys = self
            .inner
            .ctd
            .list_snapshots("name~=\"^berth-prebuild/\"")
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(PREBUILD_PREFIX).map(String::from))
            .collect();
        Ok(pb::PrebuildList { keys })
    }

    /// Brings the prebuild's repository up to what the workspace asked
    /// for: nothing to do when it asked for the prebuild's own commit,
    /// else a fetch of the branch (or commit) and a checkout of it. Returns
    /// the commit, or the failure's code and git's last lines.
    pub(super) async fn update_from_prebuild(
        &self,
        r: &Record,
        repo: &pb::RepoInit,
        want: &pb::PrebuildRef,
        log: &InitLog,
    ) -> std::result::Result<String, (Code, String)> {
        let folder = want.folder.as_str();
        let rel = folder.strip_prefix("/workspace/").unwrap_or("");
        if rel.is_empty()
            || rel
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err((
                Code::InvalidRequest,
                format!("prebuild folder {folder:?} is not under /workspace"),
            ));
        }
        if !repo.commit.is_empty() && repo.commit == want.commit {
            return Ok(want.commit.clone());
        }
        let node_err = |e: AgentError| (Code::GitCloneFailed, e.to_string());
        let (askpass, env) = self.git_session(r, repo).map_err(node_err)?;
        let timeout =
            Duration::from_secs(self.inner.cfg.file.workspace.clone_timeout_seconds.into());
        let git = |args: &[&str]| {
            let mut a = crate::init::git::base_args();
            a.extend(["-C", folder].map(String::from));
            a.extend(args.iter().map(|s| s.to_string()));
            InitCommand {
                argv: a,
                root: false,
                env: env.clone(),
                cwd: "/workspace",
                timeout,
            }
        };
        let target = match (repo.commit.as_str(), repo.branch.as_str()) {
            ("", "") => "HEAD",
            ("", b) => b,
            (_, b) if !b.is_empty() => b,
            _ => "HEAD",
        };
        log.note(&format!("git fetch origin {target}"));
        let ran = self
            .run_init(
                &r.name,
                git(&["fetch", "--no-tags", "origin", "--", target]),
                Some(log),
            )
            .await
            .map_err(node_err)?;
        super::repo::check_git(&ran, timeout)?;
        let (checkout, missing) = match repo.commit.as_str() {
            "" => (
                vec!["reset", "--hard", "-q", "FETCH_HEAD", "--"],
                Code::GitCloneFailed,
            ),
            c => (
                vec!["checkout", "--detach", c, "--"],
                Code::GitCommitNotFound,
            ),
        };
        log.note(&format!("git {}", checkout.join(" ")));
        let ran = self
            .run_init(&r.name, git(&checkout), Some(log))
            .await
            .map_err(node_err)?;
        drop(askpass);
        if ran.timed_out || ran.code != 0 {
            return Err((missing, crate::init::git::tail(&ran.output, 5)));
        }
        Ok(self
            .repo_dir(r, folder)
            .and_then(|c| c.head_commit().ok())
            .unwrap_or_default())
    }

    /// The hash of the configuration `st` applied (`prebuild::config_hash`).
    pub(super) fn config_hash(&self, r: &Record, st: &InitState, repo: &pb::RepoInit) -> String {
        let text = match st.source.starts_with("detected") {
            true => String::new(),
            false => self
                .repo_dir(r, &st.folder)
                .and_then(|c| c.read(&st.source).ok())
                .unwrap_or_default(),
        };
        p::config_hash(&st.source, &text, &r.chain_id, repo.init_command.as_deref())
    }

    /// Overlays and views of workspaces no record explains, and captures a
    /// crash interrupted (before the volumes they sit on go).
    pub(crate) async fn remove_prebuild_strays(
        &self,
        known: &std::collections::HashSet<String>,
    ) -> Result<usize> {
        let mut n = 0;
        let root = self.inner.cfg.file.state_dir.join(MERGED_DIR);
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                self.unmount_prebuild(&name, None).await?;
                n += 1;
            }
        }
        let ctd = &self.inner.ctd;
        for key in ctd.list_snapshots("name~=\"^berth-prebuild-\"").await? {
            let stray = match key.strip_prefix(VIEW_PREFIX) {
                Some(name) => !known.contains(name),
                None => key.starts_with("berth-prebuild-active-"),
            };
            if stray {
                ctd.remove_snapshot(&key).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
