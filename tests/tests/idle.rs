//! Idle detection and the idle policy end to end, on real workspaces: the
//! agent samples them every second, the coordinator's tier stops them
//! after 10 s of idleness with a warning 6 s before. A build with CPU and
//! no connection stays up; an SSH session under a terminal that only
//! exchanges keep-alives is warned in its terminal, then its workspace
//! stops; a keepalive holds one until it is ended; wake on start.

use berth_tests::{Cluster, ClusterOptions};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const T: Duration = Duration::from_secs(60);

async fn get(c: &Cluster, ws: &str) -> Value {
    c.get(&format!("/v1/workspaces/{ws}")).await.1
}

/// Waits until `ws`'s idle summary starts with `prefix`.
async fn wait_summary(c: &Cluster, ws: &str, prefix: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let w = get(c, ws).await;
        if w["idle"]["summary"]
            .as_str()
            .unwrap_or("")
            .starts_with(prefix)
        {
            return w;
        }
        assert!(Instant::now() < deadline, "{ws} never {prefix:?}: {w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workspaces_are_warned_then_stopped_and_busy_or_kept_ones_are_not() {
    let mut c = Cluster::start(ClusterOptions {
        idle_sample_seconds: 1,
        ..Default::default()
    })
    .await;
    let config = c.dir.join("coordinator.toml");
    std::fs::write(
        &config,
        "[[tiers]]\nname = \"small\"\ncpu_millis = 1000\nmemory = \"256MiB\"\ndisk = \"256MiB\"\n\
         idle_timeout_seconds = 10\nidle_warning_seconds = 6\nmax_keepalive_seconds = 120\n\
         max_idle_timeout_seconds = 120\n",
    )
    .unwrap();
    c.kill_coordinator();
    c.set_coordinator_args(vec!["--config".into(), config.display().to_string()]);
    c.start_coordinator();

    for name in ["quiet", "build", "kept", "term", "long"] {
        let (s, w) = c.create(name).await;
        assert_eq!(s, 201, "{w}");
    }
    for name in ["quiet", "build", "kept", "term", "long"] {
        c.wait_state(name, "running", T).await;
    }
    let started = Instant::now();
    // A build: a process using CPU, nobody connected.
    c.exec_ok(
        "build",
        "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & echo $! > /workspace/busy.pid",
    )
    .await;
    // A keepalive beyond the tier's maximum is refused; within, it holds.
    let (code, _, err) = c
        .berth(&c.admin_token, &["keepalive", "kept", "--for", "1h"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("keepalive_too_long"), "{err}");
    let (code, out, err) = c
        .berth(&c.admin_token, &["keepalive", "kept", "--for", "100s"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept running for"), "{out}");
    // Its own idle timeout: past the tier's bound refused; within, it holds.
    let (code, _, err) = c
        .berth(&c.admin_token, &["idle-timeout", "long", "3m"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("idle_timeout_out_of_bounds"), "{err}");
    let (code, out, err) = c
        .berth(&c.admin_token, &["idle-timeout", "long", "2m"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stops after 2m"), "{out}");
    assert_eq!(get(&c, "long").await["idle"]["timeout_seconds"], 120);

    // An SSH session under a terminal that nobody types in: keep-alives
    // every second are not use.
    let dir = c.dir.join("ssh-idle");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    berth_tests::openssh::keygen(&key);
    let pubkey = format!("{}.pub", key.display());
    let (code, out, err) = c.berth(&c.admin_token, &["ssh-key", "add", &pubkey]).await;
    assert_eq!(code, 0, "{out}{err}");
    let ssh_config = dir.join("config");
    let (code, out, err) = c
        .berth(
            &c.admin_token,
            &["config-ssh", "--ssh-config", ssh_config.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let ssh = berth_tests::openssh::Client {
        home: dir.clone(),
        config: ssh_config,
        api: c.api.clone(),
    };
    let mut session = ssh
        .command(
            "ssh",
            &key,
            &c.admin_token,
            &["-tt", "-o", "ServerAliveInterval=1", "berth.term", "cat"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = session.stdout.take().unwrap();
    let _stdin = session.stdin.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    });

    // The quiet one stops by itself, not before its timeout, and says why.
    let w = c.wait_state("quiet", "stopped", T).await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "stopped too early"
    );
    let reason = w["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("idle for"), "{w}");
    let (_, out, _) = c.berth(&c.admin_token, &["get", "quiet"]).await;
    assert!(out.contains("idle for"), "{out}");
    // As idle, under its own 2 min: still running.
    let w = get(&c, "long").await;
    assert_eq!(w["state"], "running", "{w}");

    // The terminal session sees the warning before its workspace stops.
    c.wait_state("term", "stopped", T).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the session ends with its workspace")
        .unwrap();
    assert!(
        seen.contains("berth: workspace term is idle for") && seen.contains("berth keepalive term"),
        "no warning in the session: {seen:?}"
    );
    let _ = session.kill().await;

    // Well past the timeout, the build and the kept one still run; the API
    // and `berth get` say why.
    assert!(started.elapsed() >= Duration::from_secs(12));
    let w = wait_summary(&c, "build", "awake: cpu").await;
    assert_eq!(w["state"], "running", "{w}");
    let (_, out, _) = c.berth(&c.admin_token, &["get", "build"]).await;
    assert!(
        out.contains("Activity:") && out.contains("awake: cpu"),
        "{out}"
    );
    let w = get(&c, "kept").await;
    assert_eq!(w["state"], "running", "{w}");
    assert!(w["idle"]["keepalive_until_ms"].as_i64().is_some(), "{w}");
    assert!(
        w["idle"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("idle for"),
        "{w}"
    );

    // Ending the keepalive and the build lets both stop.
    let (code, out, err) = c
        .berth(&c.admin_token, &["keepalive", "kept", "--for", "0s"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    c.exec_ok("build", "kill $(cat /workspace/busy.pid)").await;
    c.wait_state("kept", "stopped", T).await;
    c.wait_state("build", "stopped", T).await;

    // Started again, it is awake on a fresh verdict, not stopped at once on
    // its last run's.
    let (code, out, err) = c.berth(&c.admin_token, &["start", "quiet"]).await;
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = get(&c, "quiet").await;
    assert_eq!(w["state"], "running", "{w}");
    assert_eq!(w["reason"], Value::Null, "{w}");
}
