//! The API over HTTPS (rustls in the coordinator): plain HTTP on the port is
//! redirected, never served; answers carry HSTS. Everything keeps working
//! over it: the CLI, `berth login` pinning the cluster CA by its
//! fingerprint (never trusted on sight: without the fingerprint, or with
//! another, nothing is saved), OpenSSH through `berth ssh --stdio`,
//! port-forward, previews, and the web terminal in Chromium trusting the CA
//! (without it, Chromium refuses the page: the control). A client pinned to
//! another CA is refused. With a certificate from files: an expired one is
//! refused by clients, and a certificate swapped on disk is served to new
//! connections while connections already open keep working; a broken file
//! leaves the previous pair served.

use berth_tests::browser::Browser;
use berth_tests::cluster::ClusterOptions;
use berth_tests::Cluster;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(90);

/// `berth ARGS` with only `env` (and PATH, HOME): (exit, stdout, stderr).
async fn berth(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(berth_tests::cli_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CA (certificate PEM, and the issuer to sign with).
fn test_ca() -> (String, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), cert, key)
}

/// A certificate for 127.0.0.1 from `ca`, valid from `from` to `to` days
/// from now: (chain PEM, key PEM).
fn leaf(ca: &(String, rcgen::Certificate, rcgen::KeyPair), from: i64, to: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    let cert = p.signed_by(&key, &ca.1, &ca.2).unwrap();
    (format!("{}{}", cert.pem(), ca.0), key.serialize_pem())
}

/// The leaf certificate the server at `addr` presents to a new connection.
async fn presented(addr: &str) -> CertificateDer<'static> {
    let (cfg, seen) = berth_proto::tls::witness_tls();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let first = seen.lock().unwrap()[0].clone();
    first
}

/// A kept-alive HTTPS connection trusting `ca_pem`, for raw requests.
async fn connection(
    addr: &str,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(berth_proto::tls::pem_to_der(ca_pem).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(berth_proto::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// `GET /v1/whoami` on that connection: its status line.
async fn whoami_on(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    token: &str,
) -> String {
    let req = format!(
        "GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small: its head and a JSON body with Content-Length.
    while !String::from_utf8_lossy(&got).contains("\"role\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_cli_tunnels_and_terminal_work_over_https_only() {
    let c = Cluster::start(ClusterOptions {
        https: true,
        ..Default::default()
    })
    .await;
    let addr = c.api.trim_start_matches("https://").to_string();
    let ca_file = c.ca_file.clone().unwrap();
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();

    // Plain HTTP is sent to HTTPS, never served.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://{addr}/v1/whoami"))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://{addr}/v1/whoami").as_str()
    );
    // HTTPS answers carry HSTS.
    let (s, me) = c.get("/v1/whoami").await;
    assert_eq!((s, me["user"].as_str()), (200, Some("admin")));
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = https
        .get(format!("{}/w/login", c.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // The CLI: a workspace made and used.
    let (code, out, err) = c
        .berth(&c.admin_token, &["create", "box", "--image", &c.tiny()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    c.wait_state("box", "running", T).await;
    let (code, out, err) = c
        .berth(&c.admin_token, &["exec", "box", "--", "echo", "over-tls"])
        .await;
    assert_eq!((code, out.as_str()), (0, "over-tls\n"), "{err}");

    // berth login pins the CA by its fingerprint, and only so.
    let (ok, fp, err) = berth_tests::sh(&format!(
        "{} admin ca --data-dir {}/coord | head -1",
        berth_tests::coordinator_bin().display(),
        c.dir.display()
    ));
    assert!(ok, "{err}");
    let fp = fp.trim().to_string();
    assert_eq!(fp.len(), 64, "{fp}");
    let home = c.dir.join("login-home");
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join(".config/berth/config.toml");
    let url = c.api.clone();
    let login = |fingerprint: Option<&str>| {
        let mut args = vec!["login".to_string(), "--url".into(), url.clone()];
        args.extend(["--with-token".to_string(), c.admin_token.clone()]);
        if let Some(f) = fingerprint {
            args.extend(["--ca-fingerprint".to_string(), f.to_string()]);
        }
        let home = home.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            berth(&home, &[], &args).await
        }
    };
    let (code, _, err) = login(None).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("untrusted_ca") && err.contains(&fp),
        "shows the fingerprint it found: {err}"
    );
    assert!(!config.exists(), "nothing saved");
    let (code, _, err) = login(Some(&"0".repeat(64))).await;
    assert!(code == 1 && err.contains("ca_mismatch"), "{err}");
    assert!(!config.exists(), "nothing saved");
    let (code, out, err) = login(Some(&fp)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    // Pinned: later commands need nothing more.
    let (code, out, err) = berth(&home, &[], &["whoami"]).await;
    assert_eq!((code, out.as_str()), (0, "admin (admin)\n"), "{err}");
    // Another CA is refused, with its code, before any request is sent.
    let other = c.dir.join("other-ca.pem");
    std::fs::write(&other, test_ca().0).unwrap();
    let (code, _, err) = berth(
        &home,
        &[("BERTH_CA_FILE", other.to_str().unwrap())],
        &["whoami"],
    )
    .await;
    assert!(code == 1 && err.contains("bad_certificate"), "{err}");

    // OpenSSH through `berth ssh --stdio`.
    let dir = c.dir.join("ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id");
    berth_tests::openssh::keygen(&key);
    let pubkey = format!("{}.pub", key.display());
    let (code, _, err) = c.berth(&c.admin_token, &["ssh-key", "add", &pubkey]).await;
    assert_eq!(code, 0, "{err}");
    let ssh_config = dir.join("config");
    let (code, _, err) = c
        .berth(
            &c.admin_token,
            &["config-ssh", "--ssh-config", ssh_config.to_str().unwrap()],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let ssh = berth_tests::openssh::Client {
        home: dir.clone(),
        config: ssh_config,
        api: c.api.clone(),
    };
    let out = ssh
        .command(
            "ssh",
            &key,
            &c.admin_token,
            &["berth.box", "echo ssh-over-tls"],
        )
        .env("BERTH_CA_FILE", &ca_file)
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ssh-over-tls\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Port-forward and a preview of the same port.
    c.exec_ok(
        "box",
        "echo served-in-box > /workspace/index.html && httpd -p 0.0.0.0:8080 -h /workspace",
    )
    .await;
    let (mut pf, local) = c.port_forward("box", &["0:8080"]).await;
    let body = reqwest::get(format!("http://{}/index.html", local[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "served-in-box\n");
    pf.kill().await.ok();
    let (_, w) = c.get("/v1/workspaces/box").await;
    let preview = https
        .get(format!(
            "{}/w/{}/8080/index.html",
            c.api,
            w["id"].as_str().unwrap()
        ))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(preview.text().await.unwrap(), "served-in-box\n");

    // The web terminal in Chromium, trusting the cluster CA by its key.
    let (ok, spki, err) = berth_tests::sh(&format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | \
         openssl dgst -sha256 -binary | base64",
        ca_file.display()
    ));
    assert!(ok, "{err}");
    let flag = format!("--ignore-certificate-errors-spki-list={}", spki.trim());
    // The control: without it, Chromium refuses the page.
    let untrusting = Browser::start();
    let mut page = untrusting.page().await;
    page.goto(&format!("{}/w/login", c.api)).await;
    assert_eq!(
        page.eval("location.protocol").await,
        json!("chrome-error:"),
        "an untrusted certificate is refused"
    );
    drop(page);
    drop(untrusting);
    let browser = Browser::start_with(&[&flag]);
    let mut page = browser.page().await;
    page.sign_in(&c.api, &c.admin_token).await;
    page.goto(&format!("{}/w/box/terminal", c.api)).await;
    assert!(
        page.wait_for("window.berthConnected === true", Duration::from_secs(30))
            .await,
        "the terminal's WebSocket over TLS: {}",
        page.eval("location.href").await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    page.type_text("echo typed-over-tls > /workspace/t").await;
    page.enter().await;
    let seen = berth_tests::eventually(Duration::from_secs(15), || async {
        let (_, out) = c
            .post(
                "/v1/workspaces/box/exec",
                json!({"argv": ["cat", "/workspace/t"]}),
            )
            .await;
        (out["stdout"] == "typed-over-tls\n").then_some(())
    })
    .await;
    assert!(seen.is_some(), "typed in the terminal page");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_files_expire_and_swap_while_connections_stay() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key): (PathBuf, PathBuf) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    let ca = test_ca();
    let write = |(c, k): (String, String)| {
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
    };
    write(leaf(&ca, -1, 30));
    let c = Cluster::start(ClusterOptions {
        agents: 0,
        coordinator_args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    })
    .await;
    let addr = c.api.trim_start_matches("http://").to_string();
    let url = format!("https://{addr}");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.0).unwrap();
    let home = certs.path().join("home");
    let whoami = || {
        let (home, url, ca, token) = (
            home.clone(),
            url.clone(),
            ca_file.display().to_string(),
            c.admin_token.clone(),
        );
        async move {
            berth(
                &home,
                &[
                    ("BERTH_URL", &url),
                    ("BERTH_CA_FILE", &ca),
                    ("BERTH_TOKEN", &token),
                ],
                &["whoami"],
            )
            .await
        }
    };
    let (code, out, err) = whoami().await;
    assert_eq!((code, out.as_str()), (0, "admin (admin)\n"), "{err}");
    let first = presented(&addr).await;
    // A connection opened now, kept open through the swaps below.
    let mut kept = connection(&addr, &ca.0).await;
    assert_eq!(
        whoami_on(&mut kept, &c.admin_token).await,
        "HTTP/1.1 200 OK"
    );

    // An expired certificate goes live; clients refuse it.
    write(leaf(&ca, -10, -1));
    let changed = berth_tests::eventually(Duration::from_secs(10), || async {
        (presented(&addr).await != first).then_some(())
    })
    .await;
    assert!(changed.is_some(), "new connections get the new certificate");
    let (code, _, err) = whoami().await;
    assert!(
        code == 1 && err.contains("bad_certificate") && err.contains("xpired"),
        "{err}"
    );
    assert_eq!(
        whoami_on(&mut kept, &c.admin_token).await,
        "HTTP/1.1 200 OK",
        "the open connection keeps working"
    );

    // A valid one swapped in: served to new connections.
    write(leaf(&ca, -1, 30));
    let valid = berth_tests::eventually(Duration::from_secs(10), || async {
        let (code, out, _) = whoami().await;
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(valid.as_deref(), Some("admin (admin)\n"));
    let third = presented(&addr).await;
    // Broken files leave that one served.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(presented(&addr).await, third, "a broken file is not served");
    let (code, _, err) = whoami().await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        whoami_on(&mut kept, &c.admin_token).await,
        "HTTP/1.1 200 OK",
        "the first connection still works"
    );
    assert!(
        c.coordinator_log().contains("API certificate not reloaded"),
        "the broken file is logged"
    );
    // No node, nothing to clean; the harness's plain-HTTP client cannot
    // talk to this coordinator anyway.
    drop(c);
}
