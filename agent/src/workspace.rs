//! The workspace manager: create, start, stop, delete, status and exec on top
//! of containerd, volumes and the network. Every operation holds the
//! workspace's lock; every create either completes or is rolled back.

mod access;
mod backup;
mod build;
mod configure;
mod create;
mod dotfiles;
mod exec;
mod feature;
mod idle;
mod node_cache;
mod prebuild;
mod prebuild_registry;
mod remove;
mod repo;
mod rootfs;
mod run;
mod slots;
mod status;
mod sync;
mod task;

pub use create::{init_args, resolve_user};
pub use run::INIT_LOG_DIR;

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
    host: crate::host::Host,
    ctd: Containerd,
    images: ImageStore,
    net: Network,
    volumes: Volumes,
    records: Records,
    cgroups: CgroupReader,
    /// The seccomp filter of workspaces without nested user namespaces.
    seccomp: oci_spec::runtime::LinuxSeccomp,
    /// The filter of those allowed them.
    seccomp_nested: oci_spec::runtime::LinuxSeccomp,
    swap_accounting: bool,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    ipam: tokio::sync::Mutex<()>,
    prepared: Prepared,
    refill: tokio::sync::Notify,
    /// Names of workspaces that changed on their own (exit, OOM).
    changes: tokio::sync::broadcast::Sender<String>,
    /// How far the pulls creates wait on got.
    progress: tokio::sync::broadcast::Sender<pb::PullProgress>,
    /// Tunnel sessions and bytes per workspace.
    activity: crate::tunnel::activity::Activity,
    /// The last sync of the per-workspace allow set failed.
    allow_dirty: std::sync::atomic::AtomicBool,
    /// Prebuild builds by build workspace: running, or done a short while ago.
    builds: Mutex<HashMap<String, prebuild::BuildOutcome>>,
    /// Prebuild layers held.
    layers: crate::layers::Layers,
    /// The idle detector of each running workspace, and its last verdict.
    idle: Mutex<HashMap<String, (crate::idle::Detector, crate::idle::Verdict)>>,
    /// Backups' and restores' restic.
    restic: crate::backup::Restic,
    /// The backup store each workspace was last backed up to, kept (in
    /// memory only) for the backup the node takes by itself when cut off
    /// from its coordinator (`crate::fence`).
    stores: Mutex<HashMap<String, crate::backup::Store>>,
    /// Workspaces' secrets, on the node's secrets tmpfs.
    secrets: crate::secrets::Secrets,
}

/// The pieces a manager is made of; built by `crate::run` or a test.
#[derive(Debug)]
pub struct Parts {
    pub cfg: Config,
    /// The machine's `/proc`.
    pub host: crate::host::Host,
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

/// Records how long a step of the start path took on the operation's span
/// (`create` or `start`), whose last line then tells where the time went.
fn step(field: &'static str, ms: u64) {
    tracing::Span::current().record(field, ms);
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

impl Manager {
    /// Builds a manager; `reconcile` should run before serving requests.
    pub fn new(p: Parts) -> Result<Self> {
        let state = p.cfg.file.state_dir.clone();
        for d in [
            "volumes",
            "exec",
            IDMAPPED_DIR,
            prebuild::MERGED_DIR,
            prebuild::LAYERS_DIR,
        ] {
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
        let mountinfo = p.host.mountinfo();
        let keyrings_refused = crate::seccomp::refuse_keyrings(&p.seccomp);
        let typed = |v: &serde_json::Value| {
            crate::seccomp::typed(v)
                .map_err(|e| AgentError::InvalidRequest(format!("security.seccomp_profile: {e}")))
        };
        let seccomp = typed(&crate::seccomp::refuse_nested_userns(&keyrings_refused))?;
        let seccomp_nested = typed(&keyrings_refused)?;
        let secrets = crate::secrets::Secrets::open(&state, &mountinfo)?;
        Ok(Self {
            inner: Arc::new(Inner {
                volumes: Volumes::new(state.join("volumes"), p.host.mountinfo()),
                records: Records::open(state.join("workspaces"))?,
                cfg: p.cfg,
                host: p.host,
                ctd: p.ctd,
                images,
                net: p.net,
                cgroups,
                seccomp,
                seccomp_nested,
                swap_accounting,
                locks: Mutex::default(),
                ipam: tokio::sync::Mutex::default(),
                prepared,
                refill: tokio::sync::Notify::new(),
                changes: tokio::sync::broadcast::channel(1024).0,
                progress: tokio::sync::broadcast::channel(256).0,
                activity: crate::tunnel::activity::Activity::default(),
                idle: Mutex::default(),
                allow_dirty: Default::default(),
                builds: Default::default(),
                layers: crate::layers::Layers::new(state.join(prebuild::LAYERS_DIR), mountinfo),
                restic: crate::backup::Restic::new("restic".into(), state.join("restic-cache")),
                stores: Mutex::default(),
                secrets,
            }),
        })
    }

    /// Names of workspaces that change on their own (their process exited,
    /// an OOM kill): the coordinator link reports them.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// The progress of pulls that creates wait on.
    pub fn progress(&self) -> tokio::sync::broadcast::Receiver<pb::PullProgress> {
        self.inner.progress.subscribe()
    }

    /// Where a pull for workspace `name` reports: to `progress()`.
    fn progress_to(&self, name: &str, what: &str, reference: &str) -> image::OnProgress {
        let tx = self.inner.progress.clone();
        let (name, what, reference) = (name.to_string(), what.to_string(), reference.to_string());
        std::sync::Arc::new(move |p: image::Pulling| {
            let _ = tx.send(pb::PullProgress {
                workspace: name.clone(),
                what: what.clone(),
                reference: reference.clone(),
                phase: p.phase.into(),
                done_bytes: p.done_bytes,
                total_bytes: p.total_bytes,
                done_layers: p.done_layers,
                total_layers: p.total_layers,
            });
        })
    }

    /// The machine the agent runs on.
    pub fn host(&self) -> &crate::host::Host {
        &self.inner.host
    }

    /// The agent's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// Tunnel activity per workspace.
    pub fn activity(&self) -> &crate::tunnel::activity::Activity {
        &self.inner.activity
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

    /// The workspaces recorded on the node now (empty if the records cannot
    /// be read).
    pub fn records_now(&self) -> Vec<crate::record::Record> {
        self.inner.records.all().unwrap_or_default()
    }

    /// The reader of the node's cgroups.
    pub fn cgroup_reader(&self) -> &crate::cgroup::CgroupReader {
        &self.inner.cgroups
    }

    /// Workspace `name`'s cgroup path, e.g. "/berth/ws-1".
    pub fn cgroup_of(&self, name: &str) -> String {
        self.cgroups_path(name)
    }

    /// The host side of workspace `name`'s veth.
    pub fn veth_of(&self, name: &str) -> String {
        self.inner.net.veth_name(name)
    }

    /// What each of the node's workspaces uses now: CPU time so far, memory
    /// charged to its cgroup, bytes used on its volume. Blocking (file reads).
    pub fn usage_now(&self) -> Vec<crate::usage::Reading> {
        self.records_now()
            .into_iter()
            .map(|r| {
                let u = self.inner.cgroups.usage(&self.cgroups_path(&r.name));
                crate::usage::Reading {
                    cpu_nanos: u.cpu_usage_nanos,
                    memory_bytes: u.memory_bytes,
                    disk_bytes: self.volume_used(&r.name),
                    name: r.name,
                }
            })
            .collect()
    }

    /// Bytes used on workspace `name`'s volume (0 when it is not mounted).
    pub fn volume_used(&self, name: &str) -> u64 {
        let dir = self.inner.volumes.mountpoint(name);
        if !self.inner.volumes.is_mounted(&dir) {
            return 0;
        }
        nix::sys::statvfs::statvfs(&dir)
            .map(|s| (s.blocks() - s.blocks_free()) * s.fragment_size())
            .unwrap_or(0)
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

    /// The workspace's host name: the one asked for, else its name.
    fn hostname(r: &Record) -> String {
        match r.hostname.is_empty() {
            true => r.name.clone(),
            false => r.hostname.clone(),
        }
    }

    fn spec_input(&self, r: &Record) -> SpecInput {
        let f = &self.inner.cfg.file;
        SpecInput {
            hostname: Self::hostname(r),
            args: r.args.clone(),
            env: r.process_env.clone(),
            uid: r.uid,
            gid: r.gid,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
            swap_accounting: self.inner.swap_accounting,
            idmap: r.userns,
            volume: self.workspace_root(r),
            netns: self.inner.net.netns_path(r.parts()),
            userns: self.inner.net.userns_path(r.parts()),
            cgroups_path: self.cgroups_path(&r.name),
            resolv_conf: f
                .network
                .resolv_conf
                .exists()
                .then(|| f.network.resolv_conf.clone()),
            hosts: Some(self.inner.volumes.hosts(r.parts())),
            secrets: Some(self.inner.secrets.files_dir(&r.name)),
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
}
