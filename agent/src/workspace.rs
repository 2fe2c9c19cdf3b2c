//! The workspace manager: create, start, stop, delete, status and exec on top
//! of containerd, volumes and the network. Every operation holds the
//! workspace's lock; every create either completes or is rolled back.

mod exec;
mod rootfs;

use crate::cgroup::CgroupReader;
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::failpoint;
use crate::idmap::IdMap;
use crate::image::{self, Credentials, ImageStore};
use crate::net::Network;
use crate::prepared::{Prepared, Slot, SlotKey, Work, SLOT_PREFIX};
use crate::record::{Phase, Record, Records};
use crate::runtime::Containerd;
use crate::spec::{self, SpecInput};
use crate::validate;
use crate::volume::Volumes;
use berth_proto::agent as pb;
use containerd_client::types::v1::Status as TaskStatus;
use containerd_client::types::Mount;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Label on every container and snapshot that belongs to a workspace.
pub const WORKSPACE_LABEL: &str = "berth.workspace";
/// Label carrying the generation the container was created at.
pub const GENERATION_LABEL: &str = "berth.generation";

/// Runs the workspaces of one node.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

struct Inner {
    cfg: Config,
    ctd: Containerd,
    images: ImageStore,
    net: Network,
    volumes: Volumes,
    records: Records,
    cgroups: CgroupReader,
    /// The seccomp filter of workspaces without nested user namespaces.
    seccomp: serde_json::Value,
    /// The filter of those allowed them.
    seccomp_nested: serde_json::Value,
    swap_accounting: bool,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    ipam: tokio::sync::Mutex<()>,
    prepared: Prepared,
    refill: tokio::sync::Notify,
    /// Names of workspaces that changed on their own (exit, OOM).
    changes: tokio::sync::broadcast::Sender<String>,
    /// The SSH server's settings, with the node's host key.
    ssh: Arc<russh::server::Config>,
    /// Tunnel sessions and bytes per workspace.
    activity: crate::activity::Activity,
    /// The last sync of the per-workspace allow set failed.
    allow_dirty: std::sync::atomic::AtomicBool,
}

/// The pieces a manager is made of; built by `crate::run` or a test.
#[derive(Debug)]
pub struct Parts {
    pub cfg: Config,
    pub ctd: Containerd,
    pub net: Network,
    /// OCI seccomp object given to every workspace.
    pub seccomp: serde_json::Value,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// The directory (under the state dir) of the idmapped views of layers.
pub const IDMAPPED_DIR: &str = "idmapped";

/// The node ids of container ids uid:gid in `map`.
fn host_ids(map: IdMap, uid: u32, gid: u32) -> Result<(u32, u32)> {
    match (map.to_host(uid), map.to_host(gid)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(AgentError::InvalidRequest(format!(
            "user {uid}:{gid} is outside the workspace's {} mapped ids",
            map.size
        ))),
    }
}

/// Idmapped mounts of a task's lower layers, removed on drop.
struct MappedLowers {
    dir: std::path::PathBuf,
    count: usize,
}

impl MappedLowers {
    /// Mounts `lowers` at `dir/0`, `dir/1`, ... mapped by the user namespace
    /// pinned at `userns`; a leftover of a crashed attempt is replaced.
    fn mount(dir: &std::path::Path, lowers: &[String], userns: &std::path::Path) -> Result<Self> {
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

    fn paths(&self) -> Vec<String> {
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

/// Resolves an image's `User` to a non-root uid:gid (numeric only; anything
/// else, root included, falls back to the node default).
pub fn resolve_user(user: &str, default: (u32, u32)) -> (u32, u32) {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    match u.parse::<u32>() {
        Ok(uid) if uid != 0 => (uid, g.parse().unwrap_or(uid)),
        _ => default,
    }
}

/// The init command of a workspace: the image's entrypoint + cmd.
pub fn init_args(entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".into(),
        ]
    } else {
        args
    }
}

impl Manager {
    /// Builds a manager; `reconcile` should run before serving requests.
    pub fn new(p: Parts) -> Result<Self> {
        let state = p.cfg.file.state_dir.clone();
        for d in ["volumes", "exec", IDMAPPED_DIR] {
            let dir = state.join(d);
            std::fs::create_dir_all(&dir).map_err(AgentError::io(format!("mkdir {d}")))?;
            // Only root may walk from one workspace's files to another's.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(AgentError::io(format!("chmod {d}")))?;
        }
        let cgroups = CgroupReader::new(&p.cfg.file.cgroup.root);
        let swap_accounting = cgroups.swap_accounting(&p.cfg.file.cgroup.parent);
        let images = ImageStore::new(p.ctd.clone(), p.cfg.file.registries.clone());
        let prepared = Prepared::new(p.cfg.file.workspace.prepared);
        let ssh = Arc::new(crate::ssh::config(crate::ssh::host_key(&state)?));
        Ok(Self {
            inner: Arc::new(Inner {
                volumes: Volumes::new(state.join("volumes"), "/proc/self/mountinfo".into()),
                records: Records::open(state.join("workspaces"))?,
                cfg: p.cfg,
                ctd: p.ctd,
                images,
                net: p.net,
                cgroups,
                seccomp: crate::seccomp::refuse_nested_userns(&crate::seccomp::refuse_keyrings(
                    &p.seccomp,
                )),
                seccomp_nested: crate::seccomp::refuse_keyrings(&p.seccomp),
                swap_accounting,
                locks: Mutex::default(),
                ipam: tokio::sync::Mutex::default(),
                prepared,
                refill: tokio::sync::Notify::new(),
                changes: tokio::sync::broadcast::channel(1024).0,
                ssh,
                activity: crate::activity::Activity::default(),
                allow_dirty: Default::default(),
            }),
        })
    }

    /// Names of workspaces that change on their own (their process exited,
    /// an OOM kill): the coordinator link reports them.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// The agent's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The SSH server's settings (host key included).
    pub fn ssh_config(&self) -> Arc<russh::server::Config> {
        self.inner.ssh.clone()
    }

    /// The node's SSH host key, OpenSSH public key format.
    pub fn ssh_host_key(&self) -> String {
        self.inner
            .ssh
            .keys
            .first()
            .and_then(|k| k.public_key().to_openssh().ok())
            .unwrap_or_default()
    }

    /// Tunnel activity per workspace.
    pub fn activity(&self) -> &crate::activity::Activity {
        &self.inner.activity
    }

    /// The init process and user of a running workspace (what SFTP enters).
    pub async fn workspace_process(&self, name: &str) -> Result<crate::ssh::sftp::Target> {
        let r = self.record(name)?;
        let st = self.status_of(&r).await?;
        if st.state != pb::State::Running as i32 || st.pid == 0 {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: "not running".into(),
                action: "sftp",
            });
        }
        let (uid, gid) = host_ids(r.userns, r.uid, r.gid)?;
        Ok(crate::ssh::sftp::Target {
            pid: st.pid,
            uid,
            gid,
            idmap: r.userns,
        })
    }

    /// The containerd client in use.
    pub fn containerd(&self) -> &Containerd {
        &self.inner.ctd
    }

    /// The image store in use.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    pub(crate) fn records(&self) -> &Records {
        &self.inner.records
    }

    pub(crate) fn network(&self) -> &Network {
        &self.inner.net
    }

    pub(crate) fn volumes(&self) -> &Volumes {
        &self.inner.volumes
    }

    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(name.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn snapshot_key(name: &str) -> String {
        format!("berth/{name}")
    }

    fn cgroups_path(&self, name: &str) -> String {
        format!("/{}/{name}", self.inner.cfg.file.cgroup.parent)
    }

    /// The user-namespace id range of the workspace at address `ip`: its
    /// index in the subnet picks it, so the address allocator hands out
    /// ranges too and no two workspaces (or prepared slots) share one.
    fn userns_of(&self, ip: Ipv4Addr) -> Result<IdMap> {
        self.inner
            .net
            .subnet()
            .index(ip)
            .and_then(|n| self.inner.cfg.userns.nth(n))
            .ok_or(AgentError::AddressesExhausted)
    }

    /// Makes the volume of `name` for a workspace user uid:gid in `map`.
    async fn make_volume(
        &self,
        name: &str,
        disk_bytes: u64,
        (uid, gid): (u32, u32),
        map: IdMap,
    ) -> Result<()> {
        let user = host_ids(map, uid, gid)?;
        let root = host_ids(map, 0, 0)?;
        self.inner
            .volumes
            .create(name, disk_bytes, user, root)
            .await
    }

    /// The snapshot's mounts with the writable layer on the workspace's volume.
    fn rootfs(&self, r: &Record, mounts: Vec<Mount>) -> Result<Vec<Mount>> {
        let (upper, work) = self.inner.volumes.rootfs_dirs(r.parts());
        rootfs::on_volume(mounts, &upper, &work)
    }

    fn spec_input(&self, r: &Record) -> SpecInput {
        let f = &self.inner.cfg.file;
        SpecInput {
            hostname: match r.hostname.is_empty() {
                true => r.name.clone(),
                false => r.hostname.clone(),
            },
            args: r.args.clone(),
            env: r.process_env.clone(),
            uid: r.uid,
            gid: r.gid,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
            swap_accounting: self.inner.swap_accounting,
            idmap: r.userns,
            volume: self.inner.volumes.workspace_dir(r.parts()),
            netns: self.inner.net.netns_path(r.parts()),
            userns: self.inner.net.userns_path(r.parts()),
            cgroups_path: self.cgroups_path(&r.name),
            resolv_conf: f
                .network
                .resolv_conf
                .exists()
                .then(|| f.network.resolv_conf.clone()),
            seccomp: match r.nested_userns || f.security.nested_userns {
                true => self.inner.seccomp_nested.clone(),
                false => self.inner.seccomp.clone(),
            },
        }
    }

    fn check_generation(r: &mut Record, got: u64) -> Result<()> {
        if got != 0 && got < r.generation {
            return Err(AgentError::StaleGeneration {
                name: r.name.clone(),
                got,
                current: r.generation,
            });
        }
        r.generation = r.generation.max(got);
        Ok(())
    }

    fn record(&self, name: &str) -> Result<Record> {
        validate::name(name)?;
        self.inner
            .records
            .get(name)?
            .ok_or_else(|| AgentError::NotFound(name.into()))
    }

    /// Pulls an image (always asking the registry).
    pub async fn pull(&self, image: &str, creds: Option<Credentials>) -> Result<pb::PullResult> {
        let (img, stats) = self.inner.images.pull(image, creds).await?;
        Ok(pb::PullResult {
            image: img.name,
            digest: img.digest,
            layers_fetched: stats.layers_fetched,
            layers_present: stats.layers_present,
            bytes_fetched: stats.bytes_fetched,
        })
    }

    /// Creates a workspace (and starts it if asked). Idempotent for a repeated
    /// request with the same non-zero generation.
    pub async fn create(&self, req: pb::CreateRequest) -> Result<pb::WorkspaceStatus> {
        let spec = req
            .spec
            .ok_or_else(|| AgentError::InvalidRequest("spec missing".into()))?;
        validate::spec(&spec)?;
        let _guard = self.lock(&spec.name).await;
        if let Some(r) = self.inner.records.get(&spec.name)? {
            if spec.generation != 0 && r.generation == spec.generation && r.phase == Phase::Ready {
                return self.status_of(&r).await;
            }
            return Err(AgentError::AlreadyExists(spec.name));
        }
        // Cheap checks before the pull: a refused request costs nothing.
        self.inner.volumes.check_fits(spec.disk_bytes)?;
        image::Reference::parse(&spec.image)?;
        let t0 = Instant::now();
        let creds = req.auth.map(|a| Credentials {
            username: a.username,
            password: a.password,
        });
        let image = self.inner.images.ensure(&spec.image, creds).await?;
        let image_ms = ms(t0);
        let defaults = (
            self.inner.cfg.file.workspace.uid,
            self.inner.cfg.file.workspace.gid,
        );
        let (uid, gid) = resolve_user(&image.config.user, defaults);
        let mut process_env = image.config.env.clone();
        process_env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let key = SlotKey {
            disk_bytes: spec.disk_bytes,
            uid,
            gid,
        };
        let slot = self.inner.prepared.take(key);
        self.inner.refill.notify_one();
        let mut record = {
            let _ipam = self.inner.ipam.lock().await;
            let ip = match &slot {
                Some(s) => s.ip,
                None => self.allocate_ip()?,
            };
            let userns = self.userns_of(ip)?;
            let record = Record {
                name: spec.name.clone(),
                image: image.name.clone(),
                chain_id: image.chain_id.clone(),
                cpu_millis: spec.cpu_millis,
                memory_bytes: spec.memory_bytes,
                pids: spec.pids,
                disk_bytes: spec.disk_bytes,
                env: spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
                generation: spec.generation,
                phase: Phase::Creating,
                ip,
                userns,
                uid,
                gid,
                process_env,
                args: init_args(&image.config.entrypoint, &image.config.cmd),
                started_at_ms: 0,
                last_exit: None,
                oom_kills: 0,
                slot: slot.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                nested_userns: spec.nested_userns,
                egress_allow: spec.egress_allow.clone(),
                hostname: spec.hostname.clone(),
            };
            let put = self.inner.records.put_unsynced(&record);
            if let Some(s) = &slot {
                if put.is_err() {
                    self.drop_slot(s).await;
                }
                // From here on the record (or nobody) holds the address.
                self.inner.prepared.release(s.ip);
            }
            put?;
            record
        };
        failpoint::hit("create:after_record");
        // Create and start are one step for the caller: either the workspace
        // is there (and running, if asked) or nothing is left.
        let made = async {
            let mounts = self.build(&record).await?;
            let pid = match req.start {
                true => Some(self.start_task(&mut record, mounts).await?),
                false => None,
            };
            if !record.egress_allow.is_empty() || self.allow_dirty() {
                self.sync_workspace_allow("").await?;
            }
            // Until this write the record says `creating`: a crash before it
            // rolls back a create nobody was told about.
            record.phase = Phase::Ready;
            self.inner.records.put(&record)?;
            Ok::<_, AgentError>(pid)
        };
        let pid = match made.await {
            Ok(pid) => pid,
            Err(e) => {
                tracing::warn!(workspace = %record.name, error = %e, "create failed, rolling back");
                self.teardown(&record).await;
                if !record.egress_allow.is_empty() {
                    let _ = self.sync_workspace_allow(&record.name).await;
                }
                self.inner.records.remove(&record.name)?;
                return Err(e);
            }
        };
        tracing::info!(workspace = %record.name, image_ms, total_ms = ms(t0), "workspace created");
        failpoint::hit("create:before_reply");
        // What was just done is the status: no need to ask containerd again.
        Ok(match pid {
            Some(pid) => self.status_with(&record, pb::State::Running, pid, None),
            None => self.status_with(&record, pb::State::Created, 0, None),
        })
    }

    /// The lowest address no record and no prepared slot holds; call with
    /// the IPAM lock held.
    fn allocate_ip(&self) -> Result<Ipv4Addr> {
        let mut used: HashSet<Ipv4Addr> = self.inner.records.all()?.iter().map(|r| r.ip).collect();
        used.extend(self.inner.prepared.reserved());
        let subnet = self.inner.net.subnet();
        let ranges = self.inner.cfg.userns;
        (0..)
            .map_while(|n| subnet.host(n).filter(|_| ranges.nth(n).is_some()))
            .find(|ip| !used.contains(ip))
            .ok_or(AgentError::AddressesExhausted)
    }

    /// Makes the container, snapshot, volume and namespace of a new record,
    /// the three independent parts at once; returns the rootfs mounts.
    async fn build(&self, r: &Record) -> Result<Vec<Mount>> {
        let name = &r.name;
        let timed = |t: Instant| move |v| (v, ms(t));
        let rootfs = async {
            let t = Instant::now();
            // The container first: as a GC root it holds the snapshot from
            // the moment the snapshot exists, so no lease is needed.
            let spec = spec::build(&self.spec_input(r));
            let labels = HashMap::from([
                (WORKSPACE_LABEL.to_string(), name.clone()),
                (GENERATION_LABEL.to_string(), r.generation.to_string()),
            ]);
            self.inner
                .ctd
                .create_container(name, &r.image, &Self::snapshot_key(name), &spec, labels)
                .await?;
            failpoint::hit("create:after_container");
            let labels = HashMap::from([(WORKSPACE_LABEL.to_string(), name.clone())]);
            let mounts = self
                .inner
                .ctd
                .prepare(None, &Self::snapshot_key(name), &r.chain_id, labels)
                .await?;
            failpoint::hit("create:after_snapshot");
            Ok::<_, AgentError>(timed(t)(mounts))
        };
        // A prepared slot already holds the volume and the namespace.
        let own_parts = r.slot.is_empty();
        let volume = async {
            let t = Instant::now();
            if own_parts {
                self.make_volume(name, r.disk_bytes, (r.uid, r.gid), r.userns)
                    .await?;
            }
            failpoint::hit("create:after_volume");
            Ok::<_, AgentError>(ms(t))
        };
        let netns = async {
            let t = Instant::now();
            if own_parts {
                self.inner.net.create(name, r.ip, r.userns).await?;
            }
            failpoint::hit("create:after_netns");
            Ok::<_, AgentError>(ms(t))
        };
        let ((mounts, rootfs_ms), volume_ms, netns_ms) = tokio::try_join!(rootfs, volume, netns)?;
        tracing::info!(workspace = %name, slot = %r.slot, rootfs_ms, volume_ms, netns_ms, "workspace built");
        self.rootfs(r, mounts)
    }

    /// Keeps prepared slots ready for the most recently requested kind of
    /// workspace. Runs until dropped.
    pub async fn refill_prepared(&self) {
        loop {
            match self.inner.prepared.next_work() {
                Work::Idle => self.inner.refill.notified().await,
                Work::Drop(slot) => self.drop_slot(&slot).await,
                Work::Make(key) => {
                    let made = self.make_slot(key).await;
                    let ok = made.is_some();
                    self.inner.prepared.made(key, made);
                    if !ok {
                        // Back off rather than spin on a broken node.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    async fn make_slot(&self, key: SlotKey) -> Option<Slot> {
        let ip = {
            let _ipam = self.inner.ipam.lock().await;
            let ip = self.allocate_ip().ok()?;
            self.inner.prepared.reserve(ip);
            ip
        };
        let slot = Slot {
            id: format!("{SLOT_PREFIX}{:012x}", rand::random::<u64>() >> 16),
            ip,
            key,
        };
        let map = match self.userns_of(ip) {
            Ok(map) => map,
            Err(_) => {
                self.inner.prepared.release(ip);
                return None;
            }
        };
        let t = Instant::now();
        let made = tokio::try_join!(
            self.make_volume(&slot.id, key.disk_bytes, (key.uid, key.gid), map),
            self.inner.net.create(&slot.id, ip, map),
        );
        match made {
            Ok(_) => {
                tracing::debug!(slot = %slot.id, ms = ms(t), "prepared slot ready");
                Some(slot)
            }
            Err(e) => {
                tracing::warn!(slot = %slot.id, error = %e, "preparing a slot failed");
                self.drop_slot(&slot).await;
                None
            }
        }
    }

    async fn drop_slot(&self, slot: &Slot) {
        if let Err(e) = self.inner.net.remove(&slot.id).await {
            tracing::warn!(slot = %slot.id, error = %e, "removing a slot's namespace");
        }
        if let Err(e) = self.inner.volumes.remove(&slot.id).await {
            tracing::warn!(slot = %slot.id, error = %e, "removing a slot's volume");
        }
        self.inner.prepared.release(slot.ip);
    }

    /// Ids of the prepared slots ready now (their parts are not strays).
    pub(crate) fn prepared_ids(&self) -> Vec<String> {
        self.inner.prepared.ready_ids()
    }

    /// Removes everything a record may have made, logging what fails.
    pub(crate) async fn teardown(&self, r: &Record) {
        let name = &r.name;
        let steps: [(&str, Result<()>); 5] = [
            ("task", self.kill_task(name).await.map(|_| ())),
            ("container", self.inner.ctd.delete_container(name).await),
            (
                "snapshot",
                self.inner
                    .ctd
                    .remove_snapshot(&Self::snapshot_key(name))
                    .await,
            ),
            ("netns", self.inner.net.remove(r.parts()).await),
            ("volume", self.inner.volumes.remove(r.parts()).await),
        ];
        for (what, res) in steps {
            if let Err(e) = res {
                tracing::warn!(workspace = %name, step = what, error = %e, "teardown step failed");
            }
        }
    }

    /// Starts a created or stopped workspace (idempotent when running).
    pub async fn start(&self, name: &str, generation: u64) -> Result<pb::WorkspaceStatus> {
        let _guard = self.lock(name).await;
        let mut r = self.record(name)?;
        Self::check_generation(&mut r, generation)?;
        if r.phase != Phase::Ready {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: format!("{:?}", r.phase),
                action: "start",
            });
        }
        self.start_locked(&mut r).await?;
        self.status_of(&r).await
    }

    /// Starts an existing workspace: repairs what a reboot may have taken
    /// (volume mount, namespace), then creates and starts its task.
    async fn start_locked(&self, r: &mut Record) -> Result<()> {
        let name = r.name.clone();
        if let Some(p) = self.inner.ctd.get_task(&name).await? {
            if p.status == TaskStatus::Running as i32 {
                return Ok(());
            }
            self.inner.ctd.delete_task(&name).await?;
        }
        self.inner.volumes.ensure_mounted(r.parts()).await?;
        if !self.inner.net.exists(r.parts()) {
            self.inner.net.create(r.parts(), r.ip, r.userns).await?;
        }
        let mounts = self.inner.ctd.mounts(&Self::snapshot_key(&name)).await?;
        let mounts = self.rootfs(r, mounts)?;
        self.start_task(r, mounts).await?;
        self.inner.records.put(r)
    }

    /// Creates and starts the task of a workspace whose parts all exist.
    async fn start_task(&self, r: &mut Record, rootfs: Vec<Mount>) -> Result<u32> {
        let t = Instant::now();
        let log = self.inner.volumes.log(r.parts());
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
        tracing::info!(workspace = %r.name, pid, task_create_ms, task_start_ms = ms(t), "workspace started");
        Ok(pid)
    }

    /// The rootfs mounts with every lower layer replaced by an idmapped
    /// mount of it in the workspace's id range (under the agent's
    /// `idmapped/<name>/`), and the guard that removes those mounts.
    fn mapped_lowers(&self, r: &Record, rootfs: Vec<Mount>) -> Result<(Vec<Mount>, MappedLowers)> {
        let lowers = rootfs::lowers(&rootfs);
        let dir = self
            .inner
            .cfg
            .file
            .state_dir
            .join(IDMAPPED_DIR)
            .join(&r.name);
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

    /// Stops a workspace: SIGTERM, then SIGKILL after the grace period.
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
        self.inner.records.put(&r)?;
        self.status_of(&r).await
    }

    /// Ends the init process gracefully and deletes the task; returns its exit code.
    async fn stop_task(&self, name: &str, grace: Duration) -> Result<Option<i32>> {
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
    async fn kill_task(&self, name: &str) -> Result<Option<i32>> {
        let ctd = &self.inner.ctd;
        if ctd.get_task(name).await?.is_none() {
            return Ok(None);
        }
        ctd.kill(name, "", libc::SIGKILL as u32, true).await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), ctd.wait(name, "")).await;
        Ok(ctd.delete_task(name).await?.map(|c| c as i32))
    }

    /// Deletes a workspace and its volume. Deleting what is not there succeeds.
    pub async fn delete(&self, name: &str, generation: u64) -> Result<pb::WorkspaceStatus> {
        validate::name(name)?;
        let _guard = self.lock(name).await;
        let deleted = pb::WorkspaceStatus {
            name: name.into(),
            state: pb::State::Deleted as i32,
            ..Default::default()
        };
        let Some(mut r) = self.inner.records.get(name)? else {
            return Ok(deleted);
        };
        Self::check_generation(&mut r, generation)?;
        r.phase = Phase::Deleting;
        self.inner.records.put(&r)?;
        failpoint::hit("delete:after_mark");
        self.finish_delete(&r).await?;
        Ok(deleted)
    }

    pub(crate) async fn finish_delete(&self, r: &Record) -> Result<()> {
        self.teardown(r).await;
        // Only forget the record once nothing is left, so a retry can finish the job.
        if self.inner.ctd.get_task(&r.name).await?.is_some() || self.inner.net.exists(r.parts()) {
            return Err(AgentError::Conflict {
                name: r.name.clone(),
                state: "deleting".into(),
                action: "delete (retry)",
            });
        }
        failpoint::hit("delete:before_forget");
        if !r.egress_allow.is_empty() {
            // Before the record goes, so a failure is retried with the delete.
            self.sync_workspace_allow(&r.name).await?;
        }
        self.inner.activity.forget(&r.name);
        self.inner.records.remove(&r.name)
    }

    /// Makes the node's per-workspace allow set what the records say,
    /// leaving out `without` (a workspace being removed) and deleting ones:
    /// at start, and with a create or delete of a workspace that has an
    /// allow-list. After a failed sync the next create syncs too, so an
    /// address never keeps an allowance of the workspace that had it before.
    pub(crate) async fn sync_workspace_allow(&self, without: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        self.inner.allow_dirty.store(true, Ordering::SeqCst);
        let entries: Vec<(Ipv4Addr, Vec<String>)> = self
            .inner
            .records
            .all()?
            .into_iter()
            .filter(|r| r.name != without && r.phase != Phase::Deleting)
            .filter(|r| !r.egress_allow.is_empty())
            .map(|r| (r.ip, r.egress_allow))
            .collect();
        self.inner.net.set_workspace_allow(&entries).await?;
        self.inner.allow_dirty.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn allow_dirty(&self) -> bool {
        self.inner
            .allow_dirty
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A TCP connection to `port` of a running workspace, dialled from
    /// inside its network namespace (so a server bound to 127.0.0.1 there is
    /// reachable). The dial happens on a thread of its own that enters the
    /// namespace and then ends: a pooled thread must never change namespace.
    pub async fn connect(&self, name: &str, port: u32) -> Result<tokio::net::TcpStream> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AgentError::InvalidRequest(format!("port {port} is not 1 to 65535")))?;
        let r = self.record(name)?;
        let st = self.status_of(&r).await?;
        if st.state != pb::State::Running as i32 {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: pb::State::try_from(st.state)
                    .map_or("unknown", |s| s.as_str_name())
                    .trim_start_matches("STATE_")
                    .to_ascii_lowercase(),
                action: "connect",
            });
        }
        let netns = self.inner.net.netns_path(r.parts());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("berth-dial".into())
            .spawn(move || {
                let dial = || -> std::io::Result<std::net::TcpStream> {
                    let ns = std::fs::File::open(&netns)?;
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let s = std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_secs(5),
                    )?;
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    Ok(s)
                };
                let _ = tx.send(dial());
            })
            .map_err(AgentError::io("spawn the dial thread"))?;
        let std_stream = rx
            .await
            .map_err(|_| AgentError::InvalidRequest("the dial thread died".into()))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => {
                    AgentError::PortClosed {
                        name: name.into(),
                        port,
                        reason: e.to_string(),
                    }
                }
                _ => AgentError::Io {
                    context: "connect in the workspace".into(),
                    source: e,
                },
            })?;
        tokio::net::TcpStream::from_std(std_stream).map_err(AgentError::io("adopt the connection"))
    }

    /// The status of one workspace.
    pub async fn status(&self, name: &str) -> Result<pb::WorkspaceStatus> {
        let r = self.record(name)?;
        self.status_of(&r).await
    }

    /// The status of every workspace on the node.
    pub async fn list(&self) -> Result<pb::WorkspaceList> {
        let mut workspaces = Vec::new();
        for r in self.inner.records.all()? {
            workspaces.push(self.status_of(&r).await?);
        }
        Ok(pb::WorkspaceList { workspaces })
    }

    async fn status_of(&self, r: &Record) -> Result<pb::WorkspaceStatus> {
        let task = self.inner.ctd.get_task(&r.name).await?;
        let (state, pid, exit) = match &task {
            Some(p)
                if p.status == TaskStatus::Running as i32
                    || p.status == TaskStatus::Paused as i32 =>
            {
                (pb::State::Running, p.pid, None)
            }
            Some(p) if p.status == TaskStatus::Stopped as i32 => {
                (pb::State::Stopped, 0, Some(p.exit_status as i32))
            }
            _ if r.started_at_ms == 0 => (pb::State::Created, 0, None),
            _ => (pb::State::Stopped, 0, r.last_exit),
        };
        Ok(self.status_with(r, state, pid, exit))
    }

    /// A workspace's status given its task's state; usage from its cgroup.
    fn status_with(
        &self,
        r: &Record,
        state: pb::State,
        pid: u32,
        exit: Option<i32>,
    ) -> pb::WorkspaceStatus {
        let cg = self.cgroups_path(&r.name);
        let usage = (state == pb::State::Running).then(|| self.inner.cgroups.usage(&cg));
        let oom_kills = r.oom_kills.max(self.inner.cgroups.oom_kills(&cg));
        pb::WorkspaceStatus {
            name: r.name.clone(),
            image: r.image.clone(),
            state: state as i32,
            pid,
            exit_code: exit.unwrap_or(0),
            oom_kills: oom_kills as u32,
            started_at_ms: r.started_at_ms,
            usage,
            ip: r.ip.to_string(),
            generation: r.generation,
            tunnels: self.inner.activity.of(&r.name),
        }
    }

    /// Records an OOM kill reported by containerd.
    pub(crate) async fn note_oom(&self, name: &str) {
        let _guard = self.lock(name).await;
        if let Ok(Some(mut r)) = self.inner.records.get(name) {
            r.oom_kills += 1;
            let _ = self.inner.records.put(&r);
            let _ = self.inner.changes.send(name.to_string());
        }
    }

    /// Records the exit of a workspace's init process reported by containerd.
    pub(crate) async fn note_exit(&self, name: &str, code: u32) {
        let _guard = self.lock(name).await;
        if let Ok(Some(mut r)) = self.inner.records.get(name) {
            if r.last_exit != Some(code as i32) {
                r.last_exit = Some(code as i32);
                let _ = self.inner.records.put(&r);
                let _ = self.inner.changes.send(name.to_string());
            }
        }
    }

    /// Records the exits of every workspace whose init process has ended, so
    /// an exit event missed while not subscribed is not lost.
    pub(crate) async fn sweep_exits(&self) {
        let Ok(records) = self.inner.records.all() else {
            return;
        };
        for r in records.iter().filter(|r| r.phase == Phase::Ready) {
            if let Ok(Some(p)) = self.inner.ctd.get_task(&r.name).await {
                if p.status == TaskStatus::Stopped as i32 {
                    self.note_exit(&r.name, p.exit_status).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_never_root() {
        assert_eq!(resolve_user("", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("0", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("root", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("0:0", (1000, 1000)), (1000, 1000));
        assert_eq!(resolve_user("1001", (1000, 1000)), (1001, 1001));
        assert_eq!(resolve_user("1001:50", (1000, 1000)), (1001, 50));
    }

    #[test]
    fn init_falls_back_to_a_waiting_shell() {
        assert_eq!(
            init_args(&["tini".into()], &["sleep".into()]),
            ["tini", "sleep"]
        );
        assert_eq!(init_args(&[], &[])[0], "/bin/sh");
    }
}
