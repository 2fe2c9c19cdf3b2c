//! The agent link: a QUIC endpoint (quinn + rustls), joins, the registry of
//! connected nodes, heartbeats and command dispatch.
//!
//! Two ALPNs share the endpoint: `berth-join/1` (no client certificate; a
//! one-time join token buys a node certificate) and `berth/1` (mutual TLS;
//! the node id is the SAN of the client certificate and authorizes every
//! message on the connection).

use crate::error::ApiError;
use crate::pki::Ca;
use crate::store::{now_ms, JoinRefusal, Store};
use berth_proto::agent as pb;
use berth_proto::link::{self as lk, agent_message::Msg as Up, coordinator_message::Msg as Down};
use berth_proto::{read_frame, tls, write_frame, ALPN_JOIN, ALPN_LINK};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// First byte of an agent-opened stream: what it carries.
pub const STREAM_CONTROL: u8 = b'C';
pub const STREAM_RENEW: u8 = b'R';

/// Settings of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub listen: SocketAddr,
    /// Lifetime of node certificates.
    pub cert_lifetime: Duration,
    /// How often agents send heartbeats.
    pub heartbeat: Duration,
    /// QUIC idle timeout: a silent connection is dropped after this.
    pub idle_timeout: Duration,
    /// Extra DNS names for the server certificate.
    pub server_names: Vec<String>,
    /// CPU that can be reserved on a node per CPU it offers (memory is never
    /// overcommitted): workspaces' CPU limits are ceilings, mostly idle.
    pub cpu_overcommit: f64,
}

/// Something the controller must act on.
#[derive(Debug)]
pub enum LinkEvent {
    /// A node (re)connected and sent its full inventory.
    Registered {
        node: String,
        inventory: Vec<pb::WorkspaceStatus>,
        /// When the inventory arrived (coordinator clock): anything the store
        /// learnt after that is newer than the inventory.
        at_ms: i64,
    },
    /// A node reported a change of one of its workspaces.
    Status {
        node: String,
        status: pb::WorkspaceStatus,
    },
    /// A node's connection ended.
    Disconnected { node: String },
}

/// Why a command did not get an answer from its node.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("node {0} is not connected to this coordinator")]
    NotConnected(String),
    #[error("link to node {node}: {message}")]
    Broken { node: String, message: String },
    #[error("node {0} did not answer in time")]
    Timeout(String),
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NotConnected(_) => ApiError::unavailable("node_unreachable", e.to_string()),
            LinkError::Broken { .. } => ApiError::node("node_link_broken", e.to_string()),
            LinkError::Timeout(_) => ApiError::node("node_timeout", e.to_string()),
        }
    }
}

struct Session {
    conn: quinn::Connection,
    /// Distinguishes a replaced session from the current one.
    epoch: u64,
    last_heartbeat: Instant,
}

struct Inner {
    store: Store,
    ca: Ca,
    cfg: LinkConfig,
    sessions: Mutex<HashMap<String, Session>>,
    events: mpsc::UnboundedSender<LinkEvent>,
    epoch: std::sync::atomic::AtomicU64,
}

/// The registry of connected agents; cheap to clone.
#[derive(Clone)]
pub struct Agents {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").finish_non_exhaustive()
    }
}

/// The QUIC transport of the link's server side. Agents open two streams at
/// most (control, renewal), so eight are allowed: quinn keeps state for every
/// allowed stream, and 1,024 cost ~90 KiB per connection. Segmentation
/// offload stays on: it costs ~4 KiB per connection (its send buffer) and
/// triples what a port connection carries (105 → 290 MiB/s, bench forward).
pub fn server_transport(idle_timeout: Duration) -> Result<quinn::TransportConfig, ApiError> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle_timeout)
                .map_err(|e| ApiError::internal(e.to_string()))?,
        ))
        .max_concurrent_bidi_streams(8u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .enable_segmentation_offload(true);
    Ok(transport)
}

impl Agents {
    pub fn new(
        store: Store,
        ca: Ca,
        cfg: LinkConfig,
    ) -> (Self, mpsc::UnboundedReceiver<LinkEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                inner: Arc::new(Inner {
                    store,
                    ca,
                    cfg,
                    sessions: Mutex::default(),
                    events: tx,
                    epoch: Default::default(),
                }),
            },
            rx,
        )
    }

    /// Binds the QUIC endpoint.
    pub fn bind(&self) -> Result<quinn::Endpoint, ApiError> {
        let (chain, key) = self.inner.ca.server_cert(&self.inner.cfg.server_names)?;
        let tls = crate::pki::server_tls(&self.inner.ca, chain, key, &[ALPN_LINK, ALPN_JOIN])?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ApiError::internal(format!("QUIC TLS config: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let transport = server_transport(self.inner.cfg.idle_timeout)?;
        server.transport_config(Arc::new(transport));
        quinn::Endpoint::server(server, self.inner.cfg.listen).map_err(|e| {
            ApiError::unavailable(
                "bind_failed",
                format!("bind QUIC on {}: {e}", self.inner.cfg.listen),
            )
        })
    }

    /// Accepts connections until the endpoint closes.
    pub async fn serve(&self, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => me.connection(conn).await,
                    Err(e) => tracing::info!(%remote, error = %e, "agent handshake failed"),
                }
            });
        }
    }

    /// Node ids with a live session here.
    pub fn connected(&self) -> Vec<String> {
        self.inner
            .sessions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_connected(&self, node: &str) -> bool {
        self.inner
            .sessions
            .lock()
            .is_ok_and(|s| s.contains_key(node))
    }

    async fn connection(&self, conn: quinn::Connection) {
        let remote = conn.remote_address();
        let alpn = conn
            .handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol);
        match alpn.as_deref() {
            Some(ALPN_JOIN) => {
                if let Err(e) = self.join(&conn).await {
                    tracing::info!(%remote, error = %e, "join failed");
                }
            }
            Some(ALPN_LINK) => {
                let node = conn
                    .peer_identity()
                    .and_then(|id| {
                        id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                            .ok()
                    })
                    .and_then(|certs| certs.first().and_then(|c| tls::node_id_of(c)));
                match node {
                    Some(node) => self.session(conn, node).await,
                    None => {
                        tracing::info!(%remote, "link connection without a node certificate refused");
                        conn.close(1u32.into(), b"a node certificate is required");
                    }
                }
            }
            _ => conn.close(2u32.into(), b"unknown ALPN"),
        }
    }

    async fn join(&self, conn: &quinn::Connection) -> Result<(), String> {
        let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
            .await
            .map_err(|_| "no join request in 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let req: lk::JoinRequest =
            tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv))
                .await
                .map_err(|_| "join request too slow".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("empty join stream")?;
        let result = match self.issue_for_join(&req).await {
            Ok(issued) => {
                tracing::info!(node = %issued.node_id, "node joined");
                lk::join_response::Result::Issued(issued)
            }
            Err(e) => {
                tracing::info!(node = %req.node_id, code = e.code, error = %e.message, "join refused");
                lk::join_response::Result::Error(pb::Error {
                    code: e.code.into(),
                    message: e.message,
                })
            }
        };
        write_frame(
            &mut send,
            &lk::JoinResponse {
                result: Some(result),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let _ = send.stopped().await;
        Ok(())
    }

    async fn issue_for_join(&self, req: &lk::JoinRequest) -> Result<lk::Issued, ApiError> {
        crate::validate::node_id(&req.node_id)?;
        let token = tls::JoinToken::parse(&req.token)
            .map_err(|e| ApiError::invalid("join_token_invalid", e))?;
        if token.ca_fingerprint != self.inner.ca.fingerprint() {
            return Err(ApiError::forbidden(
                "the join token is for another cluster's CA",
            ));
        }
        match self
            .inner
            .store
            .join(&token.id, &token.secret_hash(), &req.node_id, now_ms())
            .await?
        {
            Ok(()) => {}
            Err(JoinRefusal::Unknown) => {
                return Err(
                    ApiError::unauthorized("unknown join token").with_code("join_token_unknown")
                )
            }
            Err(JoinRefusal::Expired) => {
                return Err(ApiError::unauthorized("the join token has expired")
                    .with_code("join_token_expired"))
            }
            Err(JoinRefusal::Used) => {
                return Err(ApiError::unauthorized("the join token was already used")
                    .with_code("join_token_used"))
            }
        }
        self.issue(&req.node_id, &req.csr_der)
    }

    fn issue(&self, node: &str, csr: &[u8]) -> Result<lk::Issued, ApiError> {
        let issued = self
            .inner
            .ca
            .sign_node(node, csr, self.inner.cfg.cert_lifetime)?;
        Ok(lk::Issued {
            node_id: node.into(),
            cert_pem: issued.cert_pem,
            ca_pem: self.inner.ca.cert_pem.clone(),
            not_after_unix: issued.not_after_unix,
        })
    }

    /// One authenticated connection of `node`, until it ends.
    async fn session(&self, conn: quinn::Connection, node: String) {
        let epoch = self
            .inner
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Every stream the agent opens starts with its kind: the one control
        // stream, or a renewal (at any time).
        let (control_tx, control_rx) = tokio::sync::oneshot::channel();
        let acceptor = {
            let me = self.clone();
            let conn = conn.clone();
            let node = node.clone();
            tokio::spawn(async move {
                let mut control_tx = Some(control_tx);
                while let Ok((send, mut recv)) = conn.accept_bi().await {
                    let mut kind = [0u8; 1];
                    if recv.read_exact(&mut kind).await.is_err() {
                        continue;
                    }
                    match (kind[0], control_tx.take()) {
                        (STREAM_CONTROL, Some(tx)) => {
                            let _ = tx.send((send, recv));
                        }
                        (STREAM_RENEW, tx) => {
                            control_tx = tx;
                            let (me, node) = (me.clone(), node.clone());
                            tokio::spawn(async move { me.renew(&node, send, recv).await });
                        }
                        _ => conn.close(3u32.into(), b"unexpected stream"),
                    }
                }
            })
        };
        match control_rx.await {
            Ok((mut send, mut recv)) => {
                let result = self
                    .control_loop(&conn, &node, epoch, &mut send, &mut recv)
                    .await;
                if let Err(e) = result {
                    tracing::info!(%node, error = %e, "control stream ended");
                }
            }
            Err(_) => tracing::info!(%node, "link closed before registering"),
        }
        acceptor.abort();
        self.drop_session(&node, epoch);
        conn.close(0u32.into(), b"bye");
    }

    fn drop_session(&self, node: &str, epoch: u64) {
        let removed = {
            let mut s = self
                .inner
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if s.get(node).is_some_and(|s| s.epoch == epoch) {
                s.remove(node);
                true
            } else {
                false
            }
        };
        if removed {
            tracing::info!(%node, "agent disconnected");
            let _ = self
                .inner
                .events
                .send(LinkEvent::Disconnected { node: node.into() });
        }
    }

    async fn control_loop(
        &self,
        conn: &quinn::Connection,
        node: &str,
        epoch: u64,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
    ) -> Result<(), String> {
        let first: lk::AgentMessage = read_frame(recv)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("control stream closed")?;
        let Some(Up::Register(reg)) = first.msg else {
            return Err("the first control message must be register".into());
        };
        let cap = reg.capacity.unwrap_or_default();
        let capacity = crate::scheduler::Resources {
            cpu_millis: (cap.cpu_millis as f64 * self.inner.cfg.cpu_overcommit) as u64,
            memory_bytes: cap.memory_bytes,
            disk_bytes: cap.disk_bytes,
        };
        let registration = crate::store::Registration {
            capacity,
            slots: cap.max_workspaces,
            labels: reg.labels.clone().into_iter().collect(),
            cached: reg.cached_images.iter().cloned().collect(),
            agent_version: reg.agent_version.clone(),
            ssh_host_key: reg.ssh_host_key.clone(),
        };
        if let Err(e) = self
            .inner
            .store
            .register_node(node, &registration, now_ms())
            .await
        {
            let _ = write_frame(
                send,
                &down(Down::Error(pb::Error {
                    code: e.code.into(),
                    message: e.message.clone(),
                })),
            )
            .await;
            return Err(format!("register: {e}"));
        }
        {
            let mut s = self
                .inner
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(old) = s.insert(
                node.to_string(),
                Session {
                    conn: conn.clone(),
                    epoch,
                    last_heartbeat: Instant::now(),
                },
            ) {
                old.conn
                    .close(4u32.into(), b"replaced by a newer connection");
            }
        }
        tracing::info!(%node, workspaces = reg.inventory.len(), "agent registered");
        write_frame(
            send,
            &down(Down::Registered(lk::Registered {
                node_id: node.into(),
                heartbeat_interval_ms: self.inner.cfg.heartbeat.as_millis() as u32,
            })),
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = self.inner.events.send(LinkEvent::Registered {
            at_ms: now_ms(),
            node: node.into(),
            inventory: reg.inventory,
        });
        while let Some(msg) = read_frame::<_, lk::AgentMessage>(recv)
            .await
            .map_err(|e| e.to_string())?
        {
            match msg.msg {
                Some(Up::Heartbeat(hb)) => {
                    if let Some(s) = self
                        .inner
                        .sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(node)
                    {
                        s.last_heartbeat = Instant::now();
                    }
                    write_frame(
                        send,
                        &down(Down::HeartbeatAck(lk::HeartbeatAck { seq: hb.seq })),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Some(Up::Status(r)) => {
                    if let Some(status) = r.status {
                        let _ = self.inner.events.send(LinkEvent::Status {
                            node: node.into(),
                            status,
                        });
                    }
                }
                Some(Up::Register(_)) | None => {
                    write_frame(
                        send,
                        &down(Down::Error(pb::Error {
                            code: "invalid_request".into(),
                            message: "register is only valid as the first message".into(),
                        })),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    async fn renew(&self, node: &str, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let result = match read_frame::<_, lk::RenewRequest>(&mut recv).await {
            Ok(Some(req)) => match self.issue(node, &req.csr_der) {
                Ok(i) => {
                    tracing::info!(%node, not_after = i.not_after_unix, "node certificate renewed");
                    lk::renew_response::Result::Issued(i)
                }
                Err(e) => lk::renew_response::Result::Error(pb::Error {
                    code: e.code.into(),
                    message: e.message,
                }),
            },
            _ => return,
        };
        let _ = write_frame(
            &mut send,
            &lk::RenewResponse {
                result: Some(result),
            },
        )
        .await;
        let _ = send.finish();
    }

    fn conn(&self, node: &str) -> Result<quinn::Connection, LinkError> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .map(|s| s.conn.clone())
            .ok_or_else(|| LinkError::NotConnected(node.into()))
    }

    /// Opens a stream to `node`, sends `cmd` and reads the first answer;
    /// the stream stays open for what follows (exec frames).
    async fn open_command(
        &self,
        node: &str,
        cmd: pb::request::Command,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, pb::response::Result), LinkError> {
        let conn = self.conn(node)?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(node, e))?;
        write_frame(&mut send, &pb::Request { command: Some(cmd) })
            .await
            .map_err(|e| broken(node, e))?;
        let resp: pb::Response = read_frame(&mut recv)
            .await
            .map_err(|e| broken(node, e))?
            .ok_or_else(|| broken(node, "stream ended without an answer"))?;
        let result = resp.result.ok_or_else(|| broken(node, "empty answer"))?;
        Ok((send, recv, result))
    }

    /// Sends one command on its own stream and waits for the answer.
    pub async fn call(
        &self,
        node: &str,
        cmd: pb::request::Command,
        timeout: Duration,
    ) -> Result<pb::response::Result, LinkError> {
        let fut = async {
            let (mut send, _, result) = self.open_command(node, cmd).await?;
            let _ = send.finish();
            Ok(result)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| LinkError::Timeout(node.into()))?
    }

    /// A tunnel to a workspace on `node` (a `Connect` to one of its ports or
    /// an `Ssh` session): the QUIC stream pair that carries its bytes once
    /// the agent accepted it, or the agent's refusal.
    pub async fn tunnel(
        &self,
        node: &str,
        command: pb::request::Command,
    ) -> Result<Result<(quinn::SendStream, quinn::RecvStream), pb::Error>, LinkError> {
        self.stream(node, command, |r| {
            matches!(r, pb::response::Result::Connected(true))
        })
        .await
    }

    /// Starts an interactive exec (a terminal): the stream pair that carries
    /// its ExecInput / ExecOutput frames once the agent started it, or the
    /// agent's refusal.
    pub async fn exec_stream(
        &self,
        node: &str,
        req: pb::ExecRequest,
    ) -> Result<Result<(quinn::SendStream, quinn::RecvStream), pb::Error>, LinkError> {
        self.stream(node, pb::request::Command::Exec(req), |r| {
            matches!(r, pb::response::Result::ExecStarted(_))
        })
        .await
    }

    /// Opens a command's stream and keeps it if the first answer is
    /// `accepted`; an error answer is the agent's refusal.
    async fn stream(
        &self,
        node: &str,
        command: pb::request::Command,
        accepted: impl Fn(&pb::response::Result) -> bool,
    ) -> Result<Result<(quinn::SendStream, quinn::RecvStream), pb::Error>, LinkError> {
        let fut = self.open_command(node, command);
        let (send, recv, first) = tokio::time::timeout(Duration::from_secs(15), fut)
            .await
            .map_err(|_| LinkError::Timeout(node.into()))??;
        match first {
            r if accepted(&r) => Ok(Ok((send, recv))),
            pb::response::Result::Error(e) => Ok(Err(e)),
            other => Err(broken(node, format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs a command in a workspace and collects its output.
    pub async fn exec(
        &self,
        node: &str,
        req: pb::ExecRequest,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<ExecDone, pb::Error>, LinkError> {
        use pb::exec_input::Input;
        use pb::exec_output::Output;
        let fut = async {
            let (mut send, mut recv, first) = self
                .open_command(node, pb::request::Command::Exec(req))
                .await?;
            match first {
                pb::response::Result::ExecStarted(_) => {}
                pb::response::Result::Error(e) => return Ok(Err(e)),
                other => return Err(broken(node, format!("unexpected answer {other:?}"))),
            }
            let mut inputs = Vec::new();
            if !stdin.is_empty() {
                inputs.push(Input::Stdin(stdin));
            }
            inputs.push(Input::CloseStdin(true));
            for input in inputs {
                write_frame(&mut send, &pb::ExecInput { input: Some(input) })
                    .await
                    .map_err(|e| broken(node, e))?;
            }
            let mut done = ExecDone::default();
            while let Some(msg) = read_frame::<_, pb::ExecOutput>(&mut recv)
                .await
                .map_err(|e| broken(node, e))?
            {
                match msg.output {
                    Some(Output::Stdout(b)) => done.truncated |= keep(&mut done.stdout, &b),
                    Some(Output::Stderr(b)) => done.truncated |= keep(&mut done.stderr, &b),
                    Some(Output::ExitCode(c)) => {
                        done.exit_code = c;
                        return Ok(Ok(done));
                    }
                    Some(Output::Error(e)) => return Ok(Err(e)),
                    None => {}
                }
            }
            Err(broken(node, "exec stream ended without an exit code"))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| LinkError::Timeout(node.into()))?
    }
}

/// Relays a started exec: writes `stdin` (then closes it) and yields the
/// command's output as it arrives, then its exit status, or an error frame
/// (`exec_timeout` after `timeout`, `node_error` if the stream breaks).
/// At most a few frames wait in memory: a slow reader slows the command.
/// Dropping the stream drops the QUIC streams, and the agent kills the
/// command.
pub fn relay_exec(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    stdin: Vec<u8>,
    timeout: Duration,
    node: String,
) -> impl futures::Stream<Item = berth_proto::exec_stream::Frame> {
    use berth_proto::exec_stream::{Frame, MAX_PAYLOAD};
    use pb::exec_input::Input;
    use pb::exec_output::Output;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(8);
    tokio::spawn(async move {
        let error = |code: &str, message: String| Frame::Error {
            code: code.into(),
            message,
        };
        let run = async {
            let mut inputs = Vec::new();
            if !stdin.is_empty() {
                inputs.push(Input::Stdin(stdin));
            }
            inputs.push(Input::CloseStdin(true));
            for input in inputs {
                let frame = pb::ExecInput { input: Some(input) };
                if let Err(e) = write_frame(&mut send, &frame).await {
                    return error("node_error", broken(&node, e).to_string());
                }
            }
            loop {
                let msg = match read_frame::<_, pb::ExecOutput>(&mut recv).await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        return error(
                            "node_error",
                            format!("{node}: the exec stream ended without an exit status"),
                        )
                    }
                    Err(e) => return error("node_error", broken(&node, e).to_string()),
                };
                let (bytes, stdout) = match msg.output {
                    Some(Output::Stdout(b)) => (b, true),
                    Some(Output::Stderr(b)) => (b, false),
                    Some(Output::ExitCode(c)) => return Frame::Exit(c),
                    Some(Output::Error(e)) => {
                        return error("node_error", format!("{}: {}", e.code, e.message))
                    }
                    None => continue,
                };
                for chunk in bytes.chunks(MAX_PAYLOAD) {
                    let f = match stdout {
                        true => Frame::Stdout(chunk.to_vec()),
                        false => Frame::Stderr(chunk.to_vec()),
                    };
                    if tx.send(f).await.is_err() {
                        // The caller went away: dropping the streams ends the command.
                        return Frame::Exit(-1);
                    }
                }
            }
        };
        let last = match tokio::time::timeout(timeout, run).await {
            Ok(f) => f,
            Err(_) => error(
                "exec_timeout",
                format!(
                    "the command did not finish in {} s and was killed",
                    timeout.as_secs()
                ),
            ),
        };
        let _ = tx.send(last).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Most bytes of each output stream an exec answer carries; the rest is
/// read (the command runs to its end) and dropped.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// What a finished exec answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecDone {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output past `EXEC_OUTPUT_LIMIT` was dropped.
    pub truncated: bool,
}

/// Appends what fits under the limit; returns whether anything was dropped.
fn keep(buf: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = EXEC_OUTPUT_LIMIT.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..room.min(chunk.len())]);
    chunk.len() > room
}

fn broken(node: &str, e: impl std::fmt::Display) -> LinkError {
    LinkError::Broken {
        node: node.into(),
        message: e.to_string(),
    }
}

fn down(m: Down) -> lk::CoordinatorMessage {
    lk::CoordinatorMessage { msg: Some(m) }
}
