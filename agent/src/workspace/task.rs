//! A workspace's task: start (with idmapped lower layers), stop, kill.

use super::*;

/// Idmapped mounts of a task's lower layers, removed on drop.
pub(super) struct MappedLowers {
    dir: std::path::PathBuf,
    count: usize,
}

impl MappedLowers {
    /// Mounts `lowers` at `dir/0`, `dir/1`, ... mapped by the user namespace
    /// pinned at `userns`; a leftover of a crashed attempt is replaced.
    pub(super) fn mount(
        dir: &std::path::Path,
        lowers: &[String],
        userns: &std::path::Path,
    ) -> Result<Self> {
        let guard = Self {
            dir: dir.to_path_buf(),
            count: lowers.len(),
        };
        for (i, lower) in lowers.iter().enumerate() {
            let at = guard.path(i);
            let ctx = || format!("idmapped mount of {lower} at {}", at.display());
            crate::idmap::mount::unmount(&at).map_err(AgentError::io(ctx()))?;
            std::fs::create_dir_all(&at).map_err(AgentError::io(ctx()))?;
            crate::idmap::mount::bind(std::path::Path::new(lower), &at, userns)
                .map_err(AgentError::io(ctx()))?;
        }
        Ok(guard)
    }

    fn path(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(i.to_string())
    }

    pub(super) fn paths(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| self.path(i).to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for MappedLowers {
    fn drop(&mut self) {
        for i in 0..self.count {
            if let Err(e) = crate::idmap::mount::unmount(&self.path(i)) {
                tracing::warn!(path = %self.path(i).display(), error = %e, "detaching an idmapped layer");
            }
        }
        // Never a recursive removal: a mount point left by a failed detach
        // would take the image layer under it along.
        for i in 0..self.count {
            let _ = std::fs::remove_dir(self.path(i));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Manager {
    /// Starts a created or stopped workspace (idempotent when running).
    #[tracing::instrument(name = "start", skip_all, fields(
        workspace = req.name.as_str(),
        task_create_ms = tracing::field::Empty,
        task_start_ms = tracing::field::Empty,
    ))]
    pub async fn start(&self, req: pb::StartRequest) -> Result<pb::WorkspaceStatus> {
        let name = req.name.as_str();
        let _guard = self.lock(name).await;
        let mut r = self.record(name)?;
        Self::check_generation(&mut r, req.generation)?;
        if r.phase != Phase::Ready {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: format!("{:?}", r.phase),
                action: "start",
            });
        }
        let t = Instant::now();
        self.start_locked(&mut r, req.secrets.as_ref()).await?;
        tracing::info!(total_ms = ms(t), "workspace started");
        self.post_start(&r);
        self.status_of(&r).await
    }

    /// Starts an existing workspace: repairs what a reboot may have taken
    /// (volume mount, namespace), puts `secrets` in place, then creates and
    /// starts its task. A running workspace's processes keep their
    /// environment: a repeated start only brings its secret files up to
    /// date. Without secrets (`berth-agent ctl start`, an older
    /// coordinator) the workspace's are left as they are.
    pub(super) async fn start_locked(
        &self,
        r: &mut Record,
        secrets: Option<&pb::SecretSet>,
    ) -> Result<()> {
        let name = r.name.clone();
        if let Some(p) = self.inner.ctd.get_task(&name).await? {
            if p.status == TaskStatus::Running as i32 {
                if let Some(set) = secrets {
                    self.put_secrets(r, set, crate::secrets::Write::Files)?;
                }
                return Ok(());
            }
            self.inner.ctd.delete_task(&name).await?;
        }
        if let Some(set) = secrets {
            self.put_secrets(r, set, crate::secrets::Write::All)?;
        }
        self.inner.volumes.ensure_mounted(r.parts()).await?;
        if !self.inner.net.exists(r.parts()) {
            self.inner.net.create(r.parts(), r.ip, r.userns).await?;
        }
        self.mount_prebuild(r).await?;
        let mounts = self.inner.ctd.mounts(&Self::snapshot_key(&name)).await?;
        let mounts = self.rootfs(r, mounts)?;
        self.start_task(r, mounts).await?;
        self.inner.records.put(r)
    }

    /// Creates and starts the task of a workspace whose parts all exist.
    /// Writes the workspace's /etc/hosts unless it has one: localhost and
    /// its own name, so a tool asking for its host's name (git for an
    /// identity, a JVM, sudo) has an answer without DNS, which a workspace
    /// may not have. The workspace's root may change it.
    fn write_hosts(&self, r: &Record) -> Result<()> {
        let path = self.inner.volumes.hosts(r.parts());
        if path.exists() {
            return Ok(());
        }
        let name = Self::hostname(r);
        let text = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{name}\n",
            r.ip
        );
        std::fs::write(&path, text).map_err(AgentError::io("write /etc/hosts"))?;
        let root = r.userns.host_base;
        std::os::unix::fs::chown(&path, Some(root), Some(root))
            .map_err(AgentError::io("chown /etc/hosts"))
    }

    pub(super) async fn start_task(&self, r: &mut Record, rootfs: Vec<Mount>) -> Result<u32> {
        let t = Instant::now();
        let log = self.inner.volumes.log(r.parts());
        self.write_hosts(r)?;
        // The container binds its secrets' directory: a reboot emptied the tmpfs.
        self.inner
            .secrets
            .ensure(&r.name, host_ids(r.userns, r.uid, r.gid)?)?;
        // The shim mounts the rootfs while the task is created; the overlay
        // keeps its own references to the idmapped lowers, which are
        // detached again right after (`lowers` drops).
        let (rootfs, lowers) = self.mapped_lowers(r, rootfs)?;
        failpoint::hit("create:after_idmap");
        let created = self
            .inner
            .ctd
            .create_task(&r.name, rootfs, &log.to_string_lossy())
            .await;
        drop(lowers);
        created?;
        let task_create_ms = ms(t);
        let t = Instant::now();
        let pid = self.inner.ctd.start(&r.name, "").await?;
        failpoint::hit(failpoint::START_BEFORE_QUOTA);
        self.apply_cpu_quota(r)?;
        r.started_at_ms = now_ms();
        r.last_exit = None;
        step("task_create_ms", task_create_ms);
        step("task_start_ms", ms(t));
        tracing::debug!(pid, "task started");
        Ok(pid)
    }

    /// The rootfs mounts with every lower layer replaced by an idmapped
    /// mount of it in the workspace's id range (under the agent's
    /// `idmapped/<name>/`), and the guard that removes those mounts.
    fn mapped_lowers(&self, r: &Record, rootfs: Vec<Mount>) -> Result<(Vec<Mount>, MappedLowers)> {
        self.mapped_lowers_at(&r.name, r, rootfs)
    }

    /// `mapped_lowers` under `idmapped/<dir>/` (a build step's task).
    pub(super) fn mapped_lowers_at(
        &self,
        dir: &str,
        r: &Record,
        rootfs: Vec<Mount>,
    ) -> Result<(Vec<Mount>, MappedLowers)> {
        let lowers = rootfs::lowers(&rootfs);
        let dir = self.inner.cfg.file.state_dir.join(IDMAPPED_DIR).join(dir);
        let guard = MappedLowers::mount(&dir, &lowers, &self.inner.net.userns_path(r.parts()))?;
        Ok((rootfs::with_lowers(rootfs, &guard.paths()), guard))
    }

    /// Sets a running workspace's own CPU quota where its init started with
    /// the floor (`spec::START_CPU_FLOOR_MILLIS`).
    pub(crate) fn apply_cpu_quota(&self, r: &Record) -> Result<()> {
        if r.cpu_millis >= spec::START_CPU_FLOOR_MILLIS {
            return Ok(());
        }
        let quota = spec::cpu_quota_us(r.cpu_millis);
        self.inner
            .cgroups
            .set_cpu_quota(&self.cgroups_path(&r.name), quota, spec::CPU_PERIOD_US)
            .map_err(AgentError::io("apply the CPU quota"))
    }

    /// Makes a running workspace's container again from its record (a new
    /// image, user or environment), keeping its volume and namespace: the
    /// old root filesystem's changes go with the old image.
    pub(super) async fn recreate(&self, r: &mut Record) -> Result<()> {
        let name = r.name.clone();
        self.kill_task(&name).await?;
        self.inner.ctd.delete_container(&name).await?;
        self.inner
            .ctd
            .remove_snapshot(&Self::snapshot_key(&name))
            .await?;
        let root = host_ids(r.userns, 0, 0)?;
        self.inner.volumes.reset_rootfs(r.parts(), root)?;
        let mounts = self.make_container(r).await?;
        let mounts = self.rootfs(r, mounts)?;
        self.start_task(r, mounts).await?;
        self.inner.records.put_unsynced(r)
    }

    /// Whether `name`'s task runs.
    pub(super) async fn task_running(&self, name: &str) -> Result<bool> {
        Ok(self
            .inner
            .ctd
            .get_task(name)
            .await?
            .is_some_and(|p| p.status == TaskStatus::Running as i32))
    }

    /// Puts a workspace's secrets on the node for its user.
    pub(super) fn put_secrets(
        &self,
        r: &Record,
        set: &pb::SecretSet,
        what: crate::secrets::Write,
    ) -> Result<()> {
        let owner = host_ids(r.userns, r.uid, r.gid)?;
        self.inner.secrets.write(&r.name, set, owner, what)
    }

    /// A rotation: the secret files of a running workspace now (its
    /// environment changes at its next start).
    #[tracing::instrument(name = "secrets", skip_all, fields(workspace = req.name.as_str()))]
    pub async fn set_secrets(&self, req: pb::SecretsRequest) -> Result<pb::WorkspaceStatus> {
        let _guard = self.lock(&req.name).await;
        let r = self.record(&req.name)?;
        // A stopped workspace gets its secrets with its next start.
        if let (true, Some(set)) = (self.task_running(&r.name).await?, &req.secrets) {
            self.put_secrets(&r, set, crate::secrets::Write::Files)?;
        }
        self.status_of(&r).await
    }

    /// Stops a workspace: SIGTERM, then SIGKILL after the grace period.
    #[tracing::instrument(name = "stop", skip_all, fields(workspace = name))]
    pub async fn stop(
        &self,
        name: &str,
        grace_seconds: u32,
        generation: u64,
    ) -> Result<pb::WorkspaceStatus> {
        let _guard = self.lock(name).await;
        let mut r = self.record(name)?;
        Self::check_generation(&mut r, generation)?;
        let grace = match grace_seconds {
            0 => self.inner.cfg.file.workspace.stop_grace_seconds,
            g => g,
        };
        if let Some(code) = self
            .stop_task(name, Duration::from_secs(grace.into()))
            .await?
        {
            r.last_exit = Some(code);
        }
        // The next start brings them again.
        self.inner.secrets.wipe(name);
        self.inner.records.put(&r)?;
        self.status_of(&r).await
    }

    /// Ends the init process gracefully and deletes the task; returns its exit code.
    pub(super) async fn stop_task(&self, name: &str, grace: Duration) -> Result<Option<i32>> {
        let ctd = &self.inner.ctd;
        let Some(p) = ctd.get_task(name).await? else {
            return Ok(None);
        };
        if p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32 {
            ctd.kill(name, "", libc::SIGTERM as u32, false).await?;
            failpoint::hit("stop:after_signal");
            if tokio::time::timeout(grace, ctd.wait(name, ""))
                .await
                .is_err()
            {
                tracing::info!(workspace = %name, "grace period over, sending SIGKILL");
                return self.kill_task(name).await;
            }
        } else if p.status == TaskStatus::Created as i32 {
            return self.kill_task(name).await;
        }
        Ok(ctd.delete_task(name).await?.map(|c| c as i32))
    }

    /// SIGKILLs every process of the workspace and deletes its task.
    pub(super) async fn kill_task(&self, name: &str) -> Result<Option<i32>> {
        let ctd = &self.inner.ctd;
        if ctd.get_task(name).await?.is_none() {
            return Ok(None);
        }
        ctd.kill(name, "", libc::SIGKILL as u32, true).await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), ctd.wait(name, "")).await;
        Ok(ctd.delete_task(name).await?.map(|c| c as i32))
    }
}
