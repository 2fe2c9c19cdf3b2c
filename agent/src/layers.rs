//! Prebuild layers on the node (docs/prebuilds.md): each is the ext4 volume
//! of the build workspace that made it, kept as `<dir>/<key>.ext4` once the
//! build is done (a rename: no copy, no tar), its `workspace/` holding the
//! prebuilt /workspace with ids made the image's own (0-based). The first
//! workspace of it loop-mounts it read-only at `<dir>/<key>/`, and it stays
//! mounted while the node holds it (removal unmounts it). Its modification time is when a
//! workspace last used it (the cache's order); `<key>.expired` marks one
//! retention dropped while in use, to go with its last workspace.

mod transfer;

pub use transfer::{Meta, Pulled, Pushed};

use crate::error::{AgentError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Layers {
    dir: PathBuf,
    mountinfo: PathBuf,
    /// One pull per key at a time.
    pulls: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Layers {
    /// Layers live in `dir`; `mountinfo` is normally /proc/self/mountinfo.
    pub fn new(dir: PathBuf, mountinfo: PathBuf) -> Self {
        Self {
            dir,
            mountinfo,
            pulls: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn mountinfo(&self) -> &Path {
        &self.mountinfo
    }

    /// Pushes layer `meta.key` to `session`'s repository.
    pub async fn push(&self, session: &mut crate::image::Session, meta: &Meta) -> Result<Pushed> {
        transfer::push(self, session, meta).await
    }

    /// The file of layer `key`.
    pub fn image(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.ext4"))
    }

    fn mountpoint(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn expired_mark(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.expired"))
    }

    /// The prebuilt /workspace of a mounted layer.
    pub fn tree(&self, key: &str) -> PathBuf {
        self.mountpoint(key).join("workspace")
    }

    pub fn exists(&self, key: &str) -> bool {
        self.image(key).is_file()
    }

    /// Keys of the layers held.
    pub fn list(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".ext4").map(String::from)
            })
            .collect();
        keys.sort();
        keys
    }

    /// Takes volume image `volume` (unmounted) as layer `key`: a rename
    /// within the state directory's file system.
    pub fn adopt(&self, volume: &Path, key: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(AgentError::io("mkdir the layer store"))?;
        std::fs::rename(volume, self.image(key)).map_err(AgentError::io(format!(
            "keep {} as a layer",
            volume.display()
        )))?;
        self.touch(key);
        Ok(())
    }

    /// Notes that a workspace uses `key` now.
    pub fn touch(&self, key: &str) {
        let now = std::time::SystemTime::now();
        if let Ok(f) = std::fs::File::options().write(true).open(self.image(key)) {
            let _ = f.set_modified(now);
        }
    }

    /// Unix milliseconds a workspace last used `key`.
    pub fn last_used_ms(&self, key: &str) -> i64 {
        std::fs::metadata(self.image(key))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Bytes the layer takes on the node's disk (its image is sparse).
    pub fn bytes(&self, key: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.image(key)).map_or(0, |m| m.blocks() * 512)
    }

    /// Mounts the layer read-only if it is not.
    pub async fn ensure_mounted(&self, key: &str) -> Result<()> {
        let mp = self.mountpoint(key);
        if crate::volume::is_mount_point(&self.mountinfo, &mp) {
            return Ok(());
        }
        if !self.exists(key) {
            return Err(AgentError::Volume(format!(
                "prebuild layer {key} is missing"
            )));
        }
        std::fs::create_dir_all(&mp).map_err(AgentError::io(format!("mkdir {}", mp.display())))?;
        crate::volume::run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,ro,noload,nosuid,nodev,noatime"])
                .arg(self.image(key))
                .arg(&mp),
        )
        .await
    }

    /// Files in a mounted layer (its used inodes).
    pub fn files(&self, key: &str) -> u64 {
        nix::sys::statvfs::statvfs(&self.mountpoint(key)).map_or(0, |s| s.files() - s.files_free())
    }

    /// Unmounts the layer (idempotent).
    pub fn unmount(&self, key: &str) -> Result<()> {
        let mp = self.mountpoint(key);
        crate::volume::unmount_all(&self.mountinfo, &mp, nix::mount::MntFlags::MNT_DETACH)?;
        match std::fs::remove_dir(&mp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AgentError::io(format!("rmdir {}", mp.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Unmounts and deletes layer `key` (idempotent).
    pub fn remove(&self, key: &str) -> Result<()> {
        self.unmount(key)?;
        for p in [self.image(key), self.expired_mark(key)] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(AgentError::io(format!("remove {}", p.display()))(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Marks `key` to go with the last workspace that uses it.
    pub fn mark_expired(&self, key: &str) -> Result<()> {
        std::fs::write(self.expired_mark(key), b"").map_err(AgentError::io("mark a layer expired"))
    }

    pub fn is_expired(&self, key: &str) -> bool {
        self.expired_mark(key).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_adopted_listed_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let l = Layers::new(d.path().join("layers"), "/proc/self/mountinfo".into());
        let vol = d.path().join("v.ext4");
        std::fs::write(&vol, b"x").unwrap();
        l.adopt(&vol, "k1").unwrap();
        assert!(!vol.exists() && l.exists("k1"));
        assert_eq!(l.list(), ["k1"]);
        assert!(l.last_used_ms("k1") > 0);
        l.mark_expired("k1").unwrap();
        assert!(l.is_expired("k1"));
        l.remove("k1").unwrap();
        l.remove("k1").unwrap();
        assert!(l.list().is_empty() && !l.is_expired("k1"));
    }
}
