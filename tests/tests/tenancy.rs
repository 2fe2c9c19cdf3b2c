//! No tenant reaches another through the API: a member can neither see,
//! run commands in, stop, start, delete nor connect to another member's
//! workspace (every door tried, with the owner going through the same door
//! as the control), and the event stream shows each member their own
//! workspaces only. From inside a workspace, the coordinator's ports are
//! closed (the node's agent reaching them is the control).

use berth_tests::{Cluster, ClusterOptions};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

// The dev image (node, npm, python) is pulled under the suite's load: minutes, not seconds.
const T: Duration = Duration::from_secs(180);

async fn token(c: &Cluster, user: &str) -> String {
    let (s, t) = c
        .post("/v1/tokens", json!({"user": user, "role": "member"}))
        .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// Reads the event stream as `token` until `until` is seen (or 20 s pass);
/// returns the names of the workspaces its events were about.
async fn events_until(c: &Cluster, token: &str, until: &str) -> Vec<String> {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/events", c.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let (mut text, mut names) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    names.push(v["name"].as_str().unwrap_or("").to_string());
                }
            }
        }
        if names.iter().any(|n| n == until) {
            break;
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_reach_only_their_own_workspaces() {
    berth_tests::images(&["dev"]);
    let c = Cluster::start(ClusterOptions::default()).await;
    let (alice, bob) = (token(&c, "alice").await, token(&c, "bob").await);
    let small = json!({"image": c.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20, "disk_bytes": 32u64 << 20});
    let with_name = |name: &str| {
        let mut b = small.clone();
        b["name"] = json!(name);
        b
    };
    // The event streams of both, opened before anything happens: alice
    // must see her workspace's events and none of bob's.
    let alice_events = {
        let (c, alice) = (&c, alice.clone());
        async move { events_until(c, &alice, "alices").await }
    };
    let work = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, w) = c.post_as("/v1/workspaces", with_name("bobs"), &bob).await;
        assert_eq!(s, 201, "{w}");
        c.wait_state_as("bobs", "running", T, &bob).await;
        // (the dev image: python3 for the probes below)
        let mut body = with_name("alices");
        body["image"] = json!(format!("{}/dev:latest", c.registry.addr));
        body["memory_bytes"] = json!(256u64 << 20);
        let (s, w) = c.post_as("/v1/workspaces", body, &alice).await;
        assert_eq!(s, 201, "{w}");
        c.wait_state_as("alices", "running", T, &alice).await;
    };
    let (seen, ()) = tokio::join!(alice_events, work);
    assert!(
        seen.iter().any(|n| n == "alices"),
        "control: alice's own events: {seen:?}"
    );
    assert!(
        !seen.iter().any(|n| n == "bobs"),
        "alice saw bob's events: {seen:?}"
    );

    // Every door to bob's workspace, as alice (404: she cannot even learn
    // it exists; 403 when she names its owner) and as bob (the control).
    let http = reqwest::Client::new();
    let doors: [(&str, &str, Option<Value>); 13] = [
        ("GET", "/v1/workspaces/bobs", None),
        (
            "POST",
            "/v1/workspaces/bobs/exec",
            Some(json!({"argv": ["true"]})),
        ),
        (
            "POST",
            "/v1/workspaces/bobs/exec/stream",
            Some(json!({"argv": ["true"]})),
        ),
        ("GET", "/v1/workspaces/bobs/activity", None),
        ("GET", "/v1/workspaces/bobs/ssh-host-key", None),
        ("GET", "/v1/workspaces/bobs/public-ports", None),
        (
            "PUT",
            "/v1/workspaces/bobs/ports/8080/visibility",
            Some(json!({"public": true})),
        ),
        ("GET", "/v1/workspaces/bobs/backups", None),
        ("POST", "/v1/workspaces/bobs/backups", Some(json!({}))),
        ("POST", "/v1/workspaces/bobs/restore", Some(json!({}))),
        ("POST", "/v1/workspaces/bobs/stop", Some(json!({}))),
        ("POST", "/v1/workspaces/bobs/start", Some(json!({}))),
        ("DELETE", "/v1/workspaces/bobs", None),
    ];
    for (method, path, body) in &doors {
        let send = |token: &str, path: String| {
            let mut r = http.request(method.parse().unwrap(), format!("{}{path}", c.api));
            if let Some(b) = body {
                r = r.json(b);
            }
            r.bearer_auth(token).send()
        };
        let r = send(&alice, path.to_string()).await.unwrap();
        let status = r.status().as_u16();
        let err: Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (status, err["code"].as_str()),
            (404, Some("not_found")),
            "alice: {method} {path}"
        );
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = send(&alice, format!("{path}{sep}owner=bob")).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            403,
            "alice naming bob: {method} {path}"
        );
        if *method == "DELETE" || path.ends_with("/stop") || path.ends_with("/restore") {
            // The control of these would end the test's workspace (a
            // restore needs it stopped: bob gets not_stopped).
            continue;
        }
        let r = send(&bob, path.to_string()).await.unwrap();
        assert!(
            r.status().is_success(),
            "control: bob {method} {path}: {}",
            r.status()
        );
    }
    // Tunnels: a port, SSH and the terminal.
    for (path, proto) in [
        ("/v1/workspaces/bobs/ports/8080", "berth-tcp"),
        ("/v1/workspaces/bobs/ssh", "berth-ssh"),
    ] {
        let r = http
            .get(format!("{}{path}", c.api))
            .header("connection", "upgrade")
            .header("upgrade", proto)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "alice: {path}");
    }
    let mut req = c.ws_request("/v1/workspaces/bobs/terminal");
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let e = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(
        e.to_string().contains("404"),
        "alice's terminal to bobs: {e}"
    );
    // Bob's workspace is untouched by all of it (it runs, nothing stopped it).
    let w = c.wait_state_as("bobs", "running", T, &bob).await;
    assert_eq!(w["desired"], "running");
    // Alice's list holds her workspace only; bob's his.
    let (_, mine) = c.get_as("/v1/workspaces", &alice).await;
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alices"]);

    // From inside a workspace, the coordinator's host (where agents reach
    // the link and the registry) is closed: the registry over TCP, and a UDP
    // echo beside the link's port; from the node's own namespace (where the
    // agent runs) both answer (the control).
    let udp = std::net::UdpSocket::bind(format!("{}:0", c.host_ip)).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    let py = |code: String| format!("python3 -c \"{code}\"");
    let probes = [
        py(format!(
            "import urllib.request; urllib.request.urlopen('http://{}/v2/', timeout=3); print('open')",
            c.registry.addr
        )),
        py(format!(
            "import socket; s=socket.socket(2,2); s.settimeout(2); s.sendto(b'udp-echo',('{}',{})); print(s.recv(64).decode())",
            udp_addr.ip(),
            udp_addr.port()
        )),
    ];
    for probe in &probes {
        let (_, out) = c
            .post_as(
                "/v1/workspaces/alices/exec",
                json!({"argv": ["sh", "-c", format!("{probe}; true")]}),
                &alice,
            )
            .await;
        assert_eq!(
            out["stdout"], "",
            "a workspace reached the coordinator's host: {probe}: {out}"
        );
        assert!(
            out["stderr"].as_str().unwrap_or("").contains("timed out"),
            "the probe ran and timed out: {out}"
        );
        let (_, got, err) = berth_tests::sh(&format!("ip netns exec {} {probe}", c.nodes[0].netns));
        assert!(
            got == "open\n" || got == "udp-echo\n",
            "control: the node's namespace: {probe}: {got:?} {err}"
        );
    }
    c.finish().await;
}
