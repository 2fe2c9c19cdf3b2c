//! The web terminal in headless Chromium (Debian's chromium): the page at
//! /w/{workspace}/terminal (xterm.js bundled into the coordinator) attaches
//! a shell in the workspace over the API's WebSocket; typing `echo hi`
//! shows `hi`. Also: the WebSocket from a program, resize, the refusals,
//! and wake on connect.

use berth_tests::browser::Browser;
use berth_tests::{Cluster, ClusterOptions};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SCREEN: &str = r#"(() => { const b = term.buffer.active; const out = [];
  for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); }
  return out.join("\n"); })()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_terminal_runs_a_shell_in_chromium() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let (s, w) = c.create("box").await;
    assert_eq!(s, 201, "{w}");
    c.wait_state("box", "running", Duration::from_secs(60))
        .await;

    let browser = Browser::start();
    let mut page = browser.page().await;
    // Signed in as the login page would: the HttpOnly cookie.
    page.sign_in(&c.api, &c.admin_token).await;
    page.call(
        "Page.navigate",
        json!({"url": format!("{}/w/box/terminal", c.api)}),
    )
    .await;
    let mut up = false;
    for _ in 0..150 {
        if page.eval("window.berthConnected === true").await == json!(true) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(up, "the page connected its WebSocket");
    // Wait for the prompt before typing.
    let mut screen = String::new();
    for _ in 0..100 {
        screen = page.eval(SCREEN).await.as_str().unwrap_or("").to_string();
        if screen.trim_end().ends_with('$') || screen.trim_end().ends_with('#') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.type_text("echo hi").await;
    page.enter().await;
    let mut seen = false;
    for _ in 0..100 {
        screen = page.eval(SCREEN).await.as_str().unwrap_or("").to_string();
        if screen.lines().any(|l| l.trim_end() == "hi") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "`hi` on the screen:\n{screen}");
    let (_, a) = c.get("/v1/workspaces/box/activity").await;
    let t = a["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "terminal")
        .cloned()
        .unwrap_or_default();
    assert_eq!(t["open"], json!(1), "{a}");
    assert!(
        t["bytes_in"].as_u64().unwrap_or(0) >= 8,
        "echo hi + Enter: {a}"
    );
    drop(page);
    drop(browser);

    // From a program, with the bearer token: resize, a command, its exit.
    let terminal = "/v1/workspaces/box/terminal?cols=100&rows=30";
    let (mut ws, _) = tokio_tungstenite::connect_async(c.ws_request(terminal))
        .await
        .expect("terminal WebSocket");
    ws.send(Message::Text(
        json!({"type": "resize", "cols": 77, "rows": 21})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(b"stty size; exit 3\r".to_vec().into()))
        .await
        .unwrap();
    let mut text = String::new();
    let mut exit = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match m {
            Message::Binary(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "exit" {
                    exit = v["code"].as_i64();
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(exit, Some(3), "{text}");
    assert!(text.contains("21 77"), "stty size after the resize: {text}");

    // Refusals: no token, the cookie from another origin, another user.
    let plain = reqwest::Client::new();
    let r = plain
        .get(format!("{}/v1/workspaces/box/terminal", c.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let mut req = c.ws_request(terminal);
    req.headers_mut().remove("authorization");
    req.headers_mut().insert(
        "cookie",
        format!("berth_token={}", c.admin_token).parse().unwrap(),
    );
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let e = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("cross-origin refused");
    assert!(format!("{e}").contains("403"), "{e}");
    let (s, bob) = c
        .post("/v1/tokens", json!({"user": "bob", "role": "member"}))
        .await;
    assert_eq!(s, 201);
    let r = plain
        .get(format!("{}/v1/workspaces/box/terminal?owner=admin", c.api))
        .bearer_auth(bob["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = plain
        .get(format!("{}/w/box/terminal", c.api))
        .send()
        .await
        .unwrap();
    assert!(
        r.url().path().starts_with("/w/login"),
        "the page asks to sign in"
    );

    // Wake on connect: a stopped workspace starts, with progress in the terminal.
    let (s, _) = c.post("/v1/workspaces/box/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("box", "stopped", Duration::from_secs(60))
        .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(c.ws_request(terminal))
        .await
        .expect("terminal WebSocket");
    ws.send(Message::Binary(b"echo wo''ke; exit\r".to_vec().into()))
        .await
        .unwrap();
    let mut text = String::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        match m {
            Message::Binary(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(text.contains("starting box"), "{text}");
    assert!(text.contains("woke"), "{text}");
    c.finish().await;
}

/// A WebSocket to `path` on the API as the holder of `token`.
async fn socket(
    c: &Cluster,
    path: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let mut req = c.ws_request(path);
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Reads binary frames from `ws` until their text contains `needle` (true),
/// or `wait` passes (false).
async fn sees<S>(ws: &mut S, needle: &str, wait: Duration) -> bool
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Binary(b) = m {
            seen.push_str(&String::from_utf8_lossy(&b));
            if seen.contains(needle) {
                return true;
            }
        }
    }
    false
}

/// Live terminal sharing: alice shares her terminal; carol (the workspace
/// is shared with her to read) watches it live and types only while alice
/// lets her; bob, who may not read the workspace, cannot join; each join is
/// in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_terminal_is_watched_live_and_typed_in_only_when_granted() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let alice = c.member_token("alice").await;
    let carol = c.member_token("carol").await;
    let bob = c.member_token("bob").await;
    let (s, w) = c
        .post_as(
            "/v1/workspaces",
            json!({"name": "pair", "image": c.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20,
                   "disk_bytes": 32u64 << 20, "pids": 64}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{w}");
    c.wait_state_as("pair", "running", Duration::from_secs(60), &alice)
        .await;
    let (s, e) = c
        .send_json_as("PUT", "/v1/workspaces/pair/shares/carol", json!({}), &alice)
        .await;
    assert!((200..300).contains(&s), "{e}");

    let mut owner = socket(&c, "/v1/workspaces/pair/terminal?share=true", &alice)
        .await
        .unwrap();
    let id = loop {
        match owner.next().await {
            Some(Ok(Message::Text(t))) => {
                let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                if m["type"] == "shared" {
                    break m["id"].as_str().unwrap().to_string();
                }
            }
            Some(Ok(_)) => {}
            other => panic!("no share id: {other:?}"),
        }
    };
    let share = format!("/v1/terminal-shares/{id}");
    let refused = socket(&c, &share, &bob).await.unwrap_err();
    assert!(refused.contains("403"), "bob may not watch: {refused}");
    assert!(socket(&c, "/v1/terminal-shares/00ff", &carol)
        .await
        .unwrap_err()
        .contains("404"));
    let mut viewer = socket(&c, &share, &carol).await.unwrap();

    // What alice runs, carol sees live.
    owner
        .send(Message::Binary(b"echo owner-$((6*7))\r".to_vec().into()))
        .await
        .unwrap();
    assert!(sees(&mut viewer, "owner-42", Duration::from_secs(10)).await);
    // Carol's keys do nothing until she is let type; then they run.
    let probe = |f: &str| format!("echo typed > /workspace/{f}\r").into_bytes();
    viewer
        .send(Message::Binary(probe("before").into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    owner
        .send(Message::Text(
            json!({"type": "grant", "user": "carol"}).to_string().into(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    viewer
        .send(Message::Binary(probe("granted").into()))
        .await
        .unwrap();
    assert!(
        sees(
            &mut viewer,
            "typed > /workspace/granted",
            Duration::from_secs(10)
        )
        .await
    );
    owner
        .send(Message::Text(json!({"type": "revoke"}).to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    viewer
        .send(Message::Binary(probe("revoked").into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, out) = c
        .post_as(
            "/v1/workspaces/pair/exec",
            json!({"argv": ["sh", "-c", "ls /workspace"]}),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        out["stdout"], "granted\n",
        "only the granted keys ran: {out}"
    );

    // The joins (and bob's refusal) are in the audit log.
    let (_, audit) = c.get("/v1/admin/audit?limit=1000").await;
    let joins: Vec<(String, i64)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"].as_str() == Some(share.as_str()))
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        joins,
        vec![("bob".to_string(), 403), ("carol".to_string(), 101)],
        "{audit}"
    );
    // The session ends with its owner's: the share goes with it.
    drop(owner);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(socket(&c, &share, &carol)
        .await
        .unwrap_err()
        .contains("404"));
    c.finish().await;
}
