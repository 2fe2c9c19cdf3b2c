//! The coordinator's REST API as the CLI uses it: JSON in and out, errors
//! carried as the API's stable code, and the SSE event stream.

use berth_proto::api::WorkspaceEvent;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An error from the API (its JSON body) or from getting there.
#[derive(Debug)]
pub struct Error {
    /// HTTP status, 0 when the request never got an answer.
    pub status: u16,
    /// The API's stable code, or `unreachable` / `bad_response` for the CLI's own.
    pub code: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// A request that got no answer: `bad_certificate` when the server's
    /// certificate was refused (untrusted, expired, for another name),
    /// else `unreachable`; the message carries the whole cause.
    fn transport(url: &str, e: reqwest::Error) -> Self {
        let mut message = format!("{url}: {e}");
        let mut tls = None;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            if let Some(r) = rustls_in(c) {
                tls.get_or_insert_with(|| r.to_string());
            }
            cause = c.source();
        }
        match tls {
            Some(why) => Self {
                status: 0,
                code: "bad_certificate".into(),
                message: format!(
                    "{url}: the server's certificate is refused ({why}); trust its CA with \
                     `berth login --ca-fingerprint` or --ca-file"
                ),
            },
            None => Self {
                status: 0,
                code: "unreachable".into(),
                message,
            },
        }
    }
    fn bad_response(msg: impl Into<String>) -> Self {
        Self {
            status: 0,
            code: "bad_response".into(),
            message: msg.into(),
        }
    }
    pub fn not_found(&self) -> bool {
        self.status == 404
    }
}

/// The TLS error `e` is, or carries in its (nested) I/O errors: an I/O
/// error's `source()` skips the error it wraps, so they are opened here.
fn rustls_in<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `base`; for https, trusting only `ca` (PEM)
    /// when given, else the usual public roots.
    pub fn new(base: String, token: Option<String>, ca: Option<&str>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(pem) = ca {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("the CA certificate: {e}"))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        Ok(Self {
            http: b.build()?,
            base,
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        self.decode(resp).await
    }

    /// A success body as `T`, anything else as the API's error.
    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::bad_response(format!("{status} with a body the CLI cannot read: {e}"))
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Error {
                status: status.as_u16(),
                code: b.code,
                message: b.message,
            },
            Err(_) => Error {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            },
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// A POST whose success answer is a stream of exec frames (the
    /// `exec/stream` endpoint), handed to `on_frame` as they arrive.
    pub async fn post_exec_stream(
        &self,
        path: &str,
        body: &impl Serialize,
        mut on_frame: impl FnMut(berth_proto::exec_stream::Frame),
    ) -> Result<()> {
        let resp = self
            .request(Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if !resp.status().is_success() {
            return self.decode::<serde_json::Value>(resp).await.map(|_| ());
        }
        let mut buf = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| Error::transport(&self.base, e))?);
            let frames = berth_proto::exec_stream::decode(&mut buf)
                .map_err(|e| Error::bad_response(format!("exec stream: {e}")))?;
            frames.into_iter().for_each(&mut on_frame);
        }
        Ok(())
    }

    /// A GET whose success answer is copied, as it arrives, to `out`.
    pub async fn get_stream(&self, path: &str, out: &mut impl std::io::Write) -> Result<()> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if !resp.status().is_success() {
            return self.decode::<serde_json::Value>(resp).await.map(|_| ());
        }
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::transport(&self.base, e))?;
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                // The reader went away (a closed pipe): nothing more to show.
                return Ok(());
            }
        }
        Ok(())
    }

    /// A DELETE answered with no body (204).
    pub async fn delete_empty(&self, path: &str) -> Result<()> {
        let resp = self
            .request(Method::DELETE, path)
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        self.decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// A tunnel through the coordinator, an HTTP/1.1 upgrade to `proto`:
    /// `berth-tcp` at `/v1/workspaces/{name}/ports/{port}` (a TCP
    /// connection to the port) or `berth-ssh` at `/v1/workspaces/{name}/ssh`
    /// (the agent's SSH server). The upgraded connection carries the bytes.
    pub async fn upgrade(&self, path: &str, proto: &str) -> Result<reqwest::Upgraded> {
        let resp = self
            .request(Method::GET, path)
            .header("connection", "upgrade")
            .header("upgrade", proto)
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(match self.decode::<serde_json::Value>(resp).await {
                Err(e) => e,
                Ok(_) => Error::bad_response("the coordinator did not switch protocols"),
            });
        }
        resp.upgrade()
            .await
            .map_err(|e| Error::transport(&self.base, e))
    }

    /// Opens the event stream; events arrive on the returned channel until
    /// the connection ends. Returns once the coordinator has answered, so
    /// no change made after this call is missed.
    pub async fn events(&self) -> Result<tokio::sync::mpsc::Receiver<WorkspaceEvent>> {
        let resp = self
            .request(Method::GET, "/v1/events")
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| Error::transport(&self.base, e))?;
        if resp.status() != StatusCode::OK {
            return Err(match self.decode::<serde_json::Value>(resp).await {
                Err(e) => e,
                Ok(_) => Error::bad_response("the event stream was not opened"),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut body = resp.bytes_stream();
        tokio::spawn(async move {
            let mut parser = SseParser::default();
            while let Some(Ok(chunk)) = body.next().await {
                for (event, data) in parser.feed(&chunk) {
                    if event != "workspace" {
                        continue;
                    }
                    if let Ok(ev) = serde_json::from_str::<WorkspaceEvent>(&data) {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Splits a `text/event-stream` body into (event, data) pairs.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(i) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let ev = if self.event.is_empty() {
                        "message".to_string()
                    } else {
                        std::mem::take(&mut self.event)
                    };
                    out.push((ev, self.data.join("\n")));
                }
                self.event.clear();
                self.data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                self.data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        out
    }
}

/// Percent-encodes a value for a URL path or query.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: workspace\nda").is_empty());
        let got = p.feed(b"ta: {\"a\":1}\n\n:keep-alive\n\nevent: lagged\r\ndata: 3\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ("workspace".to_string(), "{\"a\":1}".to_string()),
                ("lagged".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(enc("a-b_c.d~1"), "a-b_c.d~1");
        assert_eq!(enc("a b/c?*"), "a%20b%2Fc%3F%2A");
    }
}
