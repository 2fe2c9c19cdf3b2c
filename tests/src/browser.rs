//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol: enough to open a page, set a cookie, type and read the page.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium, killed on drop.
pub struct Browser {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// One tab.
pub struct Page {
    ws: Socket,
    next: u64,
}

impl Browser {
    pub fn start() -> Browser {
        Self::start_with(&[])
    }

    /// `start` with more command-line flags.
    pub fn start_with(flags: &[&str]) -> Browser {
        let dir = tempfile::tempdir().expect("chromium profile dir");
        let child = std::process::Command::new("chromium")
            .args(flags)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1000,700",
            ])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromium (Debian package chromium)");
        // Chromium writes the port it picked into the profile directory.
        let file: PathBuf = dir.path().join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse().ok())
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _dir: dir,
        }
    }

    /// Opens a new blank tab.
    pub async fn page(&self) -> Page {
        let r: Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .expect("DevTools /json/new")
            .json()
            .await
            .expect("DevTools target");
        let url = r["webSocketDebuggerUrl"].as_str().expect("debugger URL");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to the tab");
        Page { ws, next: 1 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page {
    /// Calls a DevTools method; its result (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("send to the tab");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"))
                .expect("tab closed")
                .expect("tab socket");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("DevTools JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Types text into the focused element, as a keyboard would.
    pub async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses Tab (Shift+Tab with `back`).
    pub async fn tab(&mut self, back: bool) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9,
                       "nativeVirtualKeyCode": 9, "modifiers": if back { 8 } else { 0 }}),
            )
            .await;
        }
    }

    /// The page's accessibility problems, as a keyboard user and the WCAG
    /// AA contrast rule see them: text below 4.5:1 (3:1 large) against what
    /// is behind it, and links, buttons and fields that Tab never reaches
    /// (Tab is pressed from the top until focus comes back round or enters
    /// the editor or the terminal, which keep Tab for themselves).
    pub async fn audit(&mut self) -> Vec<String> {
        const AUDIT: &str = include_str!("browser/audit.js");
        self.eval(&format!("window.__audit = {AUDIT}; true")).await;
        let mut problems: Vec<String> =
            serde_json::from_value(self.eval("__audit.contrast()").await).unwrap_or_default();
        let names: Vec<String> =
            serde_json::from_value(self.eval("__audit.focusables()").await).unwrap_or_default();
        // Tab from the top: from a stop put first in the page.
        self.eval(
            "(() => { const s = document.createElement('span'); s.id = '__audit_start'; s.tabIndex = -1;
               document.body.prepend(s); s.focus(); return true; })()",
        )
        .await;
        let mut seen = vec![false; names.len()];
        for _ in 0..names.len() * 2 + 10 {
            self.tab(false).await;
            let at = self
                .eval(
                    "(() => { const e = document.activeElement;
                       if (!e || e === document.body) return 'none';
                       if (e.closest('.monaco-editor, .xterm') || e.tagName === 'IFRAME') return 'widget';
                       return e.dataset.auditId || 'other'; })()",
                )
                .await;
            match at.as_str() {
                Some("widget") => break,
                Some(id) => {
                    if let Some(s) = id.parse::<usize>().ok().and_then(|i| seen.get_mut(i)) {
                        *s = true;
                    }
                }
                None => {}
            }
            if seen.iter().all(|s| *s) {
                break;
            }
        }
        self.eval("document.getElementById('__audit_start').remove(); true")
            .await;
        problems.extend(
            names
                .iter()
                .zip(&seen)
                .filter(|(_, s)| !**s)
                .map(|(n, _)| format!("not reached by Tab: {n}")),
        );
        problems
    }

    /// Presses Enter.
    pub async fn enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            let mut p = json!({"type": kind, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13});
            if kind == "keyDown" {
                p["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", p).await;
        }
    }

    /// Signs the browser in to the API at `api` with `token`, as the login
    /// page would: the HttpOnly `berth_token` cookie.
    pub async fn sign_in(&mut self, api: &str, token: &str) {
        self.call(
            "Network.setCookie",
            json!({"name": "berth_token", "value": token, "url": api, "httpOnly": true}),
        )
        .await;
    }

    /// Goes to `url` and waits until the page has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        )
        .await;
    }

    /// Waits until `expr` is true in the page; false if it never was.
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.eval(expr).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// A PNG of the page at `width` CSS pixels (a phone's metrics below
    /// 500), written to target/screens/NAME-WIDTH.png.
    pub async fn screenshot(&mut self, name: &str, width: u32) -> PathBuf {
        use base64::Engine;
        let mobile = width < 500;
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": if mobile { 844 } else { 800 },
                   "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        let dir = crate::repo_root().join("target/screens");
        std::fs::create_dir_all(&dir).expect("target/screens");
        let path = dir.join(format!("{name}-{width}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        self.call("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        path
    }
}
