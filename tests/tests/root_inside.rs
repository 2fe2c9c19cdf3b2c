//! TEST-PLAN 15: root inside a workspace is root of its own user namespace
//! only. Every probe is tried as an attacker would, and its outcome is
//! checked on the host; each refusal has a positive control showing the
//! same probe works where it should.

use berth_tests::{assert_clean, Node, NodeOptions};
use std::os::unix::fs::MetadataExt;

/// The (first node id, size) of the user namespace a workspace's init runs
/// in, read on the host from /proc/PID/uid_map.
async fn host_range(node: &Node, name: &str) -> (u32, u32) {
    let pid = node.status(name).await.expect("status").pid;
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    let f: Vec<u32> = map
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!((f.len(), f[0]), (3, 0), "one range from id 0: {map}");
    (f[1], f[2])
}

/// Runs `sh -c script` on the host with node uid and gid `id` and no
/// groups: what a process that escaped a workspace whose root is `id` is.
fn as_host_id(id: u32, script: &str) -> (bool, String, String) {
    berth_tests::sh(&format!(
        "setpriv --reuid={id} --regid={id} --clear-groups sh -c '{script}'"
    ))
}

/// A Python one-liner printing the errno of a libc call (0 on success).
fn libc_call(call: &str) -> String {
    format!(
        "python3 -c \"import ctypes,os; l=ctypes.CDLL(None, use_errno=True); r={call}; print(0 if r==0 else ctypes.get_errno())\""
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn root_inside_is_not_root_on_the_node() {
    berth_tests::images(&["dev"]);
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let dev = format!("{}/dev:latest", node.registry.addr);
    for (name, nested) in [("ra", false), ("rb", false), ("rn", true)] {
        let mut spec = node.spec(name);
        spec.image = dev.clone();
        spec.memory_bytes = 256 << 20;
        spec.disk_bytes = 256 << 20;
        spec.nested_userns = nested;
        node.create(spec).await.expect("create");
    }

    // The workspace user cannot become root: it holds no capability.
    let (code, out, err) = node
        .sh(
            "ra",
            "python3 -c 'import os; os.setgid(0); os.setuid(0)'; echo rc=$?; id -u",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rc=1") && out.ends_with("1000\n"),
        "{out} {err}"
    );
    assert!(err.contains("PermissionError"), "{err}");

    // Root inside (control): it owns its own files, /etc/shadow included...
    let (code, out, err) = node
        .sh_root(
            "ra",
            "id -u && head -c 5 /etc/shadow && echo && echo owned > /etc/berth-probe && cat /etc/berth-probe",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0\nroot:\nowned\n");
    // ... and on the node that file is the workspace's, owned by an
    // unprivileged id of a range no other workspace has.
    let (ra_root, size) = host_range(&node, "ra").await;
    let (rb_root, _) = host_range(&node, "rb").await;
    assert!(ra_root >= 1_000_000 && size == 65536, "{ra_root} {size}");
    assert!(
        ra_root + size <= rb_root || rb_root + size <= ra_root,
        "ranges overlap: {ra_root} and {rb_root}"
    );
    let upper = node.volume("ra").parent().unwrap().join("rootfs/upper");
    let probe =
        std::fs::metadata(upper.join("etc/berth-probe")).expect("write landed on the volume");
    assert_eq!((probe.uid(), probe.gid()), (ra_root, ra_root));
    // The image's files, shared with every workspace, show as its own root's
    // inside (an idmapped view), and the layer on the node is unchanged.
    let (_, out, _) = node.sh("ra", "stat -c %u:%g /etc/passwd /bin").await;
    assert_eq!(out, "0:0\n0:0\n", "image files owned by root inside");

    // No process of the workspace runs as uid 0 on the node, even root's.
    let (code, _, err) = node.sh_root("ra", "(sleep 300 &) ; true").await;
    assert_eq!(code, 0, "{err}");
    let procs = cgroup_procs(&node, "ra");
    assert!(procs.len() >= 2, "init and the sleep: {procs:?}");
    for pid in &procs {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        let uids: Vec<u32> = uid_line
            .split_whitespace()
            .skip(1)
            .filter_map(|u| u.parse().ok())
            .collect();
        assert!(
            !uids.is_empty() && uids.iter().all(|u| *u >= ra_root && *u < ra_root + size),
            "pid {pid} runs as {uid_line:?} on the node"
        );
    }

    // A process that escaped A, with the ids of A's root or of A's user,
    // cannot signal B's init (which runs as B's user): with one range per
    // node A's user was B's user. The same probe with B's user's node id
    // works (control).
    let rb_pid = node.status("rb").await.unwrap().pid;
    let rb_user = host_uid(rb_pid);
    assert_eq!(rb_user, rb_root + 1000, "B's init runs as B's user");
    let probe = format!("kill -0 {rb_pid} && echo signalled");
    for escaped in [ra_root, ra_root + 1000] {
        let (_, out, err) = as_host_id(escaped, &probe);
        assert_eq!(out, "", "{escaped} (from A) reached B's init: {err}");
        assert!(err.contains("Operation not permitted"), "{err}");
    }
    let (_, out, err) = as_host_id(rb_user, &probe);
    assert_eq!(out, "signalled\n", "control: B's own ids: {err}");

    // What root inside cannot do: mount, load a module, use the kernel's
    // keyrings (not namespaced; seccomp), open a raw socket (no NET_RAW).
    // Each probe prints the errno of the call (0: it worked) and is also run
    // by root on the node, which may do each of them (the control).
    let mnt = node.dir.join("probe-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let probes = [
        (
            "mount",
            "l.mount(b'none', b'/mnt', b'tmpfs', 0, None)".to_string(),
            format!("l.mount(b'none', b'{}', b'tmpfs', 0, None)", mnt.display()),
        ),
        (
            "module",
            "l.init_module(None, 0, b'')".into(),
            "l.init_module(None, 0, b'')".into(),
        ),
        (
            "keyring",
            "l.syscall(248, b'user', b'berth', b'x', 1, -3)".into(),
            "l.syscall(248, b'user', b'berth-probe', b'x', 1, -3)".into(),
        ),
        (
            "raw socket",
            "l.socket(2, 3, 1)".into(),
            "l.socket(2, 3, 1)".into(),
        ),
    ];
    for (what, inside, host) in &probes {
        // socket() and add_key() return a descriptor or serial: >= 0 worked.
        let call = |c: &str| c.replace("r==0", "r>=0");
        let (_, out, err) = node.sh_root("ra", &call(&libc_call(inside))).await;
        assert_eq!(out.trim(), "1", "root inside: {what} is not EPERM: {err}");
        let (_, out, err) = node.sh("ra", &call(&libc_call(inside))).await;
        assert_eq!(out.trim(), "1", "the user: {what} is not EPERM: {err}");
        let (_, host_out, host_err) = berth_tests::sh(&call(&libc_call(host)));
        assert_ne!(
            host_out.trim(),
            "1",
            "control: root on the node may {what}: {host_err}"
        );
    }
    let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
    // The kernel's knobs and sysfs are read-only.
    for (what, probe) in [
        ("/proc/sys", "echo x > /proc/sys/kernel/domainname"),
        ("/sys", "echo 1 > /sys/kernel/profiling"),
    ] {
        let (_, out, err) = node.sh_root("ra", &format!("{probe}; echo rc=$?")).await;
        assert_eq!(out, "rc=2\n", "root inside wrote {what}: {err}");
        assert!(err.contains("Read-only file system"), "{what}: {err}");
    }
    // A nested user namespace is refused with EPERM (not ENOSYS: the
    // kernel has unshare(2); the workspace may not use it this way)...
    let (_, out, err) = node
        .sh_root("ra", &libc_call("l.unshare(0x10000000)"))
        .await;
    assert_eq!(out.trim(), "1", "unshare(CLONE_NEWUSER) in ra: {err}");
    // Control: a workspace allowed nested user namespaces makes one.
    let (_, out, err) = node
        .sh_root("rn", &libc_call("l.unshare(0x10000000)"))
        .await;
    assert_eq!(out.trim(), "0", "nested userns where allowed: {err}");
    // ... and the filter refuses only CLONE_NEWUSER: clone without it (fork) works.
    let (_, out, _) = node.sh_root("ra", "sh -c 'echo forked'").await;
    assert_eq!(out, "forked\n");

    // A working directory under /proc/self/fd (runc's leaked-descriptor
    // escape, CVE-2024-21626): whatever descriptor it names, the command
    // either does not start or stays in the workspace: a marker file on the
    // node is never read through it.
    let marker = format!("berth-node-marker-{}", std::process::id());
    std::fs::write(format!("/tmp/{marker}"), "node\n").unwrap();
    let escape = format!("cat ../../../../../../../../tmp/{marker}");
    for n in 3..=12 {
        let req = berth_proto::agent::ExecRequest {
            name: "ra".into(),
            argv: vec!["sh".into(), "-c".into(), escape.clone()],
            user: "root".into(),
            cwd: format!("/proc/self/fd/{n}"),
            ..Default::default()
        };
        if let Ok(out) = node.client().await.exec(req, b"").await {
            assert!(
                out.stdout.is_empty(),
                "cwd /proc/self/fd/{n} reached the node's /tmp: {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // Controls: the marker is on the node; relative paths work inside.
    assert_eq!(
        std::fs::read_to_string(format!("/tmp/{marker}")).unwrap(),
        "node\n"
    );
    let _ = std::fs::remove_file(format!("/tmp/{marker}"));
    let req = berth_proto::agent::ExecRequest {
        name: "ra".into(),
        argv: vec!["cat".into(), "../../etc/berth-probe".into()],
        cwd: "/tmp".into(),
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"").await.expect("control");
    assert_eq!(
        out.stdout, b"owned\n",
        "control: a relative path from a real cwd"
    );

    // Another workspace's files: B writes a secret; A's root cannot find it.
    let (code, _, _) = node.sh("rb", "echo s3cret > /workspace/b-secret").await;
    assert_eq!(code, 0);
    let find = "grep -rl s3cret /workspace /tmp /var /home /root /mnt 2>/dev/null; echo done";
    let (_, out, _) = node.sh_root("ra", find).await;
    assert_eq!(out, "done\n", "A found B's file");
    let (_, out, _) = node.sh_root("rb", find).await;
    assert!(
        out.contains("/workspace/b-secret"),
        "control: B finds its own: {out}"
    );

    // Writing past the limit anywhere: the root filesystem (/tmp) shares the
    // 256 MiB volume, so 512 MiB do not fit and the node's disk is untouched.
    let snapshots = node
        .containerd
        .dir
        .join("root/io.containerd.snapshotter.v1.overlayfs");
    let before = du_kib(&snapshots);
    let (_, out, err) = node
        .sh_root(
            "ra",
            "dd if=/dev/zero of=/tmp/big bs=1M count=512 2>&1; echo rc=$?",
        )
        .await;
    assert!(
        out.contains("No space left") && out.ends_with("rc=1\n"),
        "{out} {err}"
    );
    let written = std::fs::metadata(upper.join("tmp/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        written > 100 << 20 && written <= 256 << 20,
        "landed on the volume: {written}"
    );
    let after = du_kib(&snapshots);
    assert!(
        after < before + 4096,
        "node disk grew from {before} to {after} KiB"
    );
    // /dev/shm is a 64 MiB tmpfs (memory, counted in the cgroup).
    let (_, out, _) = node
        .sh_root(
            "ra",
            "dd if=/dev/zero of=/dev/shm/big bs=1M count=100 2>&1; echo rc=$?",
        )
        .await;
    assert!(
        out.contains("No space left") && out.ends_with("rc=1\n"),
        "{out}"
    );

    for name in ["ra", "rb", "rn"] {
        node.delete(name).await.unwrap();
    }
    assert_clean(&node, &baseline);
}

/// The real uid of a process on the node.
fn host_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("uid")
}

fn cgroup_procs(node: &Node, name: &str) -> Vec<String> {
    for base in [
        format!("/sys/fs/cgroup/pids/{}/{name}", node.cgroup_parent),
        format!("/sys/fs/cgroup/{}/{name}", node.cgroup_parent),
    ] {
        if let Ok(s) = std::fs::read_to_string(format!("{base}/cgroup.procs")) {
            return s.lines().map(String::from).collect();
        }
    }
    panic!("no cgroup for {name}");
}

fn du_kib(p: &std::path::Path) -> u64 {
    let (_, out, _) = berth_tests::sh(&format!("du -sk {}", p.display()));
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
