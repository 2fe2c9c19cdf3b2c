//! The node's user-namespace id map: uid/gid `n` inside every workspace is
//! `host_base + n` on the node, for `n < size`. Image layers are unpacked
//! once per node with their owners shifted into that range (`shift_tree`),
//! so every workspace still shares them read-only and a start costs nothing
//! extra; root inside a workspace is an unprivileged id on the node.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One contiguous mapping of container ids onto node ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The node id of container id 0.
    pub host_base: u32,
    /// How many ids are mapped (container ids `0..size`).
    pub size: u32,
}

impl IdMap {
    /// The node id of container id `id`, or None when `id` is not mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.host_base + id)
    }

    /// The container id of node id `id`, or None outside the range.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.host_base).filter(|n| *n < self.size)
    }

    /// The OCI `uidMappings` / `gidMappings` entry.
    pub fn oci(&self) -> serde_json::Value {
        serde_json::json!([{ "containerID": 0, "hostID": self.host_base, "size": self.size }])
    }

    /// Suffix of snapshot names holding layers shifted into this range, so a
    /// node never mixes layers unpacked for another map (or none).
    pub fn snapshot_suffix(&self) -> String {
        format!("@userns-{}-{}", self.host_base, self.size)
    }
}

/// Shifts the owner of every entry under `root` (itself included, symlinks
/// not followed) into `map`. Idempotent: an id already in the range is left
/// as it is, so hard links and a walk resumed after a crash are shifted once.
/// chown clears set-id bits and file capabilities; both are put back.
/// Returns the number of entries changed.
pub fn shift_tree(root: &Path, map: IdMap) -> io::Result<u64> {
    let mut changed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
        if shift_one(&p, &md, map)? {
            changed += 1;
        }
    }
    Ok(changed)
}

fn shift_one(p: &Path, md: &std::fs::Metadata, map: IdMap) -> io::Result<bool> {
    let shift = |id: u32| match map.to_container(id) {
        Some(_) => None,
        None => map.to_host(id),
    };
    let (uid, gid) = (shift(md.uid()), shift(md.gid()));
    if uid.is_none() && gid.is_none() {
        return Ok(false);
    }
    // Ids past the range (nobody = 65534 fits; larger ids do not) stay: they
    // show as the overflow id inside, as on any user-namespaced runtime.
    let caps = if md.is_file() {
        xattr_get(p, "security.capability")
    } else {
        None
    };
    std::os::unix::fs::lchown(p, uid, gid)?;
    if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    if let Some(v) = caps {
        xattr_set(p, "security.capability", &v)?;
    }
    Ok(true)
}

fn cpath(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = cpath(p).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // buffer's length is passed with it.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n > 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let path = cpath(p)?;
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: as in xattr_get; `value` is read for its length only.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const MAP: IdMap = IdMap {
        host_base: 1_000_000,
        size: 65536,
    };

    #[test]
    fn maps_both_ways_within_the_range_only() {
        assert_eq!(MAP.to_host(0), Some(1_000_000));
        assert_eq!(MAP.to_host(65535), Some(1_065_535));
        assert_eq!(MAP.to_host(65536), None);
        assert_eq!(MAP.to_container(1_000_000), Some(0));
        assert_eq!(MAP.to_container(999_999), None);
        assert_eq!(MAP.to_container(1_065_536), None);
        assert_eq!(MAP.oci()[0]["hostID"], 1_000_000);
    }

    #[test]
    fn shifts_owners_once_and_keeps_setuid_bits() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sudo");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::chown(&f, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let link = d.path().join("hard");
        std::fs::hard_link(&f, &link).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("sym")).unwrap();
        // The symlink is shifted itself; the host's /etc/passwd is not touched.
        let passwd = std::fs::metadata("/etc/passwd").unwrap();
        assert!(shift_tree(d.path(), MAP).unwrap() >= 3);
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (1_000_000, 1_000_000));
        assert_eq!(md.mode() & 0o7777, 0o4755, "setuid survives the chown");
        let sym = std::fs::symlink_metadata(d.path().join("sym")).unwrap();
        assert_eq!(sym.uid(), 1_000_000);
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().uid(),
            passwd.uid()
        );
        // A second walk changes nothing (the hard link was shifted once).
        assert_eq!(shift_tree(d.path(), MAP).unwrap(), 0);
        assert_eq!(std::fs::metadata(&link).unwrap().uid(), 1_000_000);
    }
}
