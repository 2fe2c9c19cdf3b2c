//! The link to the agents, as the service sees it: the `NodeLink` trait
//! (send a command, open a stream), what the link reports (`LinkEvent`),
//! and the exec protocol carried on a stream. The QUIC endpoint that
//! implements it is `quic`; a test can put a fake in its place.

pub mod quic;

use crate::domain::node::{JoinRefusal, Registration};
use crate::error::Error;
use berth_proto::agent as pb;
use berth_proto::link as lk;
use berth_proto::{read_frame, write_frame};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// Settings of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub listen: std::net::SocketAddr,
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

/// The two halves of a stream to a node.
pub struct Duplex {
    pub send: Box<dyn AsyncWrite + Send + Unpin>,
    pub recv: Box<dyn AsyncRead + Send + Unpin>,
}

impl std::fmt::Debug for Duplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplex").finish_non_exhaustive()
    }
}

/// What the service needs of the link to its nodes.
pub trait NodeLink: Send + Sync + 'static {
    /// Node ids with a live connection here.
    fn connected(&self) -> Vec<String>;

    fn is_connected(&self, node: &str) -> bool;

    /// Sends one command on a stream of its own and waits (up to `timeout`)
    /// for the answer.
    fn call(
        &self,
        node: &str,
        cmd: pb::request::Command,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<pb::response::Result, LinkError>>;

    /// Opens a stream to `node`, sends `cmd` and reads the first answer; the
    /// stream stays open for what follows (exec frames, tunnel bytes).
    fn open(
        &self,
        node: &str,
        cmd: pb::request::Command,
    ) -> BoxFuture<'_, Result<(Duplex, pb::response::Result), LinkError>>;
}

/// What the link reports to the service, the one writer: each event that
/// needs the store written first carries where to send the outcome.
#[derive(Debug)]
pub enum LinkEvent {
    /// A node presents a join token (already checked against this CA):
    /// consume it for `node_id`.
    Join {
        node_id: String,
        token_id: String,
        secret_hash: String,
        reply: oneshot::Sender<Result<Result<(), JoinRefusal>, Error>>,
    },
    /// A node (re)connects: record its registration (capacity, labels,
    /// images); the node is ready once that is done.
    Register {
        node: String,
        registration: Registration,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// The registered node's full inventory: reconcile the store with it.
    Registered {
        node: String,
        inventory: Vec<pb::WorkspaceStatus>,
        /// When the inventory arrived (coordinator clock): anything the store
        /// learnt after that is newer than the inventory.
        at_ms: i64,
    },
    /// The prebuild layers a node holds changed: all of them.
    Prebuilds { node: String, keys: Vec<String> },
    /// A create on a node waits on a pull: how far it got.
    Progress {
        node: String,
        progress: pb::PullProgress,
    },
    /// The images a node has changed (a pull, an eviction): all of them.
    Images { node: String, names: Vec<String> },
    /// What a node's workspaces use now (each heartbeat).
    Usage {
        node: String,
        usage: berth_proto::link::NodeUsage,
    },
    /// The node is about to be taken away (a spot instance's notice).
    Preempted {
        node: String,
        notice: lk::Preemption,
    },
    /// A node reported a change of one of its workspaces.
    Status {
        node: String,
        status: Box<pb::WorkspaceStatus>,
    },
    /// A node's connection ended.
    Disconnected { node: String },
}

impl LinkEvent {
    /// What a heartbeat of `node` tells beyond liveness: the prebuild layers
    /// and images it holds when they changed, what its workspaces use.
    pub fn of_heartbeat(node: &str, hb: lk::Heartbeat) -> Vec<LinkEvent> {
        let mut out = Vec::new();
        if let Some(l) = hb.prebuilds {
            let (node, keys) = (node.to_string(), l.keys);
            out.push(LinkEvent::Prebuilds { node, keys });
        }
        if let Some(l) = hb.images {
            let (node, names) = (node.to_string(), l.names);
            out.push(LinkEvent::Images { node, names });
        }
        if let Some(usage) = hb.usage {
            let node = node.to_string();
            out.push(LinkEvent::Usage { node, usage });
        }
        out
    }
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

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NotConnected(_) => Error::unavailable("node_unreachable", e.to_string()),
            LinkError::Broken { .. } => Error::node("node_link_broken", e.to_string()),
            LinkError::Timeout(_) => Error::node("node_timeout", e.to_string()),
        }
    }
}

pub(crate) fn broken(node: &str, e: impl std::fmt::Display) -> LinkError {
    LinkError::Broken {
        node: node.into(),
        message: e.to_string(),
    }
}

/// Opens a command's stream and keeps it if the first answer is `accepted`
/// (within 15 s); an error answer is the agent's refusal.
pub async fn stream(
    link: &dyn NodeLink,
    node: &str,
    cmd: pb::request::Command,
    accepted: impl Fn(&pb::response::Result) -> bool,
) -> Result<Result<Duplex, pb::Error>, LinkError> {
    let (duplex, first) = opened(link, node, cmd).await?;
    match first {
        r if accepted(&r) => Ok(Ok(duplex)),
        pb::response::Result::Error(e) => Ok(Err(e)),
        other => Err(broken(node, format!("unexpected answer {other:?}"))),
    }
}

/// A stream to `node` carrying `cmd`, and the agent's first answer on it
/// (within 15 s).
pub async fn opened(
    link: &dyn NodeLink,
    node: &str,
    cmd: pb::request::Command,
) -> Result<(Duplex, pb::response::Result), LinkError> {
    tokio::time::timeout(Duration::from_secs(15), link.open(node, cmd))
        .await
        .map_err(|_| LinkError::Timeout(node.into()))?
}

/// A tunnel to a workspace on `node` (a `Connect` to one of its ports or an
/// `Ssh` session): the stream that carries its bytes once the agent accepted
/// it, or the agent's refusal.
pub async fn tunnel(
    link: &dyn NodeLink,
    node: &str,
    command: pb::request::Command,
) -> Result<Result<Duplex, pb::Error>, LinkError> {
    stream(link, node, command, |r| {
        matches!(r, pb::response::Result::Connected(true))
    })
    .await
}

/// Starts an exec: the stream that carries its ExecInput / ExecOutput
/// frames once the agent started it, or the agent's refusal.
pub async fn exec_stream(
    link: &dyn NodeLink,
    node: &str,
    req: pb::ExecRequest,
) -> Result<Result<Duplex, pb::Error>, LinkError> {
    stream(link, node, pb::request::Command::Exec(req), |r| {
        matches!(r, pb::response::Result::ExecStarted(_))
    })
    .await
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

/// Writes `stdin` to a started exec, then closes it.
async fn give_stdin(send: &mut Duplex, stdin: Vec<u8>) -> Result<(), berth_proto::FrameError> {
    use pb::exec_input::Input;
    let mut inputs = Vec::new();
    if !stdin.is_empty() {
        inputs.push(Input::Stdin(stdin));
    }
    inputs.push(Input::CloseStdin(true));
    for input in inputs {
        write_frame(&mut send.send, &pb::ExecInput { input: Some(input) }).await?;
    }
    Ok(())
}

/// Runs a command in a workspace and collects its output, each stream cut
/// at `EXEC_OUTPUT_LIMIT` (the whole call within `timeout`).
pub async fn exec(
    link: &dyn NodeLink,
    node: &str,
    req: pb::ExecRequest,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Result<ExecDone, pb::Error>, LinkError> {
    use pb::exec_output::Output;
    let fut = async {
        let (mut duplex, first) = link.open(node, pb::request::Command::Exec(req)).await?;
        match first {
            pb::response::Result::ExecStarted(_) => {}
            pb::response::Result::Error(e) => return Ok(Err(e)),
            other => return Err(broken(node, format!("unexpected answer {other:?}"))),
        }
        give_stdin(&mut duplex, stdin)
            .await
            .map_err(|e| broken(node, e))?;
        let mut done = ExecDone::default();
        while let Some(msg) = read_frame::<_, pb::ExecOutput>(&mut duplex.recv)
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

/// Relays a started exec: writes `stdin` (then closes it) and yields the
/// command's output as it arrives, then its exit status, or an error frame
/// (`exec_timeout` after `timeout`, `node_error` if the stream breaks).
/// At most a few frames wait in memory: a slow reader slows the command.
/// Dropping the stream drops the node's stream, and the agent kills the
/// command.
pub fn relay_exec(
    mut duplex: Duplex,
    stdin: Vec<u8>,
    timeout: Duration,
    node: String,
) -> impl futures::Stream<Item = berth_proto::exec_stream::Frame> {
    use berth_proto::exec_stream::{Frame, MAX_PAYLOAD};
    use pb::exec_output::Output;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(8);
    tokio::spawn(async move {
        let error = |code: &str, message: String| Frame::Error {
            code: code.into(),
            message,
        };
        let run = async {
            if let Err(e) = give_stdin(&mut duplex, stdin).await {
                return error("node_error", broken(&node, e).to_string());
            }
            loop {
                let msg = match read_frame::<_, pb::ExecOutput>(&mut duplex.recv).await {
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
                        // The caller went away: dropping the stream ends the command.
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
