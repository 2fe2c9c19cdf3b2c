//! A git server for the tests: Git's own `git http-backend` (smart HTTP,
//! fetch and push) behind a small HTTP server with Basic authentication for
//! the repositories marked private, bound to an address the test chooses
//! and run on a thread of its own. Repositories are made by the tests from
//! files, with the `git` of this machine. It records every request (path,
//! user, whether it was let in) for the tests to check.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub user: Option<String>,
    pub allowed: bool,
}

#[derive(Default)]
struct Shared {
    /// repository name → (user, token) it requires.
    private: HashMap<String, (String, String)>,
    seen: Vec<Seen>,
}

/// A running git server.
pub struct GitServer {
    /// `http://ADDR:PORT`
    pub url: String,
    pub root: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for GitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServer").field("url", &self.url).finish()
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Berth Test",
            "-c",
            "user.email=test@berth.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `files` under `dir`; a text `symlink:TARGET` makes a link.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        match text.strip_prefix("symlink:") {
            Some(target) => std::os::unix::fs::symlink(target, &p).expect("a repository link"),
            None => std::fs::write(&p, text).expect("write a repository file"),
        }
    }
}

impl GitServer {
    /// Serves the repositories under `root` on `ip` (a free port).
    pub fn start(ip: &str, root: &Path) -> Self {
        std::fs::create_dir_all(root).expect("mkdir git root");
        let std_listener = std::net::TcpListener::bind((ip, 0)).expect("bind the git server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (root2, shared2) = (root.to_path_buf(), shared.clone());
        std::thread::Builder::new()
            .name("git-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("git server runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("listener");
                    let serve = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let (root, shared) = (root2.clone(), shared2.clone());
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    handle(root.clone(), shared.clone(), req)
                                });
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(io, svc)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the git server");
        Self {
            url: format!("http://{addr}"),
            root: root.to_path_buf(),
            shared,
            stop: Some(stop),
        }
    }

    /// Makes repository `name` (`name.git`) from `files`, one commit on
    /// `main`; returns its URL.
    pub fn repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        let work = self.root.join(format!("{name}.work"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("mkdir work tree");
        git(&work, &["init", "-q"]);
        write_files(&work, files);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let bare = self.root.join(format!("{name}.git"));
        let _ = std::fs::remove_dir_all(&bare);
        git(
            &self.root,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        git(&bare, &["config", "http.receivepack", "true"]);
        git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        format!("{}/{name}.git", self.url)
    }

    /// Adds a commit with `files` to `branch` of repository `name` (made
    /// from `main` if new); returns the commit.
    pub fn commit(&self, name: &str, branch: &str, files: &[(&str, &str)]) -> String {
        let work = self.root.join(format!("{name}.work"));
        let bare = self.root.join(format!("{name}.git"));
        git(
            &work,
            &[
                "fetch",
                "-q",
                bare.to_str().unwrap(),
                "+refs/heads/*:refs/remotes/up/*",
            ],
        );
        let exists = Command::new("git")
            .arg("-C")
            .arg(&work)
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/remotes/up/{branch}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        let start = if exists {
            format!("up/{branch}")
        } else {
            "up/main".into()
        };
        git(&work, &["checkout", "-q", "-B", branch, &start]);
        write_files(&work, files);
        git(&work, &["add", "-A"]);
        git(
            &work,
            &["commit", "-q", "-m", &format!("change on {branch}")],
        );
        git(
            &work,
            &[
                "push",
                "-q",
                bare.to_str().unwrap(),
                &format!("{branch}:{branch}"),
            ],
        );
        let out = Command::new("git")
            .arg("-C")
            .arg(&work)
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("rev-parse");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Repository `name` answers only to `user` with `token`.
    pub fn private(&self, name: &str, user: &str, token: &str) {
        self.shared
            .lock()
            .unwrap()
            .private
            .insert(name.into(), (user.into(), token.into()));
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = status;
    r
}

/// The user and password of a Basic `Authorization` header.
fn basic(req: &Request<Incoming>) -> Option<(String, String)> {
    use base64::Engine;
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let b = h.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.into(), p.into()))
}

async fn handle(
    root: PathBuf,
    shared: Arc<Mutex<Shared>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let repo = path
        .trim_start_matches('/')
        .split(".git")
        .next()
        .unwrap_or("")
        .to_string();
    let creds = basic(&req);
    let needed = shared.lock().unwrap().private.get(&repo).cloned();
    let allowed = match &needed {
        None => true,
        Some((u, t)) => creds.as_ref().is_some_and(|(cu, ct)| cu == u && ct == t),
    };
    shared.lock().unwrap().seen.push(Seen {
        path: path.clone(),
        user: creds.as_ref().map(|c| c.0.clone()),
        allowed,
    });
    if !allowed {
        let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return Ok(r);
    }
    Ok(cgi(&root, req, creds.map(|c| c.0)).await)
}

/// Runs `git http-backend` for one request (CGI).
async fn cgi(root: &Path, req: Request<Incoming>, user: Option<String>) -> Response<Full<Bytes>> {
    use tokio::io::AsyncWriteExt;
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad body"),
    };
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(u) = user {
        cmd.env("REMOTE_USER", u);
    }
    let Ok(mut child) = cmd.spawn() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no git http-backend");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(out) = child.wait_with_output().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed");
    };
    // CGI output: headers, a blank line, the body.
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &String::from_utf8_lossy(&out.stderr),
        );
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&raw[body_start..])));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse().ok());
            if let Some(s) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *resp.status_mut() = s;
            }
        } else if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A cluster whose tiers ("small", 512 MiB of disk, and "tiny", 32 MiB)
/// may reach the bridge address where the git server listens, whose default
/// image is `dev`; the git server; the directory of the coordinator's
/// configuration.
pub async fn repo_cluster() -> (crate::Cluster, GitServer, tempfile::TempDir) {
    repo_cluster_with(crate::ClusterOptions::default(), |_| String::new()).await
}

/// `repo_cluster` with `opts`, and `extra` (given the started cluster)
/// appended to the coordinator's configuration.
pub async fn repo_cluster_with(
    opts: crate::ClusterOptions,
    extra: impl Fn(&crate::Cluster) -> String,
) -> (crate::Cluster, GitServer, tempfile::TempDir) {
    crate::images(&["dev"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = crate::Cluster::start(opts).await;
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[[tiers]]\nname = \"small\"\ncpu_millis = 1000\nmemory = \"1GiB\"\ndisk = \"512MiB\"\n\
             egress_allow = [\"{ip}/32\"]\n\n\
             [[tiers]]\nname = \"tiny\"\ncpu_millis = 500\nmemory = \"256MiB\"\ndisk = \"32MiB\"\n\
             egress_allow = [\"{ip}/32\"]\n{extra}",
            ip = c.host_ip,
            extra = extra(&c),
        ),
    )
    .expect("write the coordinator configuration");
    c.kill_coordinator();
    c.set_coordinator_args(vec![
        "--config".into(),
        config.display().to_string(),
        "--default-image".into(),
        format!("{}/dev:latest", c.registry.addr),
    ]);
    c.start_coordinator();
    let git = GitServer::start(&c.host_ip, &c.dir.join("git"));
    (c, git, dir)
}

/// POSTs a git webhook with `headers` to the cluster: (status, answer).
pub async fn webhook(
    c: &crate::Cluster,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/git", c.api))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("webhook");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn github_signature(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    m.update(body.as_bytes());
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}
