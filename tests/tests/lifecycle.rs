//! A workspace's life on a real containerd: create, exec, stop, start,
//! delete, with the security defaults checked from inside.

use berth_proto::agent as pb;
use berth_tests::{assert_clean, Node, NodeOptions};

#[tokio::test(flavor = "multi_thread")]
async fn create_exec_stop_start_delete() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);

    let st = node.create(node.spec("life")).await.expect("create");
    assert_eq!(st.state, pb::State::Running as i32);
    assert!(st.pid > 0);

    // Security defaults, as outcomes: the user is not root and cannot write
    // what root owns; masked /proc paths give nothing; /proc/sys is mounted
    // read-only; on the node no process of the workspace runs as uid 0.
    let (code, out, err) = node
        .sh(
            "life",
            "id -u; pwd; echo x >> /etc/passwd; echo rc=$?; \
             grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6",
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "1000\n/workspace\nrc=1\nro,nosuid,nodev,noexec,relatime\n"
    );
    assert!(err.contains("Permission denied"), "{err}");
    // Control: root inside writes its own /etc/passwd (in its upper dir).
    // Masked paths give even root inside nothing: the node's firmware
    // tables (listed on the node: the control), kernel timers, keys.
    let (code, out, err) = node
        .sh_root(
            "life",
            "id -u; echo x >> /etc/passwd && echo wrote; ls /sys/firmware | wc -l; \
             cat /proc/kcore /proc/timer_list /proc/keys 2>/dev/null | wc -c",
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "0\nwrote\n0\n0\n"), "{err}");
    let (_, host, _) = berth_tests::sh("ls /sys/firmware | wc -l");
    assert_ne!(host.trim(), "0", "control: the node lists /sys/firmware");
    let (_, procs, _) = berth_tests::sh(&format!(
        "cat /sys/fs/cgroup/pids/{p}/life/cgroup.procs /sys/fs/cgroup/{p}/life/cgroup.procs 2>/dev/null",
        p = node.cgroup_parent
    ));
    let pids: Vec<&str> = procs.lines().collect();
    assert!(
        !pids.is_empty(),
        "the workspace's processes are in its cgroup"
    );
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|u| u.parse::<u32>().unwrap_or(0) >= 1_000_000),
            "pid {pid} runs as {uid:?} on the node"
        );
    }

    // stdin, stdout, stderr and the exit code travel through exec.
    let req = pb::ExecRequest {
        name: "life".into(),
        argv: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 7".into()],
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"from stdin").await.unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
        (7, &b"from stdin"[..], &b"err\n"[..])
    );

    // A terminal with the size asked for. Short-lived processes, many times:
    // their output must never be lost to the shim connecting late.
    for round in 0..20 {
        let req = pb::ExecRequest {
            name: "life".into(),
            argv: vec!["stty".into(), "size".into()],
            tty: true,
            rows: 33,
            cols: 101,
            ..Default::default()
        };
        let out = node.client().await.exec(req, b"").await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "33 101",
            "tty round {round}"
        );
        assert_eq!(
            node.sh("life", "echo quick").await.1,
            "quick\n",
            "plain round {round}"
        );
    }
    // On a terminal, closing stdin is ^D: `cat` sees end of input and exits.
    let req = pb::ExecRequest {
        name: "life".into(),
        argv: vec!["cat".into()],
        tty: true,
        rows: 24,
        cols: 80,
        ..Default::default()
    };
    let out = node.client().await.exec(req, b"hello\n").await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello"),
        "{out:?}"
    );

    // The volume keeps its files across stop/start.
    assert_eq!(node.sh("life", "echo kept > /workspace/file").await.0, 0);
    let stopped = node.stop("life").await.unwrap();
    assert_eq!(stopped.state, pb::State::Stopped as i32);
    assert_eq!(
        stopped.exit_code, 0,
        "the init process exits cleanly on SIGTERM"
    );
    let started = node.start("life").await.unwrap();
    assert_eq!(started.state, pb::State::Running as i32);
    assert_ne!(started.pid, st.pid);
    assert_eq!(node.sh("life", "cat /workspace/file").await.1, "kept\n");

    // Starting a running workspace is a no-op; deleting twice is fine.
    assert_eq!(node.start("life").await.unwrap().pid, started.pid);
    assert_eq!(
        node.delete("life").await.unwrap().state,
        pb::State::Deleted as i32
    );
    assert_eq!(
        node.delete("life").await.unwrap().state,
        pb::State::Deleted as i32
    );
    assert_eq!(
        node.status("life").await.unwrap_err().code(),
        Some("not_found")
    );
    assert_clean(&node, &baseline);
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_once_and_reuses_layers() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let pull = || async {
        match node
            .call(pb::request::Command::Pull(pb::PullRequest {
                image: node.tiny(),
                auth: None,
            }))
            .await
            .unwrap()
        {
            pb::response::Result::Pulled(p) => p,
            other => panic!("{other:?}"),
        }
    };
    let first = pull().await;
    assert_eq!(
        (first.layers_fetched, first.layers_present),
        (2, 0),
        "config + one layer fetched"
    );
    assert!(first.digest.starts_with("sha256:"));
    let second = pull().await;
    assert_eq!(
        (
            second.layers_fetched,
            second.layers_present,
            second.bytes_fetched
        ),
        (0, 2, 0)
    );
    assert_eq!(second.digest, first.digest);
    assert_clean(&node, &baseline);
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_slots_are_taken_refilled_and_cleaned_after_a_crash() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let pool = |node: &Node| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&node.netns_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.retain(|n| n.starts_with("pool-") && !n.ends_with(".user"));
        v.sort();
        v
    };
    assert!(
        pool(&node).is_empty(),
        "nothing is prepared before a size is asked for"
    );

    node.create(node.spec("first")).await.unwrap();
    assert_eq!(node.parts("first"), "first", "a miss makes its own parts");
    let ready = berth_tests::eventually(std::time::Duration::from_secs(10), || async {
        let p = pool(&node);
        (p.len() == 2).then_some(p)
    })
    .await
    .expect("two slots prepared for the size just asked for");

    let second = node.create(node.spec("second")).await.unwrap();
    let slot = node.parts("second");
    assert!(
        ready.contains(&slot),
        "the second create took a prepared slot ({slot} of {ready:?})"
    );
    assert_eq!(second.state, pb::State::Running as i32);
    // The slot's parts are really the workspace's: its address, a volume of its size, its user.
    let (code, out, _) = node.sh("second", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; df -m /workspace | tail -1; touch /workspace/x && stat -c %u /workspace/x").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("inet {}", second.ip)), "{out}");
    assert!(out.contains("\n1000\n") || out.ends_with("1000\n"), "{out}");
    let size_mb: u64 = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        (40..=64).contains(&size_mb),
        "a 64 MiB volume, got {size_mb} MiB: {out}"
    );
    node.stop("second").await.unwrap();
    assert_eq!(
        node.start("second").await.unwrap().ip,
        second.ip,
        "stop/start keeps the slot's address"
    );
    let refilled = berth_tests::eventually(std::time::Duration::from_secs(10), || async {
        (pool(&node).len() == 3).then_some(())
    })
    .await;
    assert!(
        refilled.is_some(),
        "refilled to two free slots (plus the taken one): {:?}",
        pool(&node)
    );

    // A crash forgets the free slots; the next agent removes them, keeps the taken one.
    node.kill_agent();
    node.start_agent().await;
    assert_eq!(
        pool(&node),
        vec![slot.clone()],
        "only the slot a workspace holds survives"
    );
    assert_eq!(node.sh("second", "ls /workspace/x").await.0, 0);
    for n in ["first", "second"] {
        node.delete(n).await.unwrap();
    }
    assert!(pool(&node).is_empty());
    assert_clean(&node, &baseline);
}

/// Stop sends SIGTERM, then SIGKILL once the grace period is over: an init
/// that does not react to SIGTERM (stopped with SIGSTOP from the node, as a
/// hung process would be) is killed after the grace; the same image's init,
/// which exits on SIGTERM, is the control and stops at once with status 0.
#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_what_ignores_sigterm_after_the_grace() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let hung = node.create(node.spec("hung")).await.expect("create hung");
    node.create(node.spec("polite"))
        .await
        .expect("create polite");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hung.pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let stop = |name: &'static str| {
        let node = &node;
        async move {
            let t = std::time::Instant::now();
            let req = pb::StopRequest {
                name: name.into(),
                grace_seconds: 2,
                generation: 0,
            };
            let st = node
                .client()
                .await
                .status_call(pb::request::Command::Stop(req))
                .await
                .expect("stop");
            (st, t.elapsed())
        }
    };
    let (st, took) = stop("hung").await;
    assert_eq!(st.state, pb::State::Stopped as i32);
    assert_eq!(st.exit_code, 137, "killed by SIGKILL");
    assert!(
        took >= std::time::Duration::from_millis(1900) && took < std::time::Duration::from_secs(10),
        "SIGKILL after the 2 s grace, took {took:?}"
    );
    assert!(node
        .agent_log()
        .contains("grace period over, sending SIGKILL"));
    let (st, took) = stop("polite").await;
    assert_eq!((st.state, st.exit_code), (pb::State::Stopped as i32, 0));
    assert!(
        took < std::time::Duration::from_millis(1500),
        "took {took:?}"
    );
    for n in ["hung", "polite"] {
        node.delete(n).await.unwrap();
    }
    assert_clean(&node, &baseline);
}
