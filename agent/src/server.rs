//! The command API: framed protobuf requests on the local Unix socket (root
//! only) and, identically, on the QUIC bi-streams the coordinator opens.

use crate::error::{AgentError, Result};
use crate::tunnel::Tunnels;
use crate::workspace::Manager;
use berth_proto::agent::{self as pb, request::Command, response::Result as R};
use berth_proto::{read_frame, write_frame};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Binds the control socket, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(AgentError::io("mkdir socket dir"))?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(AgentError::io(format!("bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(AgentError::io("chmod socket"))?;
    Ok(l)
}

/// What the command API serves: the node's workspaces and its tunnels.
#[derive(Clone, Debug)]
pub struct Node {
    pub workspaces: Manager,
    pub tunnels: Tunnels,
    /// The node's preemption notice, once one came (`crate::preempt`).
    pub preemption: tokio::sync::watch::Receiver<Option<berth_proto::link::Preemption>>,
}

/// Serves connections until the listener fails.
pub async fn serve(listener: UnixListener, m: Node) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let m = m.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(s, m).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on control socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(s: UnixStream, m: Node) -> std::result::Result<(), berth_proto::FrameError> {
    let (rd, wr) = s.into_split();
    serve_stream(rd, wr, m).await
}

/// Serves framed requests on one byte stream (a Unix socket connection or a
/// QUIC bi-stream from the coordinator) until it ends; an exec takes over the
/// rest of the stream.
pub async fn serve_stream<Rd, Wr>(
    mut rd: Rd,
    mut s: Wr,
    node: Node,
) -> std::result::Result<(), berth_proto::FrameError>
where
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    while let Some(req) = read_frame::<_, pb::Request>(&mut rd).await? {
        let Some(cmd) = req.command else {
            write_frame(
                &mut s,
                &error(&AgentError::InvalidRequest("empty request".into())),
            )
            .await?;
            continue;
        };
        let m = &node.workspaces;
        if let Command::Exec(e) = cmd {
            return exec(rd, s, m.clone(), e).await;
        }
        if let Command::Connect(c) = cmd {
            return connect(rd, s, m.clone(), c).await;
        }
        if let Command::Ssh(req) = cmd {
            return ssh(rd, s, node, req).await;
        }
        if let Command::InitLog(req) = cmd {
            return init_log(s, m.clone(), req).await;
        }
        if let Command::Files(req) = cmd {
            return crate::tunnel::files::serve(rd, s, m.clone(), req).await;
        }
        let result = dispatch(m, cmd).await;
        let resp = match result {
            Ok(r) => pb::Response { result: Some(r) },
            Err(e) => {
                if e.is_user_error() {
                    tracing::info!(code = e.code(), error = %e, "request refused");
                } else {
                    tracing::warn!(code = e.code(), error = %e, "request failed");
                }
                error(&e)
            }
        };
        write_frame(&mut s, &resp).await?;
    }
    Ok(())
}

/// The answer that hands a stream over to a tunnel's bytes.
fn connected() -> pb::Response {
    pb::Response {
        result: Some(R::Connected(true)),
    }
}

fn error(e: &AgentError) -> pb::Response {
    pb::Response {
        result: Some(R::Error(e.to_proto())),
    }
}

/// Runs one non-streaming command.
pub async fn dispatch(m: &Manager, cmd: Command) -> Result<R> {
    let creds = |a: Option<pb::RegistryAuth>| {
        a.map(|a| crate::image::Credentials {
            username: a.username,
            password: a.password,
        })
    };
    Ok(match cmd {
        Command::Create(c) => R::Status(Box::pin(m.create(c)).await?),
        Command::Start(n) => R::Status(m.start(n).await?),
        Command::Secrets(req) => R::Status(m.set_secrets(req).await?),
        Command::Stop(s) => R::Status(m.stop(&s.name, s.grace_seconds, s.generation).await?),
        Command::Delete(n) => R::Status(m.delete(&n.name, n.generation).await?),
        Command::Status(n) => R::Status(m.status(&n.name).await?),
        Command::List(_) => R::List(m.list().await?),
        Command::Pull(p) => R::Pulled(m.pull(&p.image, creds(p.auth)).await?),
        Command::Sync(req) => R::Synced(m.sync(req).await?),
        Command::Prebuild(req) => R::Prebuilt(Box::pin(m.prebuild(req)).await?),
        Command::Prebuilds(_) => R::Prebuilds(m.prebuilds().await?),
        Command::DropPrebuilds(d) => {
            m.delete_pushed(&d.sources).await;
            R::Prebuilds(m.drop_prebuilds(d.keys).await?)
        }
        Command::PushPrebuild(req) => R::Pushed(m.push_prebuild(req).await?),
        Command::PullPrebuild(req) => R::Prebuilds(m.pull_prebuild(req).await?),
        Command::Cache(req) => R::Cache(m.cache(req).await?),
        Command::Notify(n) => R::Notified(m.notify(&n.name, &n.message).await?),
        Command::Backup(req) => R::BackedUp(m.backup(req).await?),
        Command::Restore(req) => R::Restored(m.restore(req).await?),
        Command::DropBackups(req) => R::Dropped(m.drop_backups(req).await?),
        Command::Exec(_)
        | Command::Connect(_)
        | Command::Ssh(_)
        | Command::InitLog(_)
        | Command::Files(_) => {
            return Err(AgentError::InvalidRequest(
                "exec, connect, ssh, init_log and files need a stream".into(),
            ))
        }
    })
}

/// Buffer of each direction of a port connection relay.
const RELAY_BUF: usize = 256 << 10;

/// A connection to a workspace port: the answer, then raw bytes both ways
/// until either side closes (each direction half-closed on its own).
async fn connect<Rd, Wr>(
    rd: Rd,
    mut wr: Wr,
    m: Manager,
    req: pb::ConnectRequest,
) -> std::result::Result<(), berth_proto::FrameError>
where
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    let Some(kind) = crate::tunnel::activity::Kind::parse(&req.kind).filter(|k| {
        matches!(
            k,
            crate::tunnel::activity::Kind::Port | crate::tunnel::activity::Kind::Preview
        )
    }) else {
        let e = AgentError::InvalidRequest(format!("unknown connection kind {:?}", req.kind));
        return write_frame(&mut wr, &error(&e)).await;
    };
    let tcp = match m.connect(&req.name, req.port).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(workspace = %req.name, port = req.port, code = e.code(), error = %e, "connect refused");
            return write_frame(&mut wr, &error(&e)).await;
        }
    };
    write_frame(&mut wr, &connected()).await?;
    use tokio::io::AsyncWriteExt;
    let session = m.activity().open(&req.name, kind);
    let rd = crate::tunnel::activity::Counted::new(rd, session.clone());
    let mut wr = crate::tunnel::activity::Counted::new(wr, session);
    let (tr, mut tw) = tcp.into_split();
    // 256 KiB buffers: tokio's default 8 KiB costs a syscall pair per 8 KiB.
    let up = async {
        let mut rd = tokio::io::BufReader::with_capacity(RELAY_BUF, rd);
        let _ = tokio::io::copy_buf(&mut rd, &mut tw).await;
        let _ = tw.shutdown().await;
    };
    let down = async {
        let mut tr = tokio::io::BufReader::with_capacity(RELAY_BUF, tr);
        let _ = tokio::io::copy_buf(&mut tr, &mut wr).await;
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
    Ok(())
}

/// An SSH connection to a workspace: the answer, then the SSH protocol,
/// served by the agent (see `crate::tunnel::ssh`).
async fn ssh<Rd, Wr>(
    rd: Rd,
    mut wr: Wr,
    node: Node,
    req: pb::SshRequest,
) -> std::result::Result<(), berth_proto::FrameError>
where
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    let keys = crate::tunnel::ssh::parse_keys(&req.authorized_keys);
    let m = node.workspaces;
    let refusal = if let Err(e) = m.status(&req.name).await {
        Some(e)
    } else if keys.is_empty() {
        Some(AgentError::InvalidRequest(
            "no usable authorized key was sent".into(),
        ))
    } else {
        None
    };
    if let Some(e) = refusal {
        tracing::info!(workspace = %req.name, code = e.code(), error = %e, "ssh refused");
        return write_frame(&mut wr, &error(&e)).await;
    }
    write_frame(&mut wr, &connected()).await?;
    let config = node.tunnels.ssh_config();
    let stream = tokio::io::join(rd, wr);
    if let Err(e) = crate::tunnel::ssh::serve(m, config, req.name, keys, stream).await {
        tracing::debug!(error = %e, "ssh session failed");
    }
    Ok(())
}

/// A repository workspace's init log: the answer, then the log's bytes.
async fn init_log<Wr>(
    mut wr: Wr,
    m: Manager,
    req: pb::InitLogRequest,
) -> std::result::Result<(), berth_proto::FrameError>
where
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = m.init_log_ready(&req.name) {
        return write_frame(&mut wr, &error(&e)).await;
    }
    write_frame(&mut wr, &connected()).await?;
    if let Err(e) = m.copy_init_log(&req.name, req.follow, &mut wr).await {
        tracing::debug!(workspace = %req.name, error = %e, "init log stream ended");
    }
    Ok(())
}

async fn exec<Rd, Wr>(
    mut rd: Rd,
    mut wr: Wr,
    m: Manager,
    req: pb::ExecRequest,
) -> std::result::Result<(), berth_proto::FrameError>
where
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel::<pb::ExecOutput>(64);
    // A web terminal is a tunnel too: its keystrokes and output are counted.
    let session = (req.activity == "terminal").then(|| {
        m.activity()
            .open(&req.name, crate::tunnel::activity::Kind::Terminal)
    });
    let counted = session.clone();
    write_frame(
        &mut wr,
        &pb::Response {
            result: Some(R::ExecStarted(true)),
        },
    )
    .await?;
    let reader = tokio::spawn(async move {
        while let Ok(Some(msg)) = read_frame::<_, pb::ExecInput>(&mut rd).await {
            if let (Some(s), Some(pb::exec_input::Input::Stdin(b))) = (&counted, &msg.input) {
                s.add_in(b.len());
            }
            if in_tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if let (Some(s), Some(pb::exec_output::Output::Stdout(b))) = (&session, &msg.output) {
                s.add_out(b.len());
            }
            if write_frame(&mut wr, &msg).await.is_err() {
                break;
            }
        }
    });
    if let Err(e) = m.exec(req, in_rx, out_tx.clone()).await {
        let _ = out_tx
            .send(pb::ExecOutput {
                output: Some(pb::exec_output::Output::Error(e.to_proto())),
            })
            .await;
    }
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
    Ok(())
}
