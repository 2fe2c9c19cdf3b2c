//! Limits are enforced by the kernel, seen from inside and from the cgroup.

use berth_proto::agent as pb;
use berth_tests::{assert_clean, Node, NodeOptions};

#[tokio::test(flavor = "multi_thread")]
async fn memory_pids_cpu_and_disk_limits_hold() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let mut spec = node.spec("lim");
    spec.memory_bytes = 48 << 20;
    spec.pids = 40;
    spec.cpu_millis = 250;
    spec.disk_bytes = 32 << 20;
    node.create(spec).await.expect("create");

    // CPU: the quota is in the cgroup (250 millicores = 25 ms per 100 ms).
    let st = node.status("lim").await.unwrap();
    let usage = st.usage.expect("usage of a running workspace");
    assert_eq!(
        (usage.cpu_quota_micros, usage.cpu_period_micros),
        (25_000, 100_000)
    );
    assert_eq!(usage.pids_limit, 40);
    assert_eq!(usage.memory_limit_bytes, 48 << 20);
    let quota = std::fs::read_to_string(cgroup_file(
        &node,
        "cpu",
        "lim",
        "cpu.cfs_quota_us",
        "cpu.max",
    ))
    .unwrap();
    assert!(quota.starts_with("25000"), "cgroup says {quota:?}");
    // ... and it holds: two seconds of a busy loop get about a quarter of a
    // core, where nothing else would stop it from taking a whole one.
    let used_us = || {
        let f = cgroup_file(&node, "cpuacct", "lim", "cpuacct.usage", "cpu.stat");
        let text = std::fs::read_to_string(f).unwrap();
        match text.strip_prefix("usage_usec ") {
            Some(v2) => v2.lines().next().unwrap().trim().parse::<f64>().unwrap(),
            None => text.trim().parse::<f64>().unwrap() / 1000.0,
        }
    };
    let (before, t0) = (used_us(), std::time::Instant::now());
    let (code, _, err) = node
        .sh("lim", "timeout 2 sh -c 'while :; do :; done'; true")
        .await;
    assert_eq!(code, 0, "{err}");
    let share = (used_us() - before) / t0.elapsed().as_micros() as f64;
    assert!(
        (0.1..0.4).contains(&share),
        "a busy loop under 250 millicores used {share:.2} of a core"
    );

    // Memory: a balloon past the limit is OOM-killed, and the kill is reported.
    let (code, _, _) = node
        .sh(
            "lim",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        )
        .await;
    assert_eq!(code, 137, "the balloon dies of SIGKILL");
    let oom = berth_tests::eventually(std::time::Duration::from_secs(5), || async {
        let s = node.status("lim").await.ok()?;
        (s.oom_kills >= 1).then_some(s.oom_kills)
    })
    .await;
    assert!(oom.is_some(), "OOM kill reported in status");
    assert_eq!(
        node.status("lim").await.unwrap().state,
        pb::State::Running as i32,
        "the workspace survives"
    );

    // Pids: a fork bomb stops at the limit (counted from the host: inside,
    // nothing can fork once the bomb holds every pid). The shell exits at its
    // first failed fork; its children sleep long enough for it to get there
    // however slowly it forks (at 250 millicores on a loaded machine, forty
    // forks can take seconds), and are then killed from the host.
    let pids_file = cgroup_file(&node, "pids", "lim", "pids.current", "pids.current");
    let pids = || -> u64 {
        std::fs::read_to_string(&pids_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let bomb = {
        let req = pb::ExecRequest {
            name: "lim".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "for i in $(seq 300); do sleep 120 2>/dev/null & done; wait".into(),
            ],
            ..Default::default()
        };
        let client = node.client().await;
        tokio::spawn(async move { client.exec(req, b"").await })
    };
    let mut most = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !bomb.is_finished() && std::time::Instant::now() < deadline {
        most = most.max(pids());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    most = most.max(pids());
    let out = bomb.await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("can't fork"),
        "the shell ran into the limit: {err:?}"
    );
    assert!(
        (30..=40).contains(&most),
        "at most 40 processes, and the bomb got close: {most}"
    );
    let procs = cgroup_file(&node, "pids", "lim", "cgroup.procs", "cgroup.procs");
    for pid in std::fs::read_to_string(&procs).unwrap().lines() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" {
            let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let freed = berth_tests::eventually(std::time::Duration::from_secs(10), || async {
        (pids() < 10).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the bomb's children are gone: {}", pids());
    let (code, out, _) = node.sh("lim", "echo alive").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "alive\n"),
        "the workspace recovers"
    );

    // Disk: 8 MiB fit (control); writing past the 32 MiB volume fails with
    // ENOSPC, and what landed on the node stays within the volume.
    let (code, _, err) = node
        .sh("lim", "dd if=/dev/zero of=/workspace/small bs=1M count=8")
        .await;
    assert_eq!(code, 0, "control: 8 MiB fit: {err}");
    let (code, _, err) = node
        .sh("lim", "dd if=/dev/zero of=/workspace/big bs=1M count=64")
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("No space left on device"), "{err}");
    let big = std::fs::metadata(node.volume("lim").join("big"))
        .unwrap()
        .len();
    assert!(big < 32 << 20, "{big} bytes landed on the node");

    node.delete("lim").await.unwrap();
    assert_clean(&node, &baseline);
}

/// A file of the workspace's cgroup, v1 (`controller/…/v1`) or v2 (`…/v2`).
/// A small workspace's init starts with a core (runc's init is slow under a
/// tiny quota), then runs under its own quota, also when the agent died
/// between the start and the quota write (re-applied on adoption).
#[tokio::test(flavor = "multi_thread")]
async fn the_cpu_quota_follows_the_start_floor_and_survives_a_crash() {
    use berth_proto::agent::request::Command;
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let mut spec = node.spec("q");
    spec.cpu_millis = 20;
    node.create(spec).await.expect("create");
    let file = cgroup_file(&node, "cpu", "q", "cpu.cfs_quota_us", "cpu.max");
    let quota = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        quota().starts_with("2000"),
        "20 millicores once running: {:?}",
        quota()
    );
    node.stop("q").await.unwrap();
    // The agent dies right after the task starts, before the quota is set.
    node.kill_agent();
    node.start_agent_with(&[(
        "BERTH_FAILPOINT",
        berth_agent::failpoint::START_BEFORE_QUOTA,
    )])
    .await;
    let start = Command::Start(pb::StartRequest {
        name: "q".into(),
        generation: 0,
        secrets: None,
    });
    assert!(node.call(start).await.is_err(), "the agent died mid-start");
    assert!(node.wait_agent_exit(std::time::Duration::from_secs(10)));
    assert!(
        quota().starts_with("100000"),
        "control: the floor was left: {:?}",
        quota()
    );
    node.start_agent().await;
    assert!(
        quota().starts_with("2000"),
        "re-applied on adoption: {:?}",
        quota()
    );
    node.delete("q").await.unwrap();
    assert_clean(&node, &baseline);
}

fn cgroup_file(
    node: &Node,
    controller: &str,
    name: &str,
    v1: &str,
    v2: &str,
) -> std::path::PathBuf {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(&node.cgroup_parent).join(name).join(v2)
    } else {
        root.join(controller)
            .join(&node.cgroup_parent)
            .join(name)
            .join(v1)
    }
}
