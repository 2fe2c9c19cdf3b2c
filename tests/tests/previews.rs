//! HTTP previews through the coordinator (`/w/{workspace}/{port}/…` and the
//! wildcard domain): a real HTTP and WebSocket server in a `dev` workspace
//! (tests/fixtures/preview_server.py), owner-only until made public, the
//! Berth token never forwarded, wake on connect.

use berth_tests::{Cluster, ClusterOptions};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_route_http_and_websockets_to_workspace_ports() {
    berth_tests::images(&["dev"]);
    let c = Cluster::start(ClusterOptions {
        coordinator_args: vec!["--preview-domain".into(), "preview.test".into()],
        ..Default::default()
    })
    .await;
    let image = format!("{}/dev:latest", c.registry.addr);
    let (s, w) = c
        .post(
            "/v1/workspaces",
            json!({"name": "app", "image": image, "cpu_millis": 500, "memory_bytes": 256u64 << 20,
                   "disk_bytes": 64u64 << 20, "pids": 256}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_string();
    c.wait_state("app", "running", Duration::from_secs(120))
        .await;
    let server =
        std::fs::read_to_string(berth_tests::repo_root().join("tests/fixtures/preview_server.py"))
            .unwrap();
    let start_server = json!({"argv": ["sh", "-c",
        "cat > /workspace/server.py && (setsid python3 /workspace/server.py 8000 </dev/null >/dev/null 2>&1 &)"],
        "stdin": server});
    let (s, out) = c
        .post("/v1/workspaces/app/exec", start_server.clone())
        .await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = c.api.clone();
    let admin = c.admin_token.clone();
    let get = |path: String, token: Option<String>, cookie: Option<String>| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let mut rb = http.get(format!("{base}{path}"));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some(c) = cookie {
                rb = rb.header("cookie", c);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let csp = r
                .headers()
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap().to_string());
            (status, r.text().await.unwrap(), csp)
        }
    };

    // The owner, by bearer token: the app sees its own path, no Berth token,
    // the prefix it is served under. The server may need a moment to listen.
    let body = berth_tests::eventually(Duration::from_secs(20), || async {
        let (s, b, _) = get("/w/app/8000/hello?x=1".into(), Some(admin.clone()), None).await;
        (s == 200).then_some(b)
    })
    .await
    .expect("the preview answers");
    assert_eq!(
        body,
        "path=/hello?x=1 auth=- cookie=- prefix=/w/app/8000 host=localhost:8000\n"
    );
    // By cookie (what /w/login sets); other cookies reach the app, Berth's does not.
    let (s, body, csp) = get(
        "/w/app/8000/".into(),
        None,
        Some(format!("theme=dark; berth_token={admin}")),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("cookie=theme=dark prefix"), "{body}");
    assert_eq!(csp, None, "the owner's own page is not sandboxed");
    // The app cannot set Berth's cookie (session fixation, signing visitors
    // out); its own cookies pass.
    let r = http
        .get(format!("{base}/w/app/8000/set-cookies"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=light; Path=/"], "only the app's own cookie");
    // The login page sets that cookie, HttpOnly, and sends back to the preview.
    let r = http
        .post(format!("{base}/w/login"))
        .form(&[("token", admin.as_str()), ("next", "/w/app/8000/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/w/app/8000/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with(&format!("berth_token={admin};")) && cookie.contains("HttpOnly"));
    let r = http
        .post(format!("{base}/w/login"))
        .form(&[("token", "bt_wrong_token"), ("next", "/w/app/8000/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Without the trailing slash: redirected to it.
    let (s, _, _) = get("/w/app/8000".into(), Some(admin.clone()), None).await;
    assert_eq!(s, 308);
    // The wildcard domain: {port}-{workspace}.{domain}, no prefix.
    let r = http
        .get(format!("{base}/deep/path"))
        .header("host", "8000-app.preview.test")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "path=/deep/path auth=- cookie=- prefix=- host=localhost:8000\n"
    );

    // A WebSocket through the preview: messages echo both ways.
    let req = c.ws_request("/w/app/8000/ws");
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    assert_eq!(resp.status().as_u16(), 101);
    for text in ["hello", &"x".repeat(5000)] {
        ws.send(Message::Text(text.into())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(got, Message::Text(text.into()));
    }
    ws.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got, Message::Binary(vec![0u8, 1, 2, 255].into()));
    ws.close(None).await.ok();
    // Many at once, all held open: each is its own stream to the node (the
    // QUIC default of 100 streams per connection would stall the 101st).
    let mut many = Vec::new();
    for _ in 0..150 {
        let req = c.ws_request("/w/app/8000/ws");
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(20),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .expect("150 WebSockets open at once")
        .expect("websocket");
        many.push(ws);
    }
    for (i, ws) in many.iter_mut().enumerate() {
        ws.send(Message::Text(format!("n{i}").into()))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(got, Message::Text(format!("n{i}").into()));
    }
    drop(many);

    // Refusals: no token (program → 401, browser → sign-in page), another
    // user, a private port by id, a bad port.
    let (s, _, _) = get(format!("/w/{id}/8000/"), None, None).await;
    assert_eq!(s, 401);
    let r = http
        .get(format!("{base}/w/{id}/8000/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/w/login?next=/w/"));
    let (s, bob) = c
        .post("/v1/tokens", json!({"user": "bob", "role": "member"}))
        .await;
    assert_eq!(s, 201, "{bob}");
    let bob = bob["token"].as_str().unwrap().to_string();
    let (s, b, _) = get("/w/app/8000/".into(), Some(bob.clone()), None).await;
    assert_eq!(s, 404, "bob has no workspace named app: {b}");
    let (s, b, _) = get(format!("/w/{id}/8000/"), Some(bob.clone()), None).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("not public"), "{b}");
    let (s, _, _) = get("/w/app/0/".into(), Some(admin.clone()), None).await;
    assert_eq!(s, 422);
    let (s, _, _) = get("/w/app/9/".into(), Some(admin.clone()), None).await;
    assert_eq!(s, 502, "nothing listens on port 9");
    // Made public: anyone with the link, sandboxed (an opaque origin).
    let (s, v) = c
        .send_json(
            reqwest::Method::PUT,
            "/v1/workspaces/app/ports/8000/visibility",
            json!({"public": true}),
        )
        .await;
    assert_eq!((s, v["public"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = c.get("/v1/workspaces/app/public-ports").await;
    assert_eq!((s, v), (200, json!([{"port": 8000, "public": true}])));
    for token in [None, Some(bob.clone())] {
        let (s, b, csp) = get(format!("/w/{id}/8000/x"), token, None).await;
        assert_eq!(s, 200, "{b}");
        assert!(
            csp.unwrap_or_default().starts_with("sandbox"),
            "sandboxed for others"
        );
    }
    let (s, _, _) = get(format!("/w/{id}/8001/"), None, None).await;
    assert_eq!(s, 401, "only the port made public");
    // Activity: the previews were counted.
    let (_, a) = c.get("/v1/workspaces/app/activity").await;
    let p = a["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "preview")
        .cloned()
        .unwrap_or_default();
    // Each preview request is its own connection: at least the six above.
    assert!(p["sessions"].as_u64().unwrap_or(0) >= 6, "{a}");
    assert!(
        p["bytes_in"].as_u64().unwrap_or(0) > 5000,
        "the 5,000-byte message: {a}"
    );

    // Wake on connect: a stopped workspace starts for the preview.
    let (s, _) = c.post("/v1/workspaces/app/stop", json!({})).await;
    assert_eq!(s, 202);
    c.wait_state("app", "stopped", Duration::from_secs(60))
        .await;
    // The server does not survive the stop; the preview starts the workspace
    // (502 until the server is started again).
    let (s, b, _) = get("/w/app/8000/".into(), Some(admin.clone()), None).await;
    assert_eq!(s, 502, "{b}");
    let (s, w) = c.get("/v1/workspaces/app").await;
    assert_eq!((s, w["state"].as_str()), (200, Some("running")));
    let (s, out) = c.post("/v1/workspaces/app/exec", start_server).await;
    assert_eq!((s, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let ok = berth_tests::eventually(Duration::from_secs(20), || async {
        let (s, _, _) = get("/w/app/8000/".into(), Some(admin.clone()), None).await;
        (s == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "the preview after the wake");
    c.finish().await;
}
