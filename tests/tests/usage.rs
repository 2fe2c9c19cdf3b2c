//! What a running workspace uses, beside what it is given: the node measures
//! each workspace's cgroup and volume every heartbeat, and the API
//! (`usage` of a workspace) and the portal's list show it. A workspace that
//! spins a core, fills memory and writes to its volume reads so; a quiet one
//! beside it does not; the disk figure is what `df` says inside; a stopped
//! workspace shows none.

use berth_tests::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn usage(c: &Cluster, ws: &str) -> Value {
    let (s, w) = c.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(s, 200, "{w}");
    w["usage"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workspace_shows_what_it_uses() {
    let c = Cluster::start(Default::default()).await;
    for ws in ["busy", "quiet"] {
        let (s, w) = c
            .post(
                "/v1/workspaces",
                json!({"name": ws, "image": c.tiny(), "cpu_millis": 1000, "memory_bytes": 256 * MIB,
                       "disk_bytes": 256 * MIB, "pids": 64}),
            )
            .await;
        assert_eq!(s, 201, "{w}");
    }
    for ws in ["busy", "quiet"] {
        c.wait_state(ws, "running", T).await;
    }
    // 48 MiB in memory (a tmpfs charges the workspace's cgroup) and 80 MiB
    // on the volume.
    c.exec_ok(
        "busy",
        "head -c 50331648 /dev/zero > /dev/shm/held && \
         head -c 83886080 /dev/urandom > /workspace/big && sync",
    )
    .await;
    // A core spun for a while, measured while it spins: by a heartbeat
    // after the writes above (their urandom spins a core too).
    let after = now_ms() + 500;
    let spin = {
        let api = c.api.clone();
        let token = c.admin_token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{api}/v1/workspaces/busy/exec"))
                .bearer_auth(token)
                .json(&json!({"argv": ["sh", "-c", "timeout 8 sh -c 'while :; do :; done'; true"]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let (busy, quiet) = berth_tests::eventually(Duration::from_secs(7), || async {
        let (b, q) = (usage(&c, "busy").await, usage(&c, "quiet").await);
        (b["at_ms"].as_i64()? >= after && b["cpu_millis"].as_u64()? >= 500).then_some((b, q))
    })
    .await
    .expect("the spinning workspace reads at least half a core");
    assert!(
        quiet["cpu_millis"].as_u64().expect("quiet's usage") < 200,
        "the quiet one beside it does not: {quiet}"
    );
    assert!(
        busy["cpu_millis"].as_u64().unwrap() <= 1200,
        "at most its one core: {busy}"
    );
    let (bm, qm) = (
        busy["memory_bytes"].as_u64().unwrap(),
        quiet["memory_bytes"].as_u64().unwrap(),
    );
    assert!(
        (48 * MIB..=256 * MIB).contains(&bm),
        "busy holds its 48 MiB: {busy}"
    );
    assert!(qm < 32 * MIB, "quiet holds little: {quiet}");
    let (bd, qd) = (
        busy["disk_bytes"].as_u64().unwrap(),
        quiet["disk_bytes"].as_u64().unwrap(),
    );
    assert!(
        bd >= 80 * MIB && qd < 40 * MIB,
        "busy wrote 80 MiB: {busy} {quiet}"
    );
    // The disk figure is the volume's, as df inside sees it (within 4 MiB).
    let out = c.exec_ok("busy", "df -k /workspace | tail -1").await;
    let df_kib: u64 = out["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("df's used column");
    assert!(
        (df_kib * 1024).abs_diff(bd) <= 4 * MIB,
        "df says {df_kib} KiB used, the API {bd} bytes"
    );
    assert_eq!(spin.await.unwrap().ok(), Some(200));

    // The portal's list shows the same measurement beside what is given.
    let (s, rows) = c.get("/w/?rows=true").await;
    assert_eq!(s, 200, "{rows}");
    let rows = rows.as_str().unwrap_or_default();
    let busy_row = rows
        .split("<tr ")
        .find(|r| r.contains("data-ws=\"busy\""))
        .expect("busy's row");
    assert!(
        busy_row.contains("<meter"),
        "measured use is drawn: {busy_row}"
    );
    assert!(
        busy_row.contains(" / 256 MiB"),
        "beside what it is given: {busy_row}"
    );

    // So does `berth get`.
    let (code, shown, err) = c.berth(&c.admin_token, &["get", "busy"]).await;
    let uses = shown
        .lines()
        .find(|l| l.starts_with("Uses:"))
        .unwrap_or_default();
    assert!(
        code == 0 && uses.contains(" CPU, ") && uses.contains("disk (measured"),
        "{shown}{err}"
    );

    // Stopped, it uses nothing, and says nothing.
    let (s, _) = c.post("/v1/workspaces/busy/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("busy", "stopped", T).await;
    assert_eq!(usage(&c, "busy").await, Value::Null);
    c.finish().await;
}
