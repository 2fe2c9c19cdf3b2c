//! Tunnel activity per workspace: open sessions and bytes each way, by kind
//! (SSH, port connections, previews, web terminals), and when bytes last
//! moved. The status of a workspace carries it (the coordinator's API shows
//! it; the idle detector reads it).

use berth_proto::agent as pb;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    // In the order of their names: a status lists them so.
    Files,
    Port,
    Preview,
    Ssh,
    Terminal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Files => "files",
            Kind::Ssh => "ssh",
            Kind::Port => "port",
            Kind::Preview => "preview",
            Kind::Terminal => "terminal",
        }
    }

    /// The kind a coordinator names in a request ("" is a port connection).
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "files" => Kind::Files,
            "ssh" => Kind::Ssh,
            "" | "port" => Kind::Port,
            "preview" => Kind::Preview,
            "terminal" => Kind::Terminal,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    sessions: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    last_ms: AtomicU64,
}

/// Every workspace's counters on this node, by workspace then kind (a
/// status reads one workspace's few entries).
#[derive(Debug, Default)]
pub struct Activity {
    by: Mutex<HashMap<String, BTreeMap<Kind, Arc<Counters>>>>,
}

/// One open session; closing it is dropping the last reference.
#[derive(Debug)]
pub struct Session {
    c: Arc<Counters>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Activity {
    /// Opens a session of `kind` on workspace `name`.
    pub fn open(&self, name: &str, kind: Kind) -> Arc<Session> {
        let c = self
            .by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .entry(kind)
            .or_default()
            .clone();
        c.open.fetch_add(1, Relaxed);
        c.sessions.fetch_add(1, Relaxed);
        c.last_ms.store(now_ms(), Relaxed);
        Arc::new(Session { c })
    }

    /// The counters of workspace `name`, one entry per kind seen, by kind.
    pub fn of(&self, name: &str) -> Vec<pb::TunnelActivity> {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kinds) = by.get(name) else {
            return Vec::new();
        };
        kinds
            .iter()
            .map(|(k, c)| pb::TunnelActivity {
                kind: k.as_str().into(),
                open: c.open.load(Relaxed),
                sessions: c.sessions.load(Relaxed),
                bytes_in: c.bytes_in.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
                last_active_ms: c.last_ms.load(Relaxed),
            })
            .collect()
    }

    /// Forgets a deleted workspace.
    pub fn forget(&self, name: &str) {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

impl Session {
    pub fn add_in(&self, n: usize) {
        if n > 0 {
            self.c.bytes_in.fetch_add(n as u64, Relaxed);
            self.c.last_ms.store(now_ms(), Relaxed);
        }
    }

    pub fn add_out(&self, n: usize) {
        if n > 0 {
            self.c.bytes_out.fetch_add(n as u64, Relaxed);
            self.c.last_ms.store(now_ms(), Relaxed);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.c.open.fetch_sub(1, Relaxed);
        self.c.last_ms.store(now_ms(), Relaxed);
    }
}

/// The user's side of a tunnel, counted: bytes read came from the user
/// (in), bytes written go to the user (out).
pub struct Counted<S> {
    inner: S,
    session: Arc<Session>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, session: Arc<Session>) -> Self {
        Self { inner, session }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.session.add_in(n);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.session.add_out(n);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn sessions_and_bytes_are_counted_per_workspace_and_kind() {
        let a = Activity::default();
        let (mut user, agent) = tokio::io::duplex(64);
        let s = a.open("w1", Kind::Port);
        let mut c = Counted::new(agent, s);
        user.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let _ssh = a.open("w1", Kind::Ssh);
        let _other = a.open("w2", Kind::Port);
        let w1 = a.of("w1");
        assert_eq!(w1.len(), 2);
        let port = w1.iter().find(|t| t.kind == "port").unwrap();
        assert_eq!((port.open, port.bytes_in, port.bytes_out), (1, 5, 2));
        drop(c);
        let port = a.of("w1").into_iter().find(|t| t.kind == "port").unwrap();
        assert_eq!((port.open, port.sessions), (0, 1));
        a.forget("w1");
        assert!(a.of("w1").is_empty());
        assert_eq!(a.of("w2").len(), 1);
    }
}
