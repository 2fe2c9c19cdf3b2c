//! Prebuilds as overlay layers (docs/prebuilds.md). A prebuild is a build
//! workspace's /workspace after its clone, onCreateCommand and
//! updateContentCommand: the build's own volume, its ids made the image's
//! own, kept as a layer (`crate::layers`: a rename, no copy). A workspace
//! started from it gets /workspace as an overlay: the lower is that layer
//! (mounted read-only once, idmapped to the workspace's id range, shared by
//! every workspace of the prebuild), the upper and work dirs are on the
//! workspace's own volume. Starting costs one mount whatever the
//! prebuild's size, the volume's limit applies to what the user writes,
//! and the upper holds exactly the user's changes.

use super::run::{InitCommand, InitLog};
use super::*;
use crate::build as b;
use crate::init::prebuild as p;
use crate::init::state::{InitState, Phase as StepPhase};
use berth_proto::codes::Code;

/// Overlays of /workspace are mounted at `<state_dir>/prebuilt/<name>`.
pub(super) const MERGED_DIR: &str = "prebuilt";
/// Layers are kept in `<state_dir>/prebuilds`.
pub(super) const LAYERS_DIR: &str = "prebuilds";

/// A build's outcome once it has one (an error as its code and message).
pub(super) type BuildOutcome =
    tokio::sync::watch::Receiver<Option<std::result::Result<pb::PrebuildResult, (Code, String)>>>;

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

    /// The key of a prebuild asked for that this node holds, pulled from
    /// the registry if it is there and not here; and how it came or why not.
    pub(super) async fn held_prebuild(
        &self,
        workspace: &str,
        repo: Option<&pb::RepoInit>,
    ) -> Result<(Option<String>, Option<String>)> {
        let Some(want) = repo.and_then(|r| r.prebuild.as_ref()) else {
            return Ok((None, None));
        };
        if !p::is_key(&want.key) {
            return Err(AgentError::InvalidRequest(format!(
                "prebuild key {:?} is not one",
                want.key
            )));
        }
        if self.inner.layers.exists(&want.key) || want.source.is_empty() {
            let held = self.inner.layers.exists(&want.key);
            return Ok((held.then(|| want.key.clone()), None));
        }
        let on = self.progress_to(workspace, "prebuild", &want.key);
        match self.fetch_prebuild(&want.key, &want.source, Some(on)).await {
            Ok(Some(pulled)) => Ok((
                Some(want.key.clone()),
                Some(format!(
                    "pulled from the registry ({:.1} MiB in {} ms)",
                    pulled.blob_bytes as f64 / f64::from(1u32 << 20),
                    pulled.ms
                )),
            )),
            Ok(None) => Ok((Some(want.key.clone()), None)),
            Err(e) => {
                tracing::warn!(key = %want.key, source = %want.source, error = %e, "prebuild pull failed");
                Ok((
                    None,
                    Some(format!("its pull from {} failed ({e})", want.source)),
                ))
            }
        }
    }

    /// Mounts /workspace over the prebuild if it is not (after a reboot,
    /// say): the layer, the idmapped lower, the overlay.
    pub(super) async fn mount_prebuild(&self, r: &Record) -> Result<()> {
        let Some(key) = &r.prebuild else {
            return Ok(());
        };
        let merged = self.merged_dir(&r.name);
        if self.inner.volumes.is_mounted(&merged) {
            return Ok(());
        }
        let layers = &self.inner.layers;
        layers.ensure_mounted(key).await?;
        // For the cache's least-recently-used order.
        layers.touch(key);
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
            &[layers.tree(key).to_string_lossy().into_owned()],
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

    /// Unmounts /workspace's overlay (idempotent); the layer `key` goes if
    /// retention dropped it and no other workspace uses it. (A layer stays
    /// mounted while the node holds it: the next workspace of it starts
    /// without a loop mount.)
    pub(super) async fn unmount_prebuild(&self, name: &str, key: Option<&str>) -> Result<()> {
        let merged = self.merged_dir(name);
        crate::volume::unmount_all(
            &self.inner.host.mountinfo(),
            &merged,
            nix::mount::MntFlags::MNT_DETACH,
        )?;
        match std::fs::remove_dir(&merged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AgentError::io("remove /workspace's overlay dir")(e))
            }
            _ => {}
        }
        let Some(key) = key else { return Ok(()) };
        let others = self
            .inner
            .records
            .all()?
            .iter()
            .any(|r| r.name != name && r.prebuild.as_deref() == Some(key));
        if others {
            return Ok(());
        }
        let layers = &self.inner.layers;
        if layers.is_expired(key) {
            layers.remove(key)?;
            tracing::info!(key, "expired prebuild removed with its last workspace");
        }
        Ok(())
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
        // The same build asked again (the link broke while it ran): its
        // outcome, once there is one.
        let known = self.builds().get(&name).cloned();
        if let Some(mut rx) = known {
            let done = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|e| AgentError::InvalidRequest(format!("prebuild {name}: {e}")))?
                .clone();
            return match done {
                Some(Ok(r)) => Ok(r),
                Some(Err((code, message))) => Err(AgentError::init(code, message)),
                None => Err(AgentError::InvalidRequest(format!(
                    "prebuild {name}: no outcome"
                ))),
            };
        }
        // What a crashed build left goes first.
        self.delete(&name, 0).await?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.builds().insert(name.clone(), rx);
        let built = Box::pin(self.build_prebuild(create, &name)).await;
        if let Err(e) = self.delete(&name, 0).await {
            tracing::warn!(workspace = %name, error = %e, "deleting a prebuild's build workspace");
        }
        let kept = match &built {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err((
                Code::parse(e.code()).unwrap_or(Code::PrebuildFailed),
                e.to_string(),
            )),
        };
        let _ = tx.send(Some(kept));
        // Kept a while for a coordinator that asks again.
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            me.builds().remove(&name);
        });
        built
    }

    fn builds(&self) -> std::sync::MutexGuard<'_, HashMap<String, BuildOutcome>> {
        self.inner.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether workspace `name` is a prebuild's build, running.
    pub(super) fn is_building(&self, name: &str) -> bool {
        self.builds()
            .get(name)
            .is_some_and(|rx| rx.borrow().is_none())
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
        let t = Instant::now();
        let layers = &self.inner.layers;
        let reused = layers.exists(&key);
        let mut files = 0;
        if !reused {
            files = self.capture(&r, &key).await?;
            // The new layer counts against the budget; older ones go.
            if layers.bytes(&key) > self.cache_budget()? {
                layers.remove(&key)?;
                return Err(AgentError::init(
                    Code::PrebuildFailed,
                    "the prebuild is larger than the node's cache ([cache] max_bytes)".to_string(),
                ));
            }
            self.enforce_cache(Some(&key)).await?;
        }
        let capture_ms = ms(t);
        let bytes = layers.bytes(&key);
        tracing::info!(key, bytes, files, capture_ms, reused, "prebuild kept");
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

    /// Makes the stopped build workspace's volume layer `key`: its ids made
    /// the image's own (0-based), everything but /workspace removed, its
    /// free blocks given back, unmounted and renamed into the layer store.
    /// Returns its files.
    async fn capture(&self, r: &Record, key: &str) -> Result<u64> {
        let vols = &self.inner.volumes;
        let dir = vols.workspace_dir(r.parts());
        let mp = vols.mountpoint(r.parts());
        let (base, size) = (r.userns.host_base, r.userns.size);
        // A walk of every file: off the async workers (a build of 3 GiB
        // of small files is 400,000 of them).
        let files = tokio::task::spawn_blocking({
            let mp = mp.clone();
            move || only_the_tree(&dir, &mp, base, size)
        })
        .await
        .map_err(|e| AgentError::InvalidRequest(format!("capture: {e}")))??;
        // Blocks freed in the build go back to the node (the image is sparse).
        let _ = tokio::process::Command::new("fstrim")
            .arg(&mp)
            .output()
            .await;
        vols.unmount(r.parts())?;
        self.inner.layers.adopt(&vols.image(r.parts()), key)?;
        Ok(files)
    }

    /// The prebuilds this node holds.
    pub async fn prebuilds(&self) -> Result<pb::PrebuildList> {
        Ok(pb::PrebuildList {
            keys: self.inner.layers.list(),
        })
    }

    /// Drops prebuilds retention expired: removed now, or marked to go
    /// with the last workspace that uses them.
    pub async fn drop_prebuilds(&self, keys: Vec<String>) -> Result<pb::PrebuildList> {
        let layers = &self.inner.layers;
        for key in &keys {
            if !p::is_key(key) {
                return Err(AgentError::InvalidRequest(format!(
                    "{key:?} is not a prebuild key"
                )));
            }
            if !layers.exists(key) {
                continue;
            }
            if self.prebuild_in_use(key)? {
                layers.mark_expired(key)?;
                continue;
            }
            layers.remove(key)?;
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
        let (fetch, checkout, upstream) = p::update_commands(&repo.branch, &repo.commit);
        fn argv(a: &[String]) -> Vec<&str> {
            a.iter().map(String::as_str).collect()
        }
        log.note(&format!("git {}", fetch.join(" ")));
        let ran = self
            .run_init(&r.name, git(&argv(&fetch)), Some(log))
            .await
            .map_err(node_err)?;
        super::repo::check_git(&ran, timeout)?;
        let missing = match repo.commit.as_str() {
            "" => Code::GitCloneFailed,
            _ => Code::GitCommitNotFound,
        };
        for (cmd, must) in [(Some(checkout), true), (upstream, false)] {
            let Some(cmd) = cmd else { continue };
            log.note(&format!("git {}", cmd.join(" ")));
            let ran = self
                .run_init(&r.name, git(&argv(&cmd)), Some(log))
                .await
                .map_err(node_err)?;
            if must && (ran.timed_out || ran.code != 0) {
                return Err((missing, crate::init::git::tail(&ran.output, 5)));
            }
        }
        drop(askpass);
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

    /// Overlays of workspaces no record explains (before the volumes they
    /// sit on go).
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
        Ok(n)
    }
}

/// Makes the build volume mounted at `mp` only its tree `dir` (whose ids
/// become the image's own, 0-based): everything else on it goes. Returns
/// the files left.
fn only_the_tree(dir: &std::path::Path, mp: &std::path::Path, base: u32, size: u32) -> Result<u64> {
    b::shift_ids(dir, base, size).map_err(AgentError::io("shift the prebuild's ids"))?;
    for e in std::fs::read_dir(mp).map_err(AgentError::io("read the build's volume"))? {
        let e = e.map_err(AgentError::io("read the build's volume"))?;
        if e.file_name() == "workspace" || e.file_name() == "lost+found" {
            continue;
        }
        let p = e.path();
        let gone = match e.file_type().map(|t| t.is_dir()) {
            Ok(true) => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        gone.map_err(AgentError::io(format!("remove {}", p.display())))?;
    }
    Ok(nix::sys::statvfs::statvfs(mp).map_or(0, |s| s.files() - s.files_free()))
}
