//! HTTPS for the API: the coordinator serves TLS itself (rustls), with a
//! certificate and key from files, re-read when either changes on disk, or
//! one it issues from the cluster CA for the names it is given (renewed
//! before it expires). New connections get the current certificate;
//! connections already open keep theirs. A plain-HTTP request on the port
//! is answered with a redirect to the same URL over HTTPS, and every HTTPS
//! answer carries HSTS.

use crate::error::{Error, Result};
use crate::pki::Ca;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The HSTS header every HTTPS answer carries (a year).
pub const HSTS: &str = "max-age=31536000";

/// Where the API's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// PEM files: the chain (leaf first) and its key.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by the cluster CA for these DNS names and IP addresses.
    Issued { names: Vec<String> },
}

/// A TLS handshake or a redirect waits this long for the client.
const CLIENT_WAIT: Duration = Duration::from_secs(10);
/// An issued certificate is replaced once this old (it lives 30 days).
const REISSUE_AFTER: Duration = Duration::from_secs(20 * 24 * 3600);

/// What identifies a file's contents without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("bad_tls_config", format!("{what}: {e}"))
}

/// The certificate the API serves now, and how to get the next one.
#[derive(Debug)]
pub struct Certs {
    source: Source,
    ca: Ca,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last load, or when the certificate was issued.
    loaded: Mutex<(Stamp, Stamp, Instant)>,
}

impl Certs {
    /// Loads (or issues) the first certificate: bad files are an error here,
    /// before anything listens.
    pub fn new(source: Source, ca: &Ca) -> Result<Arc<Self>> {
        let (stamps, key) = load(&source, ca)?;
        Ok(Arc::new(Self {
            source,
            ca: ca.clone(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((stamps.0, stamps.1, Instant::now())),
        }))
    }

    /// The rustls configuration serving the current certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(berth_proto::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions", e))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Replaces the certificate when its files changed (or the issued one
    /// aged); a file that does not load leaves the one served as it is.
    /// Answers whether it changed.
    pub fn refresh(&self) -> bool {
        let (cert_stamp, key_stamp, at) = *self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let due = match &self.source {
            Source::Files { cert, key } => stamp(cert) != cert_stamp || stamp(key) != key_stamp,
            Source::Issued { .. } => at.elapsed() >= REISSUE_AFTER,
        };
        if !due {
            return false;
        }
        match load(&self.source, &self.ca) {
            Ok((stamps, key)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) =
                    (stamps.0, stamps.1, Instant::now());
                tracing::info!(source = ?self.source, "API certificate reloaded");
                true
            }
            Err(e) => {
                // Half-written files settle; a bad pair is tried again at the
                // next change.
                tracing::warn!(error = %e, "API certificate not reloaded; serving the previous one");
                let (cert, key) = stamp_of(&self.source);
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = (cert, key, at);
                false
            }
        }
    }

    /// Checks for a new certificate every `every`, for ever.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.refresh()).await;
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn stamp_of(source: &Source) -> (Stamp, Stamp) {
    match source {
        Source::Files { cert, key } => (stamp(cert), stamp(key)),
        Source::Issued { .. } => (None, None),
    }
}

/// The source's certificate and key, checked to belong together.
fn load(source: &Source, ca: &Ca) -> Result<((Stamp, Stamp), CertifiedKey)> {
    use rustls::pki_types::pem::PemObject;
    let stamps = stamp_of(source);
    let (chain, key) = match source {
        Source::Files { cert, key } => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| tls_err(&format!("read {}", p.display()), e))
            };
            let pem = read(cert)?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err(&cert.display().to_string(), e))?;
            if chain.is_empty() {
                return Err(tls_err(&cert.display().to_string(), "no certificate in it"));
            }
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| tls_err(&key.display().to_string(), e))?;
            (chain, key)
        }
        Source::Issued { names } => ca.server_cert(names)?,
    };
    let signer = berth_proto::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_err("the key", e))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| tls_err("the certificate and the key", e))?;
    Ok((stamps, certified))
}

/// The API's listener when it serves HTTPS: TCP connections become TLS
/// streams in tasks of their own (a slow handshake holds up no one);
/// plain-HTTP ones get the redirect and are closed.
pub struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` with `config` until the listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors and the like: wait, go on.
                            tracing::warn!(error = %e, "API accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Some(tls) = handshake(stream, &acceptor).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS connection, or None after a redirect, a failed handshake or a
/// client that said nothing in time.
async fn handshake(
    stream: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(CLIENT_WAIT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // 0x16: a TLS handshake record. Anything else is taken for plain HTTP.
    if first[0] != 0x16 {
        let _ = tokio::time::timeout(CLIENT_WAIT, redirect(stream)).await;
        return None;
    }
    match tokio::time::timeout(CLIENT_WAIT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "API TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Answers a plain-HTTP request with 308 to the same URL over HTTPS.
async fn redirect(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let answer = match https_location(&String::from_utf8_lossy(&head)) {
        Some(to) => format!(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: {to}\r\nContent-Type: text/plain\r\n\
             Content-Length: 29\r\nConnection: close\r\n\r\nthis API is served over HTTPS"
        ),
        None => "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n\
                 Connection: close\r\n\r\nthis API is served over HTTPS"
            .to_string(),
    };
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// `https://HOST/PATH` for a plain request's head, when its Host and target
/// are ones a Location header may carry as they are.
fn https_location(head: &str) -> Option<String> {
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?;
    let host = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("host").then(|| v.trim())
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })?;
    let safe = |b: u8| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b);
    let target = match target.starts_with('/') && target.bytes().all(safe) {
        true => target,
        false => "/",
    };
    Some(format!("https://{host}{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_is_sent_to_the_same_url_over_https() {
        let at = |head: &str| https_location(head);
        assert_eq!(
            at("GET /w/?x=1 HTTP/1.1\r\nHost: berth.example:8443\r\n\r\n").as_deref(),
            Some("https://berth.example:8443/w/?x=1")
        );
        assert_eq!(
            at("POST /v1/workspaces HTTP/1.1\r\nhost: [::1]:8443\r\n\r\n").as_deref(),
            Some("https://[::1]:8443/v1/workspaces")
        );
        // A target that is not a path goes to the root; no Host, or one that
        // could split the header, gets no redirect.
        assert_eq!(
            at("GET http://evil/ HTTP/1.1\r\nHost: b\r\n\r\n").as_deref(),
            Some("https://b/")
        );
        assert_eq!(at("GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(at("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), None);
        assert_eq!(at("GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n"), None);
        assert_eq!(at(""), None);
    }

    #[test]
    fn files_reload_on_change_and_a_bad_pair_keeps_the_old_one() {
        let (ca_cert, ca_key) = Ca::generate().unwrap();
        let ca = Ca::load(&ca_cert, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |names: &[&str]| {
            let k = rcgen::KeyPair::generate().unwrap();
            let c = rcgen::CertificateParams::new(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
            .self_signed(&k)
            .unwrap();
            (c.pem(), k.serialize_pem())
        };
        let (c1, k1) = write(&["one.example"]);
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let source = Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let certs = Certs::new(source, &ca).unwrap();
        let served = |c: &Certs| c.current.read().unwrap().cert[0].to_vec();
        let first = served(&certs);
        assert!(!certs.refresh(), "nothing changed");
        // A certificate whose key is not the one beside it is refused.
        let (c2, k2) = write(&["two.example"]);
        std::fs::write(&cert, &c2).unwrap();
        assert!(!certs.refresh());
        assert_eq!(served(&certs), first, "the old pair is still served");
        std::fs::write(&key, &k2).unwrap();
        assert!(certs.refresh());
        assert_ne!(served(&certs), first);
        // Garbage is refused too, at start.
        std::fs::write(&cert, "not a certificate").unwrap();
        let bad = Source::Files { cert, key };
        assert_eq!(Certs::new(bad, &ca).unwrap_err().code, "bad_tls_config");
    }
}
