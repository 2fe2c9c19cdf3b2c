//! A workspace's backups and restores (crate::backup says what and how).

use super::Manager;
use crate::backup::{freeze, ignored, Consistency, Store, GENERATION_TAG, ID_BASE_TAG, PERSISTED};
use crate::error::{AgentError, Result};
use crate::record::Record;
use berth_proto::agent as pb;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Under the volumes directory (so on the file system the images are on,
/// as a reflink needs): a snapshot's image and where it is mounted.
const SNAPSHOTS: &str = ".backup";

/// A point-in-time copy of a volume, mounted read-only; unmounted and
/// removed when dropped.
struct Snapshot {
    image: PathBuf,
    mount: PathBuf,
}

impl Snapshot {
    /// Clones `parts`' volume as of now and mounts the copy.
    async fn take(
        m: &Manager,
        parts: &str,
    ) -> std::result::Result<(Self, u32), freeze::FreezeError> {
        let v = &m.inner.volumes;
        let dir = v.dir().join(SNAPSHOTS);
        let io = |what: &'static str| {
            move |source: std::io::Error| freeze::FreezeError::Io {
                context: what.into(),
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(io("mkdir the snapshots dir"))?;
        let snap = Self {
            image: dir.join(format!("{parts}.ext4")),
            mount: dir.join(parts),
        };
        snap.clear();
        let (mp, image, dest) = (v.mountpoint(parts), v.image(parts), snap.image.clone());
        let pause = tokio::task::spawn_blocking(move || freeze::snapshot(&mp, &image, &dest))
            .await
            .map_err(|e| io("snapshot")(std::io::Error::other(e)))??;
        std::fs::create_dir_all(&snap.mount).map_err(io("mkdir the snapshot's mount"))?;
        // noload: the copy is of a frozen (clean) file system; it is not
        // replayed, and nothing writes it.
        crate::volume::run(
            tokio::process::Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,ro,noload,nosuid,nodev,noexec"])
                .arg(&snap.image)
                .arg(&snap.mount),
        )
        .await
        .map_err(|e| io("mount the snapshot")(std::io::Error::other(e.to_string())))?;
        Ok((snap, pause.as_millis().min(u32::MAX.into()) as u32))
    }

    fn clear(&self) {
        while nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Manager {
    /// Unmounts and removes the snapshots a backup cut short left (the
    /// agent was killed during it); at start, before any backup runs.
    pub fn clear_backup_snapshots(&self) {
        let dir = self.inner.volumes.dir().join(SNAPSHOTS);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let parts: std::collections::BTreeSet<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some(name.strip_suffix(".ext4").unwrap_or(&name).to_string())
            })
            .collect();
        for p in parts {
            tracing::info!(snapshot = %p, "clearing a backup snapshot left by an earlier run");
            Snapshot {
                image: dir.join(format!("{p}.ext4")),
                mount: dir.join(&p),
            }
            .clear();
        }
    }

    /// Backs up workspace `name`'s own data to `req.store`.
    pub async fn backup(&self, req: pb::BackupRequest) -> Result<pb::BackupResult> {
        crate::validate::name(&req.name)?;
        let store = Store::of(req.store)?;
        let mut b = self
            .back_up(&req.name, &store, false, req.exclude_ignored)
            .await?;
        if let Some(keep) = &req.retention {
            let _one = self.lock(&format!("{}\0backup", req.name)).await;
            match self.inner.restic.forget(&store, &req.name, keep).await {
                Ok(kept) => {
                    tracing::info!(workspace = %req.name, kept = kept.len(), "old backups forgotten and pruned");
                    b.kept = kept;
                    b.pruned = true;
                }
                // The backup stands; the prune is tried again next time.
                Err(e) => tracing::warn!(workspace = %req.name, error = %e, "prune failed"),
            }
        }
        self.inner
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.name, store);
        Ok(b)
    }

    /// Forgets every backup of (deleted) workspace `req.name` and frees
    /// their space.
    pub async fn drop_backups(&self, req: pb::DropBackupsRequest) -> Result<pb::BackupsDropped> {
        crate::validate::name(&req.name)?;
        let store = Store::of(req.store)?;
        let _one = self.lock(&format!("{}\0backup", req.name)).await;
        let snapshots = self.inner.restic.drop_all(&store).await?;
        tracing::info!(workspace = %req.name, snapshots, "backups dropped");
        Ok(pb::BackupsDropped { snapshots })
    }

    /// The store workspace `name` was last backed up to, if any since the
    /// agent started.
    pub(crate) fn known_store(&self, name: &str) -> Option<Store> {
        let stores = self.inner.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.get(name).cloned()
    }

    /// Backs workspace `name` up to `store`; `fenced`: its node stopped it
    /// cut off from the coordinator (`crate::fence`), and it must not run.
    pub(crate) async fn back_up(
        &self,
        name: &str,
        store: &Store,
        fenced: bool,
        exclude_ignored: bool,
    ) -> Result<pb::BackupResult> {
        // One backup or restore of a workspace at a time.
        let _one = self.lock(&format!("{name}\0backup")).await;
        let started = Instant::now();
        let taken_at_ms = now_ms();
        let guard = self.lock(name).await;
        let r = self.record(name)?;
        let parts = r.parts().to_string();
        self.inner.volumes.ensure_mounted(&parts).await?;
        let running = self.inner.ctd.get_task(&r.name).await?.is_some();
        if fenced && running {
            return Err(AgentError::Conflict {
                name: r.name,
                state: "running".into(),
                action: "fenced backup",
            });
        }
        // A stopped workspace is read in place, under its lock (nothing
        // starts meanwhile); a running one from a snapshot, without it.
        let (snapshot, consistency, pause_ms, _guard) = if fenced {
            (None, Consistency::Fenced, 0, Some(guard))
        } else if !running {
            (None, Consistency::Stopped, 0, Some(guard))
        } else {
            match Snapshot::take(self, &parts).await {
                Ok((s, pause)) => (Some(s), Consistency::Snapshot, pause, None),
                Err(freeze::FreezeError::Unsupported(why)) => {
                    tracing::warn!(workspace = %r.name, %why, "backup read live, not from a snapshot");
                    (None, Consistency::Live, 0, Some(guard))
                }
                Err(e) => return Err(AgentError::Backup(e.to_string())),
            }
        };
        let root = snapshot.as_ref().map_or_else(
            || self.inner.volumes.mountpoint(&parts),
            |s| s.mount.clone(),
        );
        let mut paths: Vec<&str> = PERSISTED
            .into_iter()
            .filter(|p| root.join(p).symlink_metadata().is_ok())
            .collect();
        let covered: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        // /workspace without what its .gitignore files ignore: its files
        // listed instead of the directory.
        let list = self
            .inner
            .cfg
            .file
            .state_dir
            .join(format!("backup-{}.files", r.name));
        let mut bytes_excluded = 0;
        let mut files = None;
        if exclude_ignored && paths.contains(&"workspace") {
            let (from, to) = (root.clone(), list.clone());
            let listed = tokio::task::spawn_blocking(move || {
                let (kept, left_out) = ignored::included(&from, "workspace")?;
                let mut text = Vec::new();
                for p in &kept {
                    text.extend_from_slice(p.as_os_str().as_encoded_bytes());
                    text.push(b'\n');
                }
                std::fs::write(&to, text)?;
                Ok::<_, std::io::Error>((kept.is_empty(), left_out))
            })
            .await
            .map_err(|e| AgentError::Backup(format!("list the files to back up: {e}")))?
            .map_err(AgentError::io("list the files to back up"))?;
            if !listed.0 {
                paths.retain(|p| *p != "workspace");
                bytes_excluded = listed.1;
                files = Some(list.as_path());
            }
        }
        let tags = [
            "berth".to_string(),
            format!("consistency={}", consistency.as_str()),
            format!("{GENERATION_TAG}{}", r.generation),
            format!("{ID_BASE_TAG}{}", r.userns.host_base),
        ];
        let s = self
            .inner
            .restic
            .backup(store, &root, &r.name, (&paths, files), &tags)
            .await;
        let _ = std::fs::remove_file(&list);
        let s = s?;
        drop(snapshot);
        tracing::info!(
            workspace = %r.name,
            id = %s.snapshot_id,
            added = s.data_added,
            total = s.total_bytes_processed,
            pause_ms,
            ms = started.elapsed().as_millis() as u64,
            consistency = consistency.as_str(),
            "backed up"
        );
        Ok(pb::BackupResult {
            id: s.snapshot_id,
            taken_at_ms,
            bytes_added: s.data_added,
            bytes_total: s.total_bytes_processed,
            files: s.total_files_processed,
            consistency: consistency.as_str().into(),
            pause_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            paths: covered,
            id_base: r.userns.host_base,
            bytes_excluded,
            kept: Vec::new(),
            pruned: false,
        })
    }

    /// Replaces stopped workspace `name`'s own data by backup `req.id`. The
    /// backup is restored beside the data first: a restore that fails
    /// leaves the workspace as it was.
    pub async fn restore(&self, req: pb::RestoreRequest) -> Result<pb::RestoreResult> {
        crate::validate::name(&req.name)?;
        let _one = self.lock(&format!("{}\0backup", req.name)).await;
        let _guard = self.lock(&req.name).await;
        let started = Instant::now();
        let r = self.record(&req.name)?;
        if self.inner.ctd.get_task(&r.name).await?.is_some() {
            return Err(AgentError::Conflict {
                name: r.name,
                state: "running".into(),
                action: "restore",
            });
        }
        let shifted = self.restore_into(&r, req).await?;
        Ok(pb::RestoreResult {
            duration_ms: started.elapsed().as_millis() as u64,
            shifted,
        })
    }

    /// Fills new workspace `r` (made, not started) from the backup of the
    /// node it moved from, saying so as progress ("restoring N MiB").
    pub(super) async fn restore_moved(&self, r: &Record, req: pb::RestoreRequest) -> Result<()> {
        let on = self.progress_to(&r.name, "backup", &req.id);
        on(crate::image::Pulling {
            phase: "restoring",
            done_bytes: 0,
            total_bytes: req.bytes,
            done_layers: 0,
            total_layers: 0,
        });
        let t = Instant::now();
        let id = req.id.clone();
        let shifted = self.restore_into(r, req).await?;
        // Now on its volume: the overlay goes back over it.
        self.mount_prebuild(r).await?;
        let ms = t.elapsed().as_millis() as u64;
        tracing::info!(workspace = %r.name, %id, shifted, ms, "moved workspace restored from its backup");
        Ok(())
    }

    /// Puts backup `req.id` in place of record `r`'s own data (the caller
    /// holds its lock, and it does not run); returns how many owners were
    /// shifted to its id range. Also the create of a workspace that moved
    /// here from another node.
    pub(super) async fn restore_into(&self, r: &Record, req: pb::RestoreRequest) -> Result<u64> {
        let store = Store::of(req.store)?;
        let parts = r.parts().to_string();
        self.inner.volumes.ensure_mounted(&parts).await?;
        // The overlay over a prebuild must not sit on an upper being replaced.
        self.unmount_prebuild(&r.name, None).await?;
        let root = self.inner.volumes.mountpoint(&parts);
        let staging = root.join(".restore");
        remove_tree(&staging)?;
        std::fs::create_dir(&staging).map_err(AgentError::io("mkdir the restore dir"))?;
        let restored = self.inner.restic.restore(&store, &req.id, &staging).await;
        if let Err(e) = restored {
            remove_tree(&staging)?;
            return Err(e);
        }
        let (from, to, size) = (req.id_base, r.userns.host_base, r.userns.size);
        let dir = staging.clone();
        let shifted = tokio::task::spawn_blocking(move || {
            if from == to {
                return Ok(0);
            }
            crate::build::rebase_ids(&dir, from, size, to)
        })
        .await
        .map_err(|e| AgentError::Backup(format!("shift owners: {e}")))?
        .map_err(AgentError::io("shift the restored files' owners"))?;
        for p in PERSISTED {
            swap(&root.join(p), &staging.join(p))?;
        }
        remove_tree(&staging)?;
        tracing::info!(workspace = %r.name, id = %req.id, shifted, "restored");
        Ok(shifted)
    }
}

/// Puts `new` (if the backup had it) where `old` is, and removes `old`.
fn swap(old: &Path, new: &Path) -> Result<()> {
    remove_tree(old)?;
    if new.symlink_metadata().is_ok() {
        std::fs::rename(new, old).map_err(AgentError::io(format!("move {}", old.display())))?;
    }
    Ok(())
}

fn remove_tree(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(AgentError::io(format!("remove {}", p.display()))(e))
        }
        _ => Ok(()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
