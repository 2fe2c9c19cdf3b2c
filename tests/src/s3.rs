//! Object storage for the tests: moto's S3-compatible server (PyPI, pinned,
//! its virtualenv cached by `scripts/moto.sh`), and a fault proxy in front
//! of it that answers 503 Service Unavailable while told to, as a store
//! under load does (TEST-PLAN 10).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A moto S3 server on `ip`; killed when dropped.
pub struct Moto {
    pub addr: String,
    child: Child,
}

impl Moto {
    pub fn start(ip: &str, log: &std::path::Path) -> Self {
        let port = crate::process::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moto.sh");
        let log = std::fs::File::create(log).expect("moto log");
        let child = Command::new(script)
            .args(["-H", ip, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moto_server (scripts/moto.sh)");
        crate::process::wait_listening(None, port);
        Self {
            addr: format!("{ip}:{port}"),
            child,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to an HTTP server that, while `failing`, answers every
/// request with 503 (and cuts the connections it was carrying).
pub struct FaultProxy {
    pub addr: String,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
    carried: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// While non-zero: each chunk of at most 16 KiB waits this many ms.
    slow_ms: Arc<std::sync::atomic::AtomicU64>,
    slowed: Arc<AtomicU32>,
}

impl FaultProxy {
    /// Listens on `ip` (a free port) for `upstream`; call in a Tokio runtime.
    pub fn start(ip: &str, upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr").to_string();
        let failing = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU32::new(0));
        let carried: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let slow_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let slowed: Arc<AtomicU32> = Arc::default();
        let (f, r, c, up) = (
            failing.clone(),
            refused.clone(),
            carried.clone(),
            upstream.to_string(),
        );
        let (slow, count) = (slow_ms.clone(), slowed.clone());
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((mut client, _)) = listener.accept().await {
                if f.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        // Read the request head, then refuse it.
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf).await;
                        let _ = client
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                    });
                    continue;
                }
                let up = up.clone();
                let (slow, count) = (slow.clone(), count.clone());
                let task = tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&up).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let one = trickle(cr, sw, slow.clone(), count.clone());
                    let other = trickle(sr, cw, slow, count);
                    let _ = tokio::join!(one, other);
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            failing,
            refused,
            carried,
            slow_ms,
            slowed,
        }
    }

    /// From now on each chunk (at most 16 KiB) waits `ms` both ways; 0:
    /// full speed again.
    pub fn slow(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::SeqCst);
    }

    /// Chunks held back so far.
    pub fn slowed(&self) -> u32 {
        self.slowed.load(Ordering::SeqCst)
    }

    /// From now on every request gets 503; open connections are cut.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
        for t in self.carried.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Requests pass again.
    pub fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// Requests answered 503 so far.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` in chunks of at most 16 KiB, each held back
/// `slow` ms while that is non-zero.
async fn trickle(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    slow: Arc<std::sync::atomic::AtomicU64>,
    count: Arc<AtomicU32>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let ms = slow.load(Ordering::SeqCst);
        if ms > 0 {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
