//! The file API (`GET/PUT/DELETE/POST /v1/workspaces/{name}/files/…`) on
//! the real components, as an editor uses it and as an attacker would try
//! it: files are read and written as the workspace user inside the
//! workspace (a root-only file is refused; what is written is the user's);
//! two writers do not overwrite each other unseen (ETags, `If-Match`); and
//! nothing outside /workspace is reached: not by `..`, not through a
//! symlink (to /run/secrets, to /, through a parent directory), each probe
//! shown to read or write the same target where it is allowed. Oversize
//! uploads, an upload cut short, another user and a viewer (read, never
//! write) are refused with their codes and leave the files as they were.

use berth_tests::Cluster;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// One request as `token`: (status, headers, body).
async fn call(
    c: &Cluster,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, HeaderMap, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = reqwest::Client::new()
        .request(method, format!("{}{path}", c.api))
        .bearer_auth(token);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.expect("request");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.bytes().await.unwrap_or_default().to_vec())
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn etag(h: &HeaderMap) -> String {
    h.get("etag")
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `sh -c script` in `ws` as `token` (as root with `root`): (exit, output).
async fn sh(c: &Cluster, token: &str, ws: &str, script: &str, root: bool) -> (i64, String) {
    let mut body = json!({"argv": ["sh", "-c", script]});
    if root {
        body["user"] = json!("root");
    }
    let (s, out) = c
        .post_as(&format!("/v1/workspaces/{ws}/exec"), body, token)
        .await;
    assert_eq!(s, 200, "{script}: {out}");
    (
        out["exit_code"].as_i64().unwrap_or(-1),
        format!(
            "{}{}",
            out["stdout"].as_str().unwrap_or(""),
            out["stderr"].as_str().unwrap_or("")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_the_users_inside_workspace_and_nothing_outside() {
    let c = Cluster::start(Default::default()).await;
    let alice = c.member_token("alice").await;
    let bob = c.member_token("bob").await;
    let carol = c.member_token("carol").await;
    let secret = format!("sekrit-{:032x}", rand::random::<u128>());
    let (s, e) = c
        .send_json_as(
            "PUT",
            "/v1/secrets/TOKEN",
            json!({"value": secret, "kind": "file"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let (s, w) = c
        .post_as(
            "/v1/workspaces",
            json!({"name": "ed", "image": c.tiny(), "cpu_millis": 200, "memory_bytes": 64u64 << 20,
                   "disk_bytes": 96u64 << 20, "pids": 64}),
            &alice,
        )
        .await;
    assert_eq!(s, 201, "{w}");
    c.wait_state_as("ed", "running", T, &alice).await;
    let f = |p: &str| format!("/v1/workspaces/ed/files/{p}");

    // Create-only write, with its parent made; the file is the user's.
    let (s, h, b) = call(
        &c,
        "PUT",
        &f("src/main.rs"),
        &alice,
        &[("if-none-match", "*")],
        Some(b"fn main() {}\n".to_vec()),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v1 = etag(&h);
    assert_eq!(json_of(&b)["kind"], "file");
    assert_eq!(format!("\"{}\"", json_of(&b)["etag"].as_str().unwrap()), v1);
    let (code, out) = sh(
        &c,
        &alice,
        "ed",
        "cat /workspace/src/main.rs; stat -c '%u %g' /workspace/src/main.rs /workspace/src",
        false,
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "fn main() {}\n1000 1000\n1000 1000\n")
    );
    let (s, h, b) = call(&c, "GET", &f("src/main.rs"), &alice, &[], None).await;
    assert_eq!((s, b.as_slice()), (200, &b"fn main() {}\n"[..]));
    assert_eq!(etag(&h), v1);
    assert_eq!(h["content-type"], "application/octet-stream");
    let (s, _, b) = call(&c, "GET", "/v1/workspaces/ed/files", &alice, &[], None).await;
    assert_eq!(s, 200);
    let root = json_of(&b);
    assert!(
        root["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "src" && e["kind"] == "dir"),
        "{root}"
    );
    let (s, _, b) = call(
        &c,
        "PUT",
        &f("src/main.rs"),
        &alice,
        &[("if-none-match", "*")],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (409, Some("file_exists"))
    );

    // Two tabs: the second save of the first version is refused, and so is
    // a save after the file changed inside the workspace.
    let (s, h, _) = call(
        &c,
        "PUT",
        &f("src/main.rs"),
        &alice,
        &[("if-match", &v1)],
        Some(b"v2\n".to_vec()),
    )
    .await;
    assert_eq!(s, 200);
    let v2 = etag(&h);
    assert_ne!(v1, v2);
    let (s, _, b) = call(
        &c,
        "PUT",
        &f("src/main.rs"),
        &alice,
        &[("if-match", &v1)],
        Some(b"stale\n".to_vec()),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    sh(
        &c,
        &alice,
        "ed",
        "echo edited >> /workspace/src/main.rs",
        false,
    )
    .await;
    let (s, _, _) = call(
        &c,
        "PUT",
        &f("src/main.rs"),
        &alice,
        &[("if-match", &v2)],
        Some(b"stale\n".to_vec()),
    )
    .await;
    assert_eq!(s, 412, "a change made inside the workspace is seen");
    let (s, _, _) = call(
        &c,
        "DELETE",
        &f("src/main.rs"),
        &alice,
        &[("if-match", &v2)],
        None,
    )
    .await;
    assert_eq!(s, 412);
    let (_, out) = sh(&c, &alice, "ed", "cat /workspace/src/main.rs", false).await;
    assert_eq!(out, "v2\nedited\n");

    // `..` is refused before it reaches the node (sent with its slashes
    // percent-encoded, so the client's URL parser does not clean it away).
    for p in ["%2e%2e%2f%2e%2e%2fetc%2fpasswd", "src/x%2f..%2f..%2f..%2fx"] {
        for m in ["GET", "PUT", "DELETE"] {
            let (s, _, b) = call(&c, m, &f(p), &alice, &[], Some(b"x".to_vec())).await;
            assert_eq!(
                (s, json_of(&b)["code"].as_str()),
                (400, Some("invalid_path")),
                "{m} {p}"
            );
        }
    }

    // Symlinks out of /workspace: to the secrets, to /, to /etc, relative
    // and absolute; each target is readable (or writable) by the user
    // itself, the control.
    let (code, out) = sh(
        &c,
        &alice,
        "ed",
        "cd /workspace && ln -s /run/secrets sec && ln -s ../../etc/passwd pw && ln -s / top \
         && ln -s src/main.rs inside && cat /run/secrets/TOKEN && head -c 5 /etc/passwd \
         && touch /tmp/probe && echo ok",
        false,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&secret) && out.ends_with("ok\n"), "{out}");
    for p in ["sec/TOKEN", "pw", "top/etc/passwd", "top/run/secrets/TOKEN"] {
        let (s, _, b) = call(&c, "GET", &f(p), &alice, &[], None).await;
        assert_eq!(
            (s, json_of(&b)["code"].as_str()),
            (403, Some("outside_workspace")),
            "{p}"
        );
        assert!(!String::from_utf8_lossy(&b).contains(&secret));
    }
    let (s, _, b) = call(&c, "GET", &f("top"), &alice, &[], None).await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (403, Some("outside_workspace")),
        "listing /"
    );
    for (m, p) in [
        ("PUT", "top/tmp/evil"),
        ("PUT", "top/tmp/probe"),
        ("DELETE", "top/tmp/probe"),
    ] {
        let (s, _, b) = call(&c, m, &f(p), &alice, &[], Some(b"evil".to_vec())).await;
        assert_eq!(
            (s, json_of(&b)["code"].as_str()),
            (403, Some("outside_workspace")),
            "{m} {p}"
        );
    }
    let (s, _, b) = call(
        &c,
        "POST",
        &f("top/tmp/dir"),
        &alice,
        &[("content-type", "application/json")],
        Some(br#"{"action":"mkdir"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (403, Some("outside_workspace"))
    );
    let (code, out) = sh(
        &c,
        &alice,
        "ed",
        "test ! -e /tmp/evil && test ! -e /tmp/dir && test -e /tmp/probe && echo untouched",
        false,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "untouched\n"));
    // The control: a symlink that stays inside is followed.
    let (s, _, b) = call(&c, "GET", &f("inside"), &alice, &[], None).await;
    assert_eq!((s, b.as_slice()), (200, &b"v2\nedited\n"[..]));

    // As the user, not as root: a root-only file is refused, which root
    // inside reads (the control).
    let (code, _) = sh(
        &c,
        &alice,
        "ed",
        "echo root > /workspace/rootonly && chmod 600 /workspace/rootonly",
        true,
    )
    .await;
    assert_eq!(code, 0);
    let (s, _, b) = call(&c, "GET", &f("rootonly"), &alice, &[], None).await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (403, Some("file_denied"))
    );

    // Oversize: announced, or only found out while streaming; nothing is
    // left behind either way.
    // Announced: refused before a byte is read (so no client writes it all).
    let addr = c.api.trim_start_matches("http://").to_string();
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            f("big"),
            (64u64 << 20) + 1
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("file_too_large"),
        "{answer}"
    );
    // Found out while streaming, at the node.
    let big = vec![b'x'; (64 << 20) + 1];
    let stream = futures::stream::iter(
        big.chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = reqwest::Client::new()
        .put(format!("{}{}", c.api, f("big")))
        .bearer_auth(&alice)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "file_too_large");

    // An upload cut short leaves the file as it was.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\nContent-Length: 100000\r\n\r\ncut",
            f("src/main.rs")
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tcp);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, out) = sh(
        &c,
        &alice,
        "ed",
        "cat /workspace/src/main.rs; ls -a /workspace /workspace/src | grep -c berth-",
        false,
    )
    .await;
    assert_eq!(
        out, "v2\nedited\n0\n",
        "the file as it was, no temporary left"
    );

    // mkdir, rename (never over something), delete.
    let post = |p: &str, body: Value| {
        let (p, body) = (f(p), body.to_string().into_bytes());
        let c = &c;
        let alice = alice.clone();
        async move {
            call(
                c,
                "POST",
                &p,
                &alice,
                &[("content-type", "application/json")],
                Some(body),
            )
            .await
        }
    };
    assert_eq!(post("docs/notes", json!({"action": "mkdir"})).await.0, 200);
    let (s, _, b) = post(
        "src/main.rs",
        json!({"action": "rename", "to": "docs/main.rs"}),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["path"].as_str()),
        (200, Some("docs/main.rs"))
    );
    call(
        &c,
        "PUT",
        &f("src/other.rs"),
        &alice,
        &[],
        Some(b"o".to_vec()),
    )
    .await;
    let (s, _, b) = post(
        "src/other.rs",
        json!({"action": "rename", "to": "docs/main.rs"}),
    )
    .await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (409, Some("file_exists"))
    );
    let (s, _, b) = call(&c, "DELETE", &f("docs"), &alice, &[], None).await;
    assert_eq!((s, json_of(&b)["code"].as_str()), (409, Some("file_kind")));
    let (s, _, _) = call(&c, "DELETE", &f("docs?recursive=true"), &alice, &[], None).await;
    assert_eq!(s, 204);
    let (code, out) = sh(
        &c,
        &alice,
        "ed",
        "test ! -e /workspace/docs && cat /workspace/src/other.rs",
        false,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "o"));
    let (s, _, b) = call(&c, "GET", &f("docs/main.rs"), &alice, &[], None).await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (404, Some("file_not_found"))
    );

    // Another user reaches nothing; a viewer reads and changes nothing.
    let q = |p: &str| format!("{}?owner=alice", f(p));
    for m in ["GET", "PUT", "DELETE"] {
        let (s, _, _) = call(&c, m, &q("src/other.rs"), &bob, &[], Some(b"b".to_vec())).await;
        assert_eq!(s, 403, "bob {m}");
    }
    let (s, e) = c
        .send_json_as("PUT", "/v1/workspaces/ed/shares/carol", json!({}), &alice)
        .await;
    assert!(s == 200 || s == 201 || s == 204, "{e}");
    let (s, _, b) = call(&c, "GET", &q("src/other.rs"), &carol, &[], None).await;
    assert_eq!((s, b.as_slice()), (200, &b"o"[..]), "a viewer reads");
    for (m, p) in [
        ("PUT", "src/other.rs"),
        ("DELETE", "src/other.rs"),
        ("POST", "newdir"),
    ] {
        let (s, _, b) = call(
            &c,
            m,
            &q(p),
            &carol,
            &[("content-type", "application/json")],
            Some(br#"{"action":"mkdir"}"#.to_vec()),
        )
        .await;
        assert_eq!(s, 403, "viewer {m} {p}: {}", String::from_utf8_lossy(&b));
    }
    let (code, out) = sh(
        &c,
        &alice,
        "ed",
        "cat /workspace/src/other.rs && test ! -e /workspace/newdir",
        false,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "o"));

    // A JSON file's content is the workspace's: not copied into the audit log.
    let marker = format!("content-{:032x}", rand::random::<u128>());
    let (s, _, _) = call(
        &c,
        "PUT",
        &f("package.json"),
        &alice,
        &[("content-type", "application/json")],
        Some(json!({"name": marker}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, 200);
    let (s, audit) = c.get("/v1/admin/audit?limit=1000").await;
    assert_eq!(s, 200);
    let audit = audit.to_string();
    assert!(
        audit.contains("/files/package.json"),
        "the write is audited"
    );
    assert!(!audit.contains(&marker), "its content is not");

    // A stopped workspace's files are not reached, nor is it woken.
    let (s, e) = c.post_as("/v1/workspaces/ed/stop", json!({}), &alice).await;
    assert_eq!(s, 202, "{e}");
    c.wait_state_as("ed", "stopped", T, &alice).await;
    let (s, _, b) = call(&c, "GET", &f("src/other.rs"), &alice, &[], None).await;
    assert_eq!(
        (s, json_of(&b)["code"].as_str()),
        (409, Some("not_running"))
    );
    let (_, w) = c.get_as("/v1/workspaces/ed", &alice).await;
    assert_eq!(w["state"], "stopped");
    c.finish().await;
}
