//! A file system that clones files (XFS with reflink), for clusters whose
//! nodes back workspaces up from point-in-time copies of their volumes
//! (this machine's root is ext4, which cannot). One sparse image under
//! /var/cache/berth, made and mounted once per boot, shared by the tests
//! (each in its own directory) and left mounted like the other caches.
//! Mounted with `discard`, so what the tests delete is punched out of the
//! image and the host's disk gets it back.

use std::path::PathBuf;

const CACHE: &str = "/var/cache/berth/xfs";

/// The mounted pool's root.
pub fn pool() -> PathBuf {
    let dir = PathBuf::from(CACHE);
    let mount = dir.join("pool");
    std::fs::create_dir_all(&mount).expect("mkdir the XFS pool");
    let lock = std::fs::File::create(dir.join("lock")).expect("XFS pool lock");
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|held| {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let target = format!(" {} ", mount.display());
            if !mounts
                .lines()
                .any(|l| l.contains(&target) && l.contains(" - xfs "))
            {
                let image = dir.join("pool.img");
                let cmd = format!(
                    "set -e; if [ ! -e {img} ]; then truncate -s 256G {img}.new && \
                     mkfs.xfs -q -m reflink=1 {img}.new && mv {img}.new {img}; fi; \
                     mount -o loop,discard {img} {mnt}",
                    img = image.display(),
                    mnt = mount.display()
                );
                let (ok, _, err) = crate::sh(&cmd);
                assert!(ok, "make the XFS pool: {err}");
            }
            drop(held);
        })
        .unwrap_or_else(|(_, e)| panic!("lock the XFS pool: {e}"));
    mount
}
