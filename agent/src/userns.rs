//! A workspace's user namespace, made by the agent before the container so
//! that the workspace's network namespace is *owned* by it: runc's exec joins
//! the user namespace first and then the others, which only works for
//! namespaces the user namespace owns (a netns owned by the node's user
//! namespace refuses the join). Both are pinned by bind mounts, like the
//! netns alone was before, so they outlive the container's processes.

use crate::idmap::IdMap;
use nix::mount::{mount, MsFlags};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Makes a user namespace mapped by `map` and a network namespace it owns,
/// pinned at `user_pin` and `net_pin` (files that must not exist yet).
/// Blocking: a helper process is made and ended.
pub fn make(map: IdMap, user_pin: &Path, net_pin: &Path) -> io::Result<()> {
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and calls
    // unshare(2) only, which is async-signal-safe and allocates nothing.
    // Created in one call, the user namespace is made first and owns the
    // network namespace.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .map_err(io::Error::from)
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let pinned = (|| {
        let line = format!("0 {} {}\n", map.host_base, map.size);
        std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &line)?;
        pin(&format!("/proc/{pid}/ns/user"), user_pin)?;
        pin(&format!("/proc/{pid}/ns/net"), net_pin)
    })();
    // End the helper: closing its stdin ends cat.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = child.kill();
    let _ = child.wait();
    pinned
}

fn pin(ns: &str, at: &Path) -> io::Result<()> {
    std::fs::File::create(at)?;
    mount(Some(ns), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
}

/// Raises the kernel's per-user key quotas under `keys_dir` (normally
/// /proc/sys/kernel/keys) so that `workspaces` containers fit: runc gives
/// each container a session keyring, counted against its root's node uid,
/// which all workspaces of a node share (defaults: 200 keys, 20,000 bytes per
/// user, so the 201st workspace would not start). Never lowers a setting.
pub fn ensure_key_quota(keys_dir: &Path, workspaces: u32) -> io::Result<()> {
    let want = [
        ("maxkeys", 200 + 10 * u64::from(workspaces)),
        ("maxbytes", 20_000 + 1_000 * u64::from(workspaces)),
    ];
    for (knob, least) in want {
        let path = keys_dir.join(knob);
        let now: u64 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
        if now < least {
            std::fs::write(&path, least.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_quotas_grow_and_never_shrink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("maxkeys"), "200\n").unwrap();
        std::fs::write(d.path().join("maxbytes"), "99999999\n").unwrap();
        super::ensure_key_quota(d.path(), 500).unwrap();
        let read = |k: &str| std::fs::read_to_string(d.path().join(k)).unwrap();
        assert_eq!(read("maxkeys").trim(), "5200");
        assert_eq!(read("maxbytes").trim(), "99999999");
    }
}
