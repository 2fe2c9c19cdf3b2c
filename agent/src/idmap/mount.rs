//! Idmapped bind mounts (mount_setattr(2) with `MOUNT_ATTR_IDMAP`, Linux
//! 5.12; overlayfs accepts them as lower layers since 5.19). A file owned by
//! id `n` on disk shows through such a mount as `map.host_base + n`, the way
//! the workspace's user namespace maps it, and new files written through it
//! land on disk with the unmapped id. Nothing on disk changes.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(rc: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

/// Mounts `src` at `target` (an existing directory) with the ids of the
/// user namespace pinned at `userns`.
pub fn bind(src: &Path, target: &Path, userns: &Path) -> io::Result<()> {
    let ns = std::fs::File::open(userns)?;
    let src_c = cpath(src)?;
    let target_c = cpath(target)?;
    // SAFETY: open_tree(2) with a NUL-terminated path that lives across the
    // call; it returns a new file descriptor, owned from here on.
    let tree = unsafe {
        let fd = check(
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                src_c.as_ptr(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
            ),
            "open_tree",
        )?;
        OwnedFd::from_raw_fd(fd as i32)
    };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let empty = c"";
    check(
        // SAFETY: mount_setattr(2) on the detached tree's descriptor with an
        // empty path; `attr` is a live struct whose size is passed with it.
        unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        },
        "mount_setattr(MOUNT_ATTR_IDMAP)",
    )?;
    check(
        // SAFETY: move_mount(2) from the detached tree onto a NUL-terminated
        // target path; both live across the call.
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target_c.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        },
        "move_mount",
    )?;
    Ok(())
}

/// Detaches whatever is mounted at `target` (nothing mounted is fine).
pub fn unmount(target: &Path) -> io::Result<()> {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether a kernel release ("6.1.0-18-amd64") is at least 5.19, the first
/// to accept idmapped mounts as overlayfs lower layers.
pub fn kernel_supported(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 19)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_from_5_19_are_supported() {
        for (release, ok) in [
            ("6.1.0-18-amd64", true),
            ("5.19.0", true),
            ("5.15.0-91-generic", false),
            ("4.19.0", false),
            ("6.18.44-fc-v669", true),
            ("", false),
        ] {
            assert_eq!(super::kernel_supported(release), ok, "{release}");
        }
    }
}
