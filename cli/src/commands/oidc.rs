//! `berth login --oidc`: sign in with the coordinator's OIDC provider
//! (docs/admin.md, "OIDC sign-in"). The CLI listens on 127.0.0.1, prints
//! the link to open, and when the browser comes back with a one-time code
//! trades it, with a secret only it knows (its SHA-256 went with the link),
//! for the token.

use super::Ui;
use crate::client::Client;
use crate::{config, fail, Outcome};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the browser has to come back.
const WAIT: Duration = Duration::from_secs(600);

#[derive(Serialize)]
struct Trade<'a> {
    code: &'a str,
    verifier: &'a str,
}

#[derive(Deserialize)]
struct Traded {
    token: String,
}

pub(crate) async fn login(
    ui: Ui,
    resolved: &config::Resolved,
    cfg_path: Option<PathBuf>,
) -> Outcome {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(rand::random::<[u8; 32]>());
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("cli_error", format!("listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| fail("cli_error", e.to_string()))?
        .port();
    let link = format!(
        "{}/auth/oidc/login?cli_port={port}&cli_challenge={challenge}",
        resolved.url.trim_end_matches('/')
    );
    eprintln!("Open this link in a browser on this machine to sign in:\n  {link}");
    let code = tokio::time::timeout(WAIT, wait_for_code(&listener))
        .await
        .map_err(|_| fail("timeout", "the sign-in did not come back within 10 minutes"))??;
    let c = Client::new(resolved.url.clone(), None, resolved.ca.as_deref())?;
    let t: Traded = c
        .post(
            "/auth/oidc/token",
            &Trade {
                code: &code,
                verifier: &verifier,
            },
        )
        .await?;
    super::admin::save_login(ui, resolved, cfg_path, t.token).await
}

/// Answers requests on the listener until one brings `/callback?code=…`;
/// returns the code.
async fn wait_for_code(listener: &tokio::net::TcpListener) -> Result<String, crate::Failure> {
    loop {
        let (mut conn, _) = listener
            .accept()
            .await
            .map_err(|e| fail("cli_error", format!("accept: {e}")))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 << 10 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let code = target
            .strip_prefix("/callback?")
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("code=")))
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string);
        let (status, body) = match &code {
            Some(_) => ("200 OK", "Signed in to Berth: you can close this tab.\n"),
            None => ("404 Not Found", "Not the sign-in's callback.\n"),
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(answer.as_bytes()).await;
        if let Some(code) = code {
            return Ok(code);
        }
    }
}
