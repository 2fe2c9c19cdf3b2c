//! Connections to a workspace's ports through the agent (`Connect`): dialled
//! inside the workspace's network namespace, so a server bound to 127.0.0.1
//! there is reachable, with its bytes relayed both ways; and the refusals.

use berth_agent::client::ClientError;
use berth_proto::agent as pb;
use berth_tests::{assert_clean, Node, NodeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sh_in(node: &Node, name: &str, script: &str) {
    let out = node
        .client()
        .await
        .exec(
            pb::ExecRequest {
                name: name.into(),
                argv: vec!["sh".into(), "-c".into(), script.into()],
                ..Default::default()
            },
            b"",
        )
        .await
        .expect("exec");
    assert_eq!(
        out.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn code(r: Result<tokio::net::UnixStream, ClientError>) -> String {
    match r {
        Err(ClientError::Agent(e)) => e.code,
        Err(e) => format!("{e}"),
        Ok(_) => "connected".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_reaches_a_loopback_server_in_the_workspace() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    node.create(node.spec("web")).await.expect("create");
    // busybox httpd daemonizes; bound to the workspace's own loopback only.
    sh_in(
        &node,
        "web",
        "echo hello-from-web > /workspace/index.html && httpd -p 127.0.0.1:8080 -h /workspace",
    )
    .await;

    let mut s = node
        .client()
        .await
        .connect_port("web", 8080)
        .await
        .expect("connect");
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("hello-from-web\n"), "{got}");

    // Many at once, each its own connection.
    let conns = (0..20).map(|_| async {
        let mut s = node.client().await.connect_port("web", 8080).await.unwrap();
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        got.ends_with("hello-from-web\n")
    });
    assert!(futures::future::join_all(conns)
        .await
        .into_iter()
        .all(|ok| ok));

    // Refusals, each with its code; the positive control above shows the path works.
    assert_eq!(
        code(node.client().await.connect_port("web", 8081).await),
        "port_closed"
    );
    assert_eq!(
        code(node.client().await.connect_port("web", 0).await),
        "invalid_request"
    );
    assert_eq!(
        code(node.client().await.connect_port("web", 70000).await),
        "invalid_request"
    );
    assert_eq!(
        code(node.client().await.connect_port("nope", 8080).await),
        "not_found"
    );
    node.stop("web").await.expect("stop");
    assert_eq!(
        code(node.client().await.connect_port("web", 8080).await),
        "conflict"
    );

    // The agent's own threads stay in the node's namespace: a dial never leaks.
    let agent = node.agent_pid().expect("agent pid");
    let own = std::fs::read_link(format!("/proc/{agent}/ns/net")).unwrap();
    for t in std::fs::read_dir(format!("/proc/{agent}/task")).unwrap() {
        let t = t.unwrap().path();
        if let Ok(ns) = std::fs::read_link(t.join("ns/net")) {
            assert_eq!(
                ns,
                own,
                "thread {} is in another network namespace",
                t.display()
            );
        }
    }
    node.delete("web").await.expect("delete");
    assert_clean(&node, &baseline);
}

/// `berth port-forward` → coordinator (HTTP upgrade) → QUIC stream → agent →
/// the workspace's loopback, and the refusals on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_through_the_coordinator() {
    use berth_tests::{Cluster, ClusterOptions};
    use serde_json::json;
    use tokio::io::AsyncBufReadExt;
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c.create("web").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("web", "running", std::time::Duration::from_secs(60))
        .await;
    let (s, out) = c
        .post(
            "/v1/workspaces/web/exec",
            json!({"argv": ["sh", "-c", "echo hello-through-berth > /workspace/index.html && httpd -p 127.0.0.1:8080 -h /workspace"]}),
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");

    let (mut pf, local) = c.port_forward("web", &["0:8080"]).await;
    let local = local[0].clone();
    let get = |local: String| async move {
        let mut s = tokio::net::TcpStream::connect(&local).await.unwrap();
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        got
    };
    let got = get(local.clone()).await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("hello-through-berth\n"), "{got}");
    let many = (0..10).map(|_| get(local.clone()));
    for got in futures::future::join_all(many).await {
        assert!(got.ends_with("hello-through-berth\n"), "{got}");
    }
    // 4 MiB each way survive the relays byte for byte.
    let (s, out) = c
        .post(
            "/v1/workspaces/web/exec",
            json!({"argv": ["sh", "-c", "head -c 4194304 /dev/urandom > /workspace/down.bin && sha256sum /workspace/down.bin && (nc -l -p 9000 > /workspace/up.bin &) && until cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':2328 [0-9A-F:]* 0A'; do sleep 0.05; done"]}),
        )
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let down_sum = out["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut s = tokio::net::TcpStream::connect(&local).await.unwrap();
    s.write_all(b"GET /down.bin HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), 4 << 20);
    let sum = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    assert_eq!(sum(body), down_sum, "download through the relays");
    let (mut pf2, local2) = c.port_forward("web", &["0:9000"]).await;
    let local2 = local2[0].clone();
    let upload: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut s = tokio::net::TcpStream::connect(&local2).await.unwrap();
    s.write_all(&upload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let want = sum(&upload);
    let uploaded = berth_tests::eventually(std::time::Duration::from_secs(10), || async {
        let (_, out) = c
            .post(
                "/v1/workspaces/web/exec",
                json!({"argv": ["sha256sum", "/workspace/up.bin"]}),
            )
            .await;
        out["stdout"].as_str()?.starts_with(&want).then_some(())
    })
    .await;
    assert!(uploaded.is_some(), "upload through the relays");
    pf2.kill().await.ok();
    pf.kill().await.ok();

    // The API: no upgrade asked, closed port, not your workspace, no token.
    let raw = reqwest::Client::new();
    let r = raw
        .get(format!("{}/v1/workspaces/web/ports/8080", c.api))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 426);
    let up = |port: u32, token: String| {
        raw.get(format!("{}/v1/workspaces/web/ports/{port}", c.api))
            .bearer_auth(token)
            .header("connection", "upgrade")
            .header("upgrade", "berth-tcp")
            .send()
    };
    let r = up(8081, c.admin_token.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "port_closed"
    );
    let r = up(70000, c.admin_token.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let (s, bob) = c
        .post("/v1/tokens", json!({"user": "bob", "role": "member"}))
        .await;
    assert_eq!(s, 201);
    let r = up(8080, bob["token"].as_str().unwrap().to_string())
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "bob cannot reach admin's workspace"
    );
    let r = up(8080, "bt_x_y".into()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Wake on connect, through the API: a stopped workspace is started and
    // the connection made once it runs (httpd started again by hand: a
    // restart runs the image's command only).
    c.post("/v1/workspaces/web/stop", json!({})).await;
    c.wait_state("web", "stopped", std::time::Duration::from_secs(30))
        .await;
    let r = up(8080, c.admin_token.clone()).await.unwrap();
    // Nothing listens on 8080 after the restart: the wake worked when the
    // answer is the agent's port_closed, not not_running.
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "port_closed"
    );
    let w = c
        .wait_state("web", "running", std::time::Duration::from_secs(5))
        .await;
    assert_eq!(w["desired"], "running");
    // And through the CLI, with progress: stopped → starting → running, then forwarding.
    c.post("/v1/workspaces/web/stop", json!({})).await;
    c.wait_state("web", "stopped", std::time::Duration::from_secs(30))
        .await;
    let mut pf = tokio::process::Command::new(berth_tests::cli_bin())
        .args(["port-forward", "web", "0:8080"])
        .env("BERTH_URL", &c.api)
        .env("BERTH_TOKEN", &c.admin_token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(pf.stdout.take().unwrap()).lines();
    let line = out.next_line().await.unwrap().expect("forwarding line");
    assert!(line.starts_with("Forwarding 127.0.0.1:"), "{line}");
    pf.kill().await.ok();
    let mut err = String::new();
    pf.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(err.contains("web: running"), "progress while waking: {err}");
    c.finish().await;
}
