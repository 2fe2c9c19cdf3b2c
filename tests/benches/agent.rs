//! Agent benchmarks, each against a baseline measured in the same run:
//!
//! - start: create→running of a `tiny` workspace through the agent vs
//!   `ctr run -d` of the same image on the same containerd, interleaved.
//! - agent_memory: the agent's RSS idle and with 100 idle workspaces.
//!
//! Prints tables and appends one JSON line per figure to target/bench/<bench>.jsonl.
//! BERTH_BENCH_ITERS sets the start iterations (default 40).

use berth_proto::agent::{self as pb, request::Command};
use berth_tests::bench::{iters, percentile, record, rss_kib, sorted};
use berth_tests::{Node, NodeOptions};
use std::time::{Duration, Instant};

fn ctr(node: &Node, args: &[&str]) -> bool {
    std::process::Command::new("ctr")
        .arg("--address")
        .arg(&node.containerd.socket)
        .args(["--namespace", "berth"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Median of a `key=N` field over the agent log lines containing `marker`.
fn log_p50(log: &str, marker: &str, key: &str, skip: usize) -> f64 {
    let vals: Vec<f64> = log
        .lines()
        .filter(|l| l.contains(marker))
        .skip(skip)
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                // A span's last field is followed by `}:`.
                .and_then(|v| v.trim_end_matches(['}', ':']).parse().ok())
        })
        .collect();
    percentile(&sorted(vals), 0.5)
}

async fn start_bench() {
    let iters = iters(40);
    let warmup = 3;
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let image = node.tiny();
    node.call(Command::Pull(pb::PullRequest {
        image: image.clone(),
        auth: None,
    }))
    .await
    .expect("pull");
    let (mut agent, mut base) = (Vec::new(), Vec::new());
    for i in 0..warmup + iters {
        let name = format!("s{i}");
        let t = Instant::now();
        let st = node.create(node.spec(&name)).await.expect("agent create");
        let a = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(st.state, pb::State::Running as i32);

        let id = format!("c{i}");
        let t = Instant::now();
        assert!(ctr(&node, &["run", "-d", &image, &id]), "ctr run -d");
        let c = t.elapsed().as_secs_f64() * 1000.0;

        node.delete(&name).await.expect("delete");
        ctr(&node, &["tasks", "rm", "-f", &id]);
        ctr(&node, &["containers", "rm", &id]);
        if i >= warmup {
            agent.push(a);
            base.push(c);
        }
    }
    let (agent, base) = (sorted(agent), sorted(base));
    let (a50, a90, c50, c90) = (
        percentile(&agent, 0.5),
        percentile(&agent, 0.9),
        percentile(&base, 0.5),
        percentile(&base, 0.9),
    );
    let log = node.agent_log();
    println!("\nstart: create→running of `tiny`, {iters} runs each, interleaved, same containerd and image");
    println!("{:<34} {:>10} {:>10}", "", "p50 ms", "p90 ms");
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "berth-agent create (start=true)", a50, a90
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "ctr run -d (baseline)", c50, c90
    );
    println!(
        "{:<34} {:>10.2} {:>10.2}",
        "ratio agent / ctr",
        a50 / c50,
        a90 / c90
    );
    println!("agent steps, p50 ms (from its log):");
    for (marker, key) in [
        ("workspace created", "rootfs_ms"),
        ("workspace created", "volume_ms"),
        ("workspace created", "netns_ms"),
        ("workspace created", "task_create_ms"),
        ("workspace created", "task_start_ms"),
        ("workspace created", "image_ms"),
    ] {
        println!("  {key:<16} {:>6.1}", log_p50(&log, marker, key, warmup));
    }
    record("start", "agent_p50_ms", a50, "ms", "");
    record("start", "ctr_p50_ms", c50, "ms", "");
    record("start", "p50_ratio_vs_ctr", a50 / c50, "x", "<=1.0");
    record("start", "p90_ratio_vs_ctr", a90 / c90, "x", "<=1.0");
}

async fn memory_bench() {
    let n = 100;
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let pid = node.agent_pid().expect("agent pid");
    node.call(Command::Pull(pb::PullRequest {
        image: node.tiny(),
        auth: None,
    }))
    .await
    .expect("pull");
    node.list().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);
    for i in 0..n {
        let mut spec = node.spec(&format!("m{i}"));
        spec.memory_bytes = 32 << 20;
        spec.disk_bytes = 16 << 20;
        spec.cpu_millis = 100;
        spec.pids = 32;
        node.create(spec).await.expect("create");
    }
    assert_eq!(
        node.list()
            .await
            .iter()
            .filter(|s| s.state == pb::State::Running as i32)
            .count(),
        n
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    let per = (loaded - idle) / n as f64;
    println!("\nagent_memory: berth-agent RSS, idle vs {n} idle workspaces");
    println!("{:<34} {:>10}", "", "RSS");
    println!(
        "{:<34} {:>7.1} MiB",
        "no workspaces (baseline)",
        idle / 1024.0
    );
    println!(
        "{:<34} {:>7.1} MiB",
        format!("{n} workspaces"),
        loaded / 1024.0
    );
    println!("{:<34} {:>7.1} KiB", "added per workspace", per);
    record("agent_memory", "rss_idle_mib", idle / 1024.0, "MiB", "");
    record(
        "agent_memory",
        "rss_100_workspaces_mib",
        loaded / 1024.0,
        "MiB",
        "<=30",
    );
    record("agent_memory", "rss_per_workspace_kib", per, "KiB", "<=64");
    for i in 0..n {
        node.delete(&format!("m{i}")).await.expect("delete");
    }
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        start_bench().await;
        memory_bench().await;
    });
}
