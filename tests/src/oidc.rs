//! An OpenID Connect provider for the tests: oidc-provider-mock (PyPI,
//! pinned, its virtualenv cached by `scripts/oidc-provider.sh`), a real
//! provider (discovery, authorization code with PKCE, RS256 ID tokens,
//! JWKS) on loopback; and a tampering proxy in front of it, which the
//! coordinator is given as the issuer, to make what an attacker or a broken
//! provider would: an ID token from another issuer, one whose signature
//! does not hold, and (from a second provider, whose tokens last a
//! second) one that arrives expired.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// One provider process; killed when dropped.
pub struct Provider {
    pub addr: String,
    child: Child,
}

impl Provider {
    /// Starts one on 127.0.0.1 whose tokens last `max_age_seconds`.
    pub fn start(max_age_seconds: i64, log: &std::path::Path) -> Self {
        let port = crate::process::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/oidc-provider.sh");
        let log = std::fs::File::create(log).expect("provider log");
        let child = Command::new(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(format!("--token-max-age={max_age_seconds}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oidc-provider-mock (scripts/oidc-provider.sh)");
        crate::process::wait_listening(None, port);
        Self {
            addr: format!("127.0.0.1:{port}"),
            child,
        }
    }

    /// Sets the claims the provider gives user `sub`.
    pub async fn set_user(&self, sub: &str, claims: serde_json::Value) {
        let r = reqwest::Client::new()
            .put(format!("http://{}/users/{sub}", self.addr))
            .json(&claims)
            .send()
            .await
            .expect("PUT /users");
        assert_eq!(r.status().as_u16(), 204, "set user {sub}");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to what passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Nothing: the provider as it is, at the proxy's address.
    None,
    /// The token endpoint is asked with the provider's own address, so the
    /// ID token it signs names another issuer than discovery does.
    WrongIssuer,
    /// The ID token's signature has one byte changed.
    BadSignature,
    /// The token endpoint's answer is held 2.5 s (from a provider whose
    /// tokens last a second, it arrives expired).
    Late,
}

/// An HTTP proxy on 127.0.0.1 to a provider: every request goes upstream
/// with the proxy's own host (so the provider's URLs and issuer are the
/// proxy's), and comes back as `Tamper` says.
pub struct Proxy {
    pub addr: String,
    state: Arc<Mutex<(String, Tamper)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Call in a Tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OIDC proxy");
        let addr = listener.local_addr().expect("local addr").to_string();
        let state = Arc::new(Mutex::new((upstream.to_string(), Tamper::None)));
        let shared = (state.clone(), addr.clone());
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// Sends what follows to `upstream`, tampered with as `t` says.
    pub fn set(&self, upstream: &str, t: Tamper) {
        *self.state.lock().unwrap() = (upstream.to_string(), t);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = (Arc<Mutex<(String, Tamper)>>, String);

async fn forward(
    axum::extract::State((state, me)): axum::extract::State<Shared>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (upstream, tamper) = state.lock().unwrap().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let is_token = req.uri().path() == "/oauth2/token";
    let host = match (is_token, tamper) {
        (true, Tamper::WrongIssuer) => upstream.clone(),
        _ => me,
    };
    let method = req.method().clone();
    let mut headers = req.headers().clone();
    headers.remove(axum::http::header::HOST);
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .request(method, format!("http://{upstream}{path}"))
        .headers(headers)
        .header(reqwest::header::HOST, host)
        .body(body)
        .send()
        .await;
    let Ok(r) = r else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = r.status();
    let mut out = axum::http::HeaderMap::new();
    for (k, v) in r.headers() {
        if k != reqwest::header::CONTENT_LENGTH && k != reqwest::header::TRANSFER_ENCODING {
            out.insert(k.clone(), v.clone());
        }
    }
    let mut bytes = r.bytes().await.unwrap_or_default().to_vec();
    if is_token && tamper == Tamper::Late {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    }
    if is_token && tamper == Tamper::BadSignature {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if let Some(t) = v["id_token"].as_str() {
                let mut t = t.to_string();
                // A character in the middle of the signature, changed.
                let at = t.rfind('.').unwrap_or(0) + 10;
                let c = if &t[at..=at] == "A" { "B" } else { "A" };
                t.replace_range(at..=at, c);
                v["id_token"] = serde_json::Value::String(t);
                bytes = serde_json::to_vec(&v).unwrap_or_default();
            }
        }
    }
    (status, out, bytes).into_response()
}
