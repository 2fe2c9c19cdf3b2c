//! A point-in-time copy of a mounted volume: its dirty data written out
//! first (the workload keeps running), then the file system frozen
//! (FIFREEZE: writers wait), the image file cloned by reflink (FICLONE: the
//! clone shares the image's blocks, so it is as quick for 1 GiB as for
//! 1 MiB), and thawed. Needs the image on a file system that clones (XFS
//! with reflink, btrfs); elsewhere the clone is refused and nothing is left.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Why there is no copy.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// The image's file system does not clone files (ext4, say).
    #[error("{0}: the volume's file system cannot clone files (reflink)")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FreezeError {
    let context = context.into();
    move |source| FreezeError::Io { context, source }
}

/// Thaws the file system when dropped: a freeze never outlives its scope,
/// whatever fails in between.
struct Frozen<'a>(&'a File);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let mut arg: libc::c_int = 0;
        // SAFETY: FITHAW on a directory fd of the frozen mount; the argument is unused.
        if let Err(e) = unsafe { fithaw(self.0.as_raw_fd(), &mut arg) } {
            tracing::error!(error = %e, "thaw after a backup snapshot failed");
        }
    }
}

/// Whether files in `dir` can be cloned (a probe file is cloned and removed).
pub fn can_clone(dir: &Path) -> bool {
    let (a, b) = (dir.join(".clone-probe-a"), dir.join(".clone-probe-b"));
    let ok = (|| -> std::io::Result<bool> {
        std::fs::write(&a, b"probe")?;
        let src = File::open(&a)?;
        let out = File::create(&b)?;
        // SAFETY: FICLONE with two open regular files; no memory is shared.
        Ok(unsafe { ficlone(out.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) }.is_ok())
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    ok
}

/// Copies `image` (the file behind the file system mounted at `mount`) to
/// `dest` as of one instant; returns how long writers waited.
pub fn snapshot(mount: &Path, image: &Path, dest: &Path) -> Result<Duration, FreezeError> {
    let dir = File::open(mount).map_err(io(format!("open {}", mount.display())))?;
    let src = File::open(image).map_err(io(format!("open {}", image.display())))?;
    let _ = std::fs::remove_file(dest);
    let out = File::create(dest).map_err(io(format!("create {}", dest.display())))?;
    // Outside the freeze: most dirty data goes now, while writers run.
    nix::unistd::syncfs(&dir).map_err(|e| io("syncfs")(e.into()))?;
    let cloned = {
        let started = Instant::now();
        let mut arg: libc::c_int = 0;
        // SAFETY: FIFREEZE on a directory fd of the mount; the argument is unused.
        unsafe { fifreeze(dir.as_raw_fd(), &mut arg) }.map_err(|e| io("freeze")(e.into()))?;
        let frozen = Frozen(&dir);
        // SAFETY: FICLONE with two open regular files; no memory is shared.
        let r = unsafe { ficlone(out.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) };
        drop(frozen);
        r.map(|_| started.elapsed())
    };
    match cloned {
        Ok(pause) => Ok(pause),
        Err(e) => {
            let _ = std::fs::remove_file(dest);
            match e {
                nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EXDEV
                | nix::errno::Errno::EINVAL => {
                    Err(FreezeError::Unsupported(image.display().to_string()))
                }
                e => Err(io("clone the volume image")(e.into())),
            }
        }
    }
}
