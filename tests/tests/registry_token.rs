//! Pulling from a registry that uses Bearer-token auth (Docker Hub, GHCR and
//! Harbor do): the real docker-registry in token mode, trusting a key whose
//! tokens a small token endpoint in this test hands out for good credentials.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use berth_proto::agent::{self as pb, request::Command, response::Result as R};
use berth_tests::{assert_clean, sh, Node, NodeOptions, Registry};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "berth";
const PASSWORD: &str = "t0ken-s3cret";
const SERVICE: &str = "berth-registry";
const ISSUER: &str = "berth-test-issuer";

/// An RS256 JWT granting pull on `repo`, signed with `key`, carrying `cert` (x5c).
fn mint(dir: &Path, repo: &str) -> String {
    let der = std::fs::read(dir.join("cert.der")).unwrap();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now - 60,
        "jti": format!("{now}"), "access": [{"type": "repository", "name": repo, "actions": ["pull"]}]
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    std::fs::write(dir.join("input"), &input).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("key.pem"))
        .arg(dir.join("input"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}

/// Answers GET /token: 401 without the right Basic credentials, 403 for a
/// scope other than pulling `tiny`, else a token. Counts what it issued.
async fn token_server(
    listener: tokio::net::TcpListener,
    token: String,
    issued: std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    let good = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        let authorized = req.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == good
        });
        let scoped = req.lines().next().is_some_and(|l| {
            l.contains("scope=repository%3Atiny%3Apull")
                && l.contains(&format!("service={SERVICE}"))
        });
        let (status, body) = match (authorized, scoped) {
            (false, _) => ("401 Unauthorized", String::from("{}")),
            (true, false) => ("403 Forbidden", String::from("{}")),
            (true, true) => {
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (
                    "200 OK",
                    serde_json::json!({"token": token, "access_token": token}).to_string(),
                )
            }
        };
        let resp = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = s.write_all(resp.as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_through_bearer_token_auth() {
    let mut node = Node::new(NodeOptions::default());
    node.start_agent().await;
    let baseline = berth_tests::clean::nft_rules(&node.nft_table);
    let dir = node.dir.join("token");
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, _, err) = sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -subj /CN=berth-token -days 1 2>&1 && \
         openssl x509 -in cert.pem -outform DER -out cert.der",
        d = dir.display()
    ));
    assert!(ok, "{err}");
    let token = mint(&dir, "tiny");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    tokio::spawn(token_server(listener, token, issued.clone()));
    let auth = format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        dir.join("cert.pem").display()
    );
    let registry = Registry::start_with_auth(&berth_tests::images(&["tiny"]), &auth, &dir);
    let image = format!("{}/tiny:latest", registry.addr);
    let pull = |auth: Option<pb::RegistryAuth>| {
        let (node, image) = (&node, image.clone());
        async move {
            node.call(Command::Pull(pb::PullRequest { image, auth }))
                .await
        }
    };

    // No or wrong credentials: the token endpoint refuses, so does the agent.
    assert_eq!(
        pull(None).await.unwrap_err().code(),
        Some("registry_unauthorized")
    );
    let wrong = pb::RegistryAuth {
        username: USER.into(),
        password: "nope".into(),
    };
    assert_eq!(
        pull(Some(wrong)).await.unwrap_err().code(),
        Some("registry_unauthorized")
    );
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The right ones: a token for the right scope, then a verified pull.
    let right = pb::RegistryAuth {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    match pull(Some(right.clone()))
        .await
        .expect("pull with a bearer token")
    {
        R::Pulled(p) => assert_eq!((p.layers_fetched, p.layers_present), (2, 0)),
        other => panic!("{other:?}"),
    }
    assert!(issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // And a workspace from it runs.
    let mut spec = node.spec("tok");
    spec.image = image.clone();
    let st = node
        .client()
        .await
        .status_call(Command::Create(pb::CreateRequest {
            spec: Some(spec),
            auth: Some(right),
            start: true,
            restore: None,
            secrets: None,
        }))
        .await
        .unwrap();
    assert_eq!(st.state, pb::State::Running as i32);
    node.delete("tok").await.unwrap();
    assert_clean(&node, &baseline);
}
