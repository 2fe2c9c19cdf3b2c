//! TEST-PLAN 13 (in part) and what a user's mistakes get: a member trying
//! to exhaust the coordinator gets a bounded answer or a clear error, and
//! the coordinator's memory stays bounded (measured); a command past its
//! timeout is killed and leaves nothing behind; a command that cannot run is
//! the user's error, not the node's.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Whether a `sleep 313` runs anywhere on the node.
fn sleeps_313() -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00313\x00"))
}

/// Sends `head` to the API and returns what comes back before it closes
/// (or within 5 s).
async fn raw_http(api: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(api.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn rss_mib(pid: u32) -> u64 {
    (berth_tests::bench::rss_kib(pid) / 1024.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_output_timeouts_and_mistakes_are_bounded() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c.create("box").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("box", "running", T).await;
    let exec = |body: serde_json::Value| c.post("/v1/workspaces/box/exec", body);

    // 256 MiB of NUL bytes: the answer is cut at 1 MiB per stream and says
    // so; the coordinator's memory does not follow the output.
    let pid = c.coordinator_pid().expect("coordinator runs");
    let before = rss_mib(pid);
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..600 {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let (s, out) = exec(json!({"argv": ["sh", "-c", "head -c 268435456 /dev/zero; echo done >&2"], "timeout_seconds": 120})).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(out["stderr"], "done\n", "the command ran to its end");
    sampler.abort();
    let after = rss_mib(pid);
    assert!(
        after < before + 64,
        "coordinator RSS {before} MiB before, {after} MiB after 256 MiB of output"
    );
    // A small answer is whole (control).
    let (_, out) = exec(json!({"argv": ["echo", "hi"]})).await;
    assert_eq!(
        (&out["stdout"], &out["truncated"]),
        (&json!("hi\n"), &json!(false))
    );

    // Past its timeout, the command is killed and its FIFOs are gone: seen
    // on the node, where it runs (control) and then does not.
    let t0 = Instant::now();
    let timed = exec(json!({"argv": ["sleep", "313"], "timeout_seconds": 2}));
    let watch = async {
        let seen = berth_tests::eventually(Duration::from_secs(2), || async {
            sleeps_313().then_some(())
        })
        .await;
        assert!(seen.is_some(), "control: sleep 313 runs on the node");
    };
    let ((s, out), ()) = tokio::join!(timed, watch);
    assert_eq!(
        (s, out["code"].as_str()),
        (504, Some("exec_timeout")),
        "{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    let gone = berth_tests::eventually(Duration::from_secs(10), || async {
        (!sleeps_313()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "sleep 313 still runs after its timeout");
    let exec_dir = c.nodes[0].state_dir.join("exec");
    let left = berth_tests::eventually(Duration::from_secs(5), || async {
        let n = std::fs::read_dir(&exec_dir).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "exec FIFO dirs left: {:?}",
        std::fs::read_dir(&exec_dir).map(|d| d.count())
    );

    // The user's mistakes: a missing command exits 127 as in a shell; a
    // missing working directory is a bad request; neither is a node error.
    let (s, out) = exec(json!({"argv": ["nosuchcmd"]})).await;
    assert_eq!((s, &out["exit_code"]), (200, &json!(127)), "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("nosuchcmd: command not found"),
        "{out}"
    );
    let (s, out) = exec(json!({"argv": ["pwd"], "cwd": "/nope"})).await;
    assert_eq!(
        (s, out["code"].as_str()),
        (422, Some("invalid_command")),
        "{out}"
    );
    let (_, out) = exec(json!({"argv": ["pwd"], "cwd": "/tmp"})).await;
    assert_eq!(out["stdout"], "/tmp\n", "control: a directory that exists");

    // Bodies: 10 MB is 413, a wrong method is a JSON 405.
    // (As curl sends a large body: announced, sent after "100 Continue".)
    let answer = raw_http(
        &c.api,
        &format!(
            "POST /v1/workspaces/box/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            c.admin_token,
            10 << 20
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"body_too_large\""), "{answer}");
    let r = reqwest::Client::new()
        .put(format!("{}/v1/workspaces/box/exec", c.api))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    c.finish().await;
}

/// A registry the node cannot reach: the reason shows while the agent tries,
/// and the workspace fails with `registry_unreachable` after the coordinator's
/// `--registry-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_registry_is_shown_then_fails() {
    let c = Cluster::start(ClusterOptions {
        coordinator_args: vec!["--registry-timeout".into(), "4s".into()],
        ..Default::default()
    })
    .await;
    let (s, w) = c
        .post(
            "/v1/workspaces",
            json!({"name": "far", "image": "127.0.0.1:1/tiny:latest", "cpu_millis": 100,
                   "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20, "pids": 64}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let shown = berth_tests::eventually(Duration::from_secs(4), || async {
        let (_, w) = c.get("/v1/workspaces/far").await;
        let reason = w["reason"].as_str().unwrap_or("").to_string();
        (w["state"] == "scheduled" && reason.starts_with("registry_unreachable")).then_some(w)
    })
    .await;
    assert!(shown.is_some(), "{}", c.get("/v1/workspaces/far").await.1);
    let w = c.wait_state("far", "failed", T).await;
    assert!(
        w["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("registry_unreachable"),
        "{w}"
    );
    c.finish().await;
}
