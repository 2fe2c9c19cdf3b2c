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
    page.call(
        "Network.setCookie",
        json!({"name": "berth_token", "value": c.admin_token, "url": c.api, "httpOnly": true}),
    )
    .await;
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
