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
        let line = map.proc_line();
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
