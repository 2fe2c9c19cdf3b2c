//! A minimal OCI distribution client: manifests and blobs over HTTP(S), with
//! Basic and Bearer-token authentication.

use crate::error::{AgentError, Result};
use crate::image::Reference;
use base64::Engine;
use reqwest::{header, Response, StatusCode};

/// Media types we ask for, newest first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Credentials for one pull.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A session with one repository of one registry.
#[derive(Debug, Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    repository: String,
    registry: String,
    creds: Option<Credentials>,
    auth: Option<String>,
    /// Ask tokens for push as well as pull.
    push: bool,
}

impl Session {
    /// host[:port] of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Opens a session; `plain_http` for loopback or configured-insecure registries.
    pub fn new(
        http: reqwest::Client,
        r: &Reference,
        plain_http: bool,
        creds: Option<Credentials>,
    ) -> Self {
        let scheme = if plain_http { "http" } else { "https" };
        Self {
            http,
            base: format!("{scheme}://{}/v2/{}", r.registry, r.repository),
            repository: r.repository.clone(),
            registry: r.registry.clone(),
            creds,
            auth: None,
            push: false,
        }
    }

    /// The same session, authorized to push.
    pub fn for_push(mut self) -> Self {
        self.push = true;
        self
    }

    fn err(&self, message: impl Into<String>) -> AgentError {
        AgentError::Registry {
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    /// GETs `manifests/<reference>`; returns body, media type and the
    /// registry's digest header if any.
    pub async fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String, Option<String>)> {
        let resp = self
            .get(&format!("manifests/{reference}"), MANIFEST_ACCEPT)
            .await?;
        let media = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = resp.bytes().await.map_err(|e| self.err(e.to_string()))?;
        Ok((body.to_vec(), media, digest))
    }

    /// GETs `blobs/<digest>`, returning the response to stream from.
    pub async fn blob(&mut self, digest: &str) -> Result<Response> {
        self.get(&format!("blobs/{digest}"), "*/*").await
    }

    async fn get(&mut self, path: &str, accept: &str) -> Result<Response> {
        let url = format!("{}/{path}", self.base);
        let resp = self
            .authorized(&format!("GET {url}"), |h| {
                h.get(&url).header(header::ACCEPT, accept)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => {
                // "manifests/latest" → the image's own name, "reg/repo:latest".
                let what = match path.split_once('/') {
                    Some(("manifests", r)) if r.starts_with("sha256:") => format!("@{r}"),
                    Some(("manifests", r)) => format!(":{r}"),
                    Some(("blobs", d)) => format!(" (layer {d})"),
                    _ => format!(" ({path})"),
                };
                Err(AgentError::ImageNotFound(format!(
                    "{}/{}{what}",
                    self.registry, self.repository
                )))
            }
            s => Err(self.err(format!("GET {url}: HTTP {s}"))),
        }
    }

    /// Sends the request `make` builds, again with authorization after a
    /// 401 (answering its challenge); the response, unless still refused.
    async fn authorized(
        &mut self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut req = make(&self.http);
            if let Some(a) = &self.auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.err(format!("{what}: {e}")))?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = resp
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    self.auth = Some(self.authorize(&challenge).await?);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => break,
                _ => return Ok(resp),
            }
        }
        Err(AgentError::RegistryUnauthorized(format!(
            "{}/{}",
            self.registry, self.repository
        )))
    }

    /// Sends the request `make` builds (authorized), expecting `ok`.
    async fn send(
        &mut self,
        what: &str,
        ok: StatusCode,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Response> {
        let resp = self.authorized(what, make).await?;
        if resp.status() == ok {
            return Ok(resp);
        }
        let status = resp.status();
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(self.err(format!("{what}: HTTP {status}: {body}")))
    }

    /// The absolute URL of an upload's `Location`.
    fn location(&self, resp: &Response) -> Result<String> {
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err("upload without a Location"))?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            return Ok(loc.to_string());
        }
        let origin = self.base.split("/v2/").next().unwrap_or_default();
        Ok(format!("{origin}{loc}"))
    }

    fn with_digest(location: &str, digest: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}digest={digest}")
    }

    /// Starts a blob upload; returns where to send it.
    async fn start_upload(&mut self) -> Result<String> {
        let url = format!("{}/blobs/uploads/", self.base);
        let resp = self
            .send(&format!("POST {url}"), StatusCode::ACCEPTED, |h| {
                h.post(&url).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        self.location(&resp)
    }

    /// Whether the repository has blob `digest`.
    pub async fn has_blob(&mut self, digest: &str) -> Result<bool> {
        let url = format!("{}/blobs/{digest}", self.base);
        let what = format!("HEAD {url}");
        let resp = self.authorized(&what, |h| h.head(&url)).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.err(format!("{what}: HTTP {s}"))),
        }
    }

    /// Uploads a small blob in one request.
    pub async fn push_blob(&mut self, data: bytes::Bytes, digest: &str) -> Result<()> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let url = Self::with_digest(&self.start_upload().await?, digest);
        self.send(&format!("PUT {url}"), StatusCode::CREATED, |h| {
            h.put(&url)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(data.clone())
        })
        .await?;
        Ok(())
    }

    /// Uploads a blob as it is produced (one streamed PATCH); returns
    /// where to commit it (`finish_upload`, once its digest is known).
    pub async fn upload_stream(&mut self, body: reqwest::Body) -> Result<String> {
        let loc = self.start_upload().await?;
        let mut req = self
            .http
            .patch(&loc)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(format!("PATCH {loc}: {e}")))?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT {
            return Err(self.err(format!("PATCH {loc}: HTTP {}", resp.status())));
        }
        self.location(&resp)
    }

    /// Commits an upload as blob `digest` (the registry checks it against
    /// what it received).
    pub async fn finish_upload(&mut self, location: &str, digest: &str) -> Result<()> {
        let url = Self::with_digest(location, digest);
        self.send(&format!("PUT {url}"), StatusCode::CREATED, |h| {
            h.put(&url).header(header::CONTENT_LENGTH, "0")
        })
        .await?;
        Ok(())
    }

    /// Puts manifest `body` of `media_type` under `reference` (a tag).
    pub async fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        body: bytes::Bytes,
    ) -> Result<()> {
        let url = format!("{}/manifests/{reference}", self.base);
        self.send(&format!("PUT {url}"), StatusCode::CREATED, |h| {
            h.put(&url)
                .header(header::CONTENT_TYPE, media_type)
                .body(body.clone())
        })
        .await?;
        Ok(())
    }

    /// Deletes manifest `digest` (gone already is fine).
    pub async fn delete_manifest(&mut self, digest: &str) -> Result<()> {
        let url = format!("{}/manifests/{digest}", self.base);
        let what = format!("DELETE {url}");
        let resp = self.authorized(&what, |h| h.delete(&url)).await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.err(format!("{what}: HTTP {s}"))),
        }
    }

    /// Answers a WWW-Authenticate challenge with an Authorization header value.
    async fn authorize(&self, challenge: &str) -> Result<String> {
        let unauthorized =
            || AgentError::RegistryUnauthorized(format!("{}/{}", self.registry, self.repository));
        let creds = self.creds.as_ref().ok_or_else(unauthorized)?;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", creds.username, creds.password));
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(format!("Basic {basic}"));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.err(format!("unsupported auth challenge {challenge:?}")));
        }
        let params = parse_challenge(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err("bearer challenge without realm"))?;
        let mut query: Vec<(String, String)> = params
            .into_iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .collect();
        if !query.iter().any(|(k, _)| k == "scope") {
            query.push((
                "scope".into(),
                format!(
                    "repository:{}:{}",
                    self.repository,
                    if self.push { "pull,push" } else { "pull" }
                ),
            ));
        }
        let resp = self
            .http
            .get(&realm)
            .query(&query)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .send()
            .await
            .map_err(|e| self.err(format!("token from {realm}: {e}")))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(unauthorized());
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| self.err(format!("token response: {e}")))?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| self.err("token response without token"))?;
        Ok(format!("Bearer {token}"))
    }
}

/// Parses `k="v",k2="v2"` challenge parameters.
pub fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            q.split_once('"').unwrap_or((q, ""))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.push((k, v.to_string()));
        rest = tail.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
        assert_eq!(
            parse_challenge("realm=x, service=y"),
            vec![("realm".into(), "x".into()), ("service".into(), "y".into())]
        );
    }
}
