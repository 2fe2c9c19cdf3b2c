//! Per-workspace persistent volumes: a sparse ext4 image of the requested
//! size, loop-mounted on the node. Everything a workspace writes lands on
//! it: `workspace/` is bound at /workspace, `rootfs/upper` and `rootfs/work`
//! are its root filesystem's overlay upper and work dirs (so /tmp, /var and
//! /etc count too), and `init.log` is its init's output. The size is a hard
//! limit (writes past it fail with ENOSPC); the volume outlives stops and
//! agent restarts and goes only with delete.

use crate::error::{AgentError, Result};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The volumes under one directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
    mountinfo: PathBuf,
}

impl Volumes {
    /// Volumes live in `dir`; `mountinfo` is normally /proc/self/mountinfo.
    pub fn new(dir: PathBuf, mountinfo: PathBuf) -> Self {
        Self { dir, mountinfo }
    }

    /// The directory the volumes are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file backing `name`'s volume.
    pub fn image(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ext4"))
    }

    /// Where `name`'s volume is mounted on the node.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory bound at /workspace.
    pub fn workspace_dir(&self, name: &str) -> PathBuf {
        self.mountpoint(name).join("workspace")
    }

    /// The root filesystem's overlay (upper, work) dirs.
    pub fn rootfs_dirs(&self, name: &str) -> (PathBuf, PathBuf) {
        let r = self.mountpoint(name).join("rootfs");
        (r.join("upper"), r.join("work"))
    }

    /// The workspace's /etc/hosts (its own name resolves without DNS).
    pub fn hosts(&self, name: &str) -> PathBuf {
        self.mountpoint(name).join("hosts")
    }

    /// The init process's output log.
    pub fn log(&self, name: &str) -> PathBuf {
        self.mountpoint(name).join("init.log")
    }

    /// Bytes free for new volumes on the node's disk.
    pub fn free_bytes(&self) -> Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| AgentError::Volume(format!("statvfs {}: {e}", self.dir.display())))?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Refuses a size larger than the node's free disk.
    pub fn check_fits(&self, bytes: u64) -> Result<()> {
        let available = self.free_bytes()?;
        if bytes > available {
            return Err(AgentError::DiskTooLarge {
                requested: bytes,
                available,
            });
        }
        Ok(())
    }

    /// Makes and mounts a fresh volume: `workspace/` owned by the node ids
    /// `user` (uid, gid), the rootfs upper by `root`, the rest by the node's root.
    pub async fn create(
        &self,
        name: &str,
        bytes: u64,
        user: (u32, u32),
        root: (u32, u32),
    ) -> Result<()> {
        self.check_fits(bytes)?;
        let image = self.image(name);
        let f = std::fs::File::create(&image)
            .map_err(AgentError::io(format!("create {}", image.display())))?;
        f.set_len(bytes)
            .map_err(AgentError::io("size volume image"))?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E"])
            .arg("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard")
            .arg(&image))
        .await?;
        self.ensure_mounted(name).await?;
        let (upper, work) = self.rootfs_dirs(name);
        let dirs = [
            (self.workspace_dir(name), user, 0o755),
            (
                upper.parent().unwrap_or(&upper).to_path_buf(),
                (0, 0),
                0o700,
            ),
            (upper, root, 0o755),
            (work, (0, 0), 0o700),
        ];
        for (dir, (uid, gid), mode) in dirs {
            make_dir(&dir, uid, gid, mode)?;
        }
        Ok(())
    }

    /// Empties the root filesystem's upper and work dirs (for a container
    /// made again from another image); the upper is owned by node ids `root`.
    pub fn reset_rootfs(&self, name: &str, root: (u32, u32)) -> Result<()> {
        let (upper, work) = self.rootfs_dirs(name);
        for dir in [&upper, &work] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(AgentError::io(format!("empty {}", dir.display()))(e))
                }
                _ => {}
            }
        }
        make_dir(&upper, root.0, root.1, 0o755)?;
        make_dir(&work, 0, 0, 0o700)
    }

    /// Mounts the volume if it is not (after a node reboot, say).
    pub async fn ensure_mounted(&self, name: &str) -> Result<()> {
        let mp = self.mountpoint(name);
        if self.is_mounted(&mp) {
            return Ok(());
        }
        let image = self.image(name);
        if !image.exists() {
            return Err(AgentError::Volume(format!("volume of {name} is missing")));
        }
        std::fs::create_dir_all(&mp).map_err(AgentError::io(format!("mkdir {}", mp.display())))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
            .arg(&image)
            .arg(&mp))
        .await
    }

    /// Whether `path` is a mount point.
    pub fn is_mounted(&self, path: &Path) -> bool {
        is_mount_point(&self.mountinfo, path)
    }

    /// Unmounts `name`'s volume, keeping its image (idempotent).
    pub fn unmount(&self, name: &str) -> Result<()> {
        unmount_all(
            &self.mountinfo,
            &self.mountpoint(name),
            nix::mount::MntFlags::empty(),
        )
    }

    /// Unmounts and deletes `name`'s volume (idempotent).
    pub async fn remove(&self, name: &str) -> Result<()> {
        let mp = self.mountpoint(name);
        while self.is_mounted(&mp) {
            nix::mount::umount2(&mp, nix::mount::MntFlags::empty())
                .or_else(|_| nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH))
                .map_err(|e| AgentError::Volume(format!("umount {}: {e}", mp.display())))?;
        }
        remove_if_exists(&mp, |p| std::fs::remove_dir(p))?;
        remove_if_exists(&self.image(name), |p| std::fs::remove_file(p))
    }

    /// Names of the volumes present (by image file or mount point).
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        // A dot entry is the agent's own (backup snapshots), never a volume.
        let mut names: Vec<String> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".ext4").map(String::from).unwrap_or(n)
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn make_dir(dir: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let ctx = || format!("mkdir {}", dir.display());
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(AgentError::io(ctx())(e))
        }
        _ => {}
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(AgentError::io(ctx()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(AgentError::io(ctx()))
}

fn remove_if_exists(p: &Path, f: fn(&Path) -> std::io::Result<()>) -> Result<()> {
    match f(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(AgentError::io(format!("remove {}", p.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Runs a command; its standard error is the error when it fails.
pub(crate) async fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .await
        .map_err(|e| AgentError::Volume(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(AgentError::Volume(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether `path` is a mount point in the mountinfo file `mountinfo`.
pub fn is_mount_point(mountinfo: &Path, path: &Path) -> bool {
    let info = std::fs::read_to_string(mountinfo).unwrap_or_default();
    mount_points(&info).iter().any(|p| Path::new(p) == path)
}

/// Unmounts whatever is stacked at `path` (idempotent).
pub fn unmount_all(mountinfo: &Path, path: &Path, flags: nix::mount::MntFlags) -> Result<()> {
    while is_mount_point(mountinfo, path) {
        nix::mount::umount2(path, flags)
            .map_err(|e| AgentError::Volume(format!("umount {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Mount points listed in a mountinfo file (field 5, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    90 22 7:0 / /var/lib/berth/volumes/ws\\0401 rw,nosuid - ext4 /dev/loop0 rw\n";
        assert_eq!(mount_points(info), vec!["/", "/var/lib/berth/volumes/ws 1"]);
    }

    #[test]
    fn refuses_volumes_larger_than_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let v = Volumes::new(d.path().into(), "/proc/self/mountinfo".into());
        let free = v.free_bytes().unwrap();
        assert!(v.check_fits(free / 2).is_ok());
        assert_eq!(
            v.check_fits(free + (1 << 30)).unwrap_err().code(),
            "disk_too_large"
        );
    }
}
