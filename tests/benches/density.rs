//! `density`: how many small workspaces one node keeps running when they are
//! created through the API (coordinator, scheduler, link, agent), and what
//! each costs. 500 `tiny` workspaces of 10 millicores and 24 MiB each are
//! created one after another (each timed from the request to `running`) and
//! kept running together; then the agent's RSS and the node's memory per
//! workspace are read. The ratio of the last hundred creates to the first
//! hundred shows whether a create slows down as the node fills. Then
//! `idle_sampling`: the agent's CPU over a minute with them all running and
//! sampled by its idle detector (`docs/idle.md`).

use berth_tests::bench::{percentile, record, rss_kib, sorted};
use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::time::{Duration, Instant};

fn mem_available_mib() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn density() {
    let n: usize = std::env::var("BERTH_DENSITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let c = Cluster::start(ClusterOptions {
        node_cpu_millis: 2000,
        cpu_overcommit: 4.0, // the coordinator's default
        node_max_workspaces: (n + 20) as u32,
        node_subnet_prefix: 22,
        ..Default::default()
    })
    .await;
    let before = mem_available_mib();
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("d{i}");
        let t = Instant::now();
        let (s, w) = c
            .post(
                "/v1/workspaces",
                json!({"name": name, "image": c.tiny(), "cpu_millis": 10, "memory_bytes": 24u64 << 20,
                       "disk_bytes": 16u64 << 20, "pids": 32}),
            )
            .await;
        assert_eq!(s, 201, "{name}: {w}");
        c.wait_state(&name, "running", Duration::from_secs(120))
            .await;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // All of them at once, a little later: still running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, list) = c.get("/v1/workspaces?state=running").await;
    let running = list.as_array().map_or(0, Vec::len);
    let tasks = c.nodes[0].running_tasks().len();
    let agent_rss = c.nodes[0].agent_pid().map_or(f64::NAN, rss_kib) / 1024.0;
    let per_ws = (before - mem_available_mib()) / n as f64;
    let first = sorted(took[..100.min(n)].to_vec());
    let last = sorted(took[n.saturating_sub(100)..].to_vec());
    let (p_first, p_last) = (percentile(&first, 0.5), percentile(&last, 0.5));

    println!("\ndensity: {n} tiny workspaces (10m CPU, 24 MiB) created through the API on one node, kept running");
    println!(
        "{:<40} {:>10}",
        "workspaces running (API / containerd)",
        format!("{running} / {tasks}")
    );
    println!("{:<40} {:>10.1}", "create p50, first 100 (ms)", p_first);
    println!("{:<40} {:>10.1}", "create p50, last 100 (ms)", p_last);
    println!("{:<40} {:>10.2}", "ratio last / first", p_last / p_first);
    println!("{:<40} {:>10.1}", "agent RSS (MiB)", agent_rss);
    println!("{:<40} {:>10.2}", "node memory per workspace (MiB)", per_ws);
    record(
        "density",
        "workspaces_running",
        running as f64,
        "",
        &format!(">={n}"),
    );
    record("density", "agent_rss_mib", agent_rss, "MiB", "");
    record("density", "create_p50_ms_first_100", p_first, "ms", "");
    record("density", "create_p50_ms_last_100", p_last, "ms", "");
    record(
        "density",
        "create_p50_ratio_last_vs_first",
        p_last / p_first,
        "x",
        "",
    );
    record("density", "node_mem_mib_per_workspace", per_ws, "MiB", "");

    // idle_sampling: the agent's CPU over a minute with all of them running
    // and nothing else happening, its idle detector sampling each every 10 s
    // (the default). Everything the agent does at rest is in it (heartbeats,
    // exit sweeps): an upper bound of what sampling costs.
    let window = Duration::from_secs(60);
    let cpu_percent = agent_cpu_percent(&c, window).await;
    let (_, list) = c.get("/v1/workspaces?state=running").await;
    let judged = list.as_array().map_or(0, |l| {
        l.iter()
            .filter(|w| w["idle"]["sampled_at_ms"].as_i64().unwrap_or(0) > 0)
            .count()
    });
    println!(
        "\nidle_sampling: the agent with {n} running workspaces, each sampled every 10 s, over {}s",
        window.as_secs()
    );
    println!("{:<40} {:>10.2}", "agent CPU (% of one core)", cpu_percent);
    println!(
        "{:<40} {:>10}",
        "workspaces with a verdict",
        format!("{judged} / {running}")
    );
    record(
        "idle_sampling",
        &format!("cpu_percent_{n}_workspaces"),
        cpu_percent,
        "%",
        "<=1.0",
    );

    // Clean up, a few at a time.
    let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    for chunk in names.chunks(8) {
        let paths: Vec<String> = chunk
            .iter()
            .map(|n| format!("/v1/workspaces/{n}"))
            .collect();
        futures::future::join_all(paths.iter().map(|p| c.delete(p))).await;
    }
    for name in &names {
        c.wait_state(name, "deleted", Duration::from_secs(120))
            .await;
    }
}

/// The agent's CPU use over `window`, in percent of one core.
async fn agent_cpu_percent(c: &Cluster, window: Duration) -> f64 {
    let pid = c.nodes[0].agent_pid().expect("agent pid");
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0
}

/// CPU time (user + system) a process used so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = 100.0; // USER_HZ on Linux
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(density());
}
