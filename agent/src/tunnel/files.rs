//! The file API's operations in a running workspace (the portal's editor
//! and `GET/PUT/DELETE /v1/workspaces/{name}/files/…`). Each runs on a
//! thread of its own that enters the workspace's mount namespace as its
//! user, exactly as SFTP does (`sftp::enter`), and resolves every path
//! beneath /workspace (`beneath`): nothing outside it is read or changed,
//! whatever symlinks the workspace holds. The stream's protocol is
//! `FilesRequest`'s (agent.proto).

use super::beneath::{self, Beneath};
use super::{sftp, WorkspaceAccess};
use crate::error::AgentError;
use crate::tunnel::activity::Kind;
use berth_proto::agent as pb;
use berth_proto::agent::response::Result as R;
use berth_proto::codes::Code;
use berth_proto::frame::{read_frame, write_frame};
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, fstatat, FileStat};
use std::io::{Read, Write};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The directory the file API serves.
const ROOT: &str = "/workspace";
/// Most entries a listing carries.
const MAX_ENTRIES: usize = 10_000;
/// Bytes per chunk between the thread and the stream.
const CHUNK: usize = 256 << 10;

/// What the thread sends back.
enum Out {
    /// A WRITE's preconditions hold: the bytes may come.
    Ready,
    Answer(Result<pb::FilesAnswer, AgentError>),
    /// A READ's file content.
    Chunk(Vec<u8>),
}

/// The refusal an I/O error of a file operation becomes.
fn refusal(e: std::io::Error, path: &str) -> AgentError {
    let (code, what) = match e.raw_os_error().unwrap_or(0) {
        libc::ENOENT => (Code::FileNotFound, "no such file or directory"),
        libc::EEXIST => (Code::FileExists, "already exists"),
        libc::EXDEV => (Code::OutsideWorkspace, "leads out of /workspace"),
        libc::EISDIR => (Code::FileKind, "is a directory"),
        libc::ENOTDIR => (Code::FileKind, "a part of the path is not a directory"),
        libc::ENOTEMPTY => (Code::FileKind, "is a directory that is not empty"),
        libc::ELOOP => (Code::FileKind, "too many symlinks"),
        libc::EACCES | libc::EPERM | libc::EROFS => {
            (Code::FileDenied, "permission denied to the workspace user")
        }
        libc::ENOSPC | libc::EDQUOT => (Code::VolumeFull, "the workspace's volume is full"),
        libc::EINVAL | libc::ENAMETOOLONG => (Code::FileKind, "not a usable path"),
        _ => {
            return AgentError::Io {
                context: format!("{ROOT}/{path}"),
                source: e,
            }
        }
    };
    file_error(code, format!("{ROOT}/{path}: {what}"))
}

fn file_error(code: Code, message: String) -> AgentError {
    AgentError::File { code, message }
}

/// A stat as the API shows it.
fn info(path: String, st: &FileStat, target: Option<std::ffi::OsString>) -> pb::FileInfo {
    pb::FileInfo {
        path,
        kind: beneath::kind(st).into(),
        size: st.st_size as u64,
        modified_ms: st.st_mtime * 1000 + st.st_mtime_nsec / 1_000_000,
        mode: st.st_mode & 0o7777,
        etag: beneath::etag(st),
        target: target
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

fn answer(info: pb::FileInfo) -> pb::FilesAnswer {
    pb::FilesAnswer {
        info: Some(info),
        ..Default::default()
    }
}

/// The request's checks against what is at the path now (`None`: nothing).
fn precondition(req: &pb::FilesRequest, now: Option<&FileStat>) -> Result<(), AgentError> {
    let path = format!("{ROOT}/{}", req.path);
    if req.if_none_match && now.is_some() {
        return Err(file_error(
            Code::FileExists,
            format!("{path}: already exists"),
        ));
    }
    if !req.if_match.is_empty() && now.map(beneath::etag).as_deref() != Some(&req.if_match) {
        return Err(file_error(
            Code::PreconditionFailed,
            format!(
                "{path} changed since it was read (its etag is not {})",
                req.if_match
            ),
        ));
    }
    Ok(())
}

/// What is at `rel` itself, if anything.
fn current(root: &Beneath, rel: &Path, path: &str) -> Result<Option<FileStat>, AgentError> {
    match root.lstat(rel) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(refusal(e, path)),
    }
}

/// Runs `req` on this (entered) thread: answers, chunks and `Ready` to `tx`,
/// a WRITE's bytes from `rx`.
fn run(req: &pb::FilesRequest, tx: &mpsc::Sender<Out>, rx: mpsc::Receiver<Vec<u8>>) {
    let done = |r| {
        let _ = tx.blocking_send(Out::Answer(r));
    };
    let path = req.path.as_str();
    let rel = match beneath::relative(path) {
        Ok(r) => r,
        Err(e) => return done(Err(refusal(e, path))),
    };
    let root = match Beneath::open_root(Path::new(ROOT)) {
        Ok(r) => r,
        Err(e) => return done(Err(refusal(e, ""))),
    };
    let op = pb::FileOp::try_from(req.op).unwrap_or(pb::FileOp::FileStat);
    let r = match op {
        pb::FileOp::FileStat => root
            .lstat(&rel)
            .map(|st| answer(info(path.into(), &st, None)))
            .map_err(|e| refusal(e, path)),
        pb::FileOp::FileRead => return read(&root, &rel, path, tx),
        pb::FileOp::FileWrite => write(&root, &rel, req, tx, rx),
        pb::FileOp::FileDelete => current(&root, &rel, path).and_then(|now| {
            if now.is_none() {
                return Err(refusal(std::io::ErrorKind::NotFound.into(), path));
            }
            precondition(req, now.as_ref())?;
            root.remove(&rel, req.recursive)
                .map(|()| pb::FilesAnswer::default())
                .map_err(|e| refusal(e, path))
        }),
        pb::FileOp::FileMkdir => root
            .mkdir_all(&rel)
            .and_then(|()| root.lstat(&rel))
            .map(|st| answer(info(path.into(), &st, None)))
            .map_err(|e| refusal(e, path)),
        pb::FileOp::FileRename => beneath::relative(&req.to)
            .and_then(|to| {
                root.rename(&rel, &to)?;
                root.lstat(&to)
            })
            .map(|st| answer(info(req.to.clone(), &st, None)))
            .map_err(|e| refusal(e, &req.to)),
    };
    done(r);
}

/// A READ: a directory's listing, or a file's stat and then its bytes.
fn read(root: &Beneath, rel: &Path, path: &str, tx: &mpsc::Sender<Out>) {
    let send = |o| tx.blocking_send(o).is_ok();
    // O_NONBLOCK: a FIFO must not hold the thread; a regular file ignores it.
    let fd = match root.open(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) {
        Ok(fd) => fd,
        Err(e) => {
            send(Out::Answer(Err(refusal(e, path))));
            return;
        }
    };
    let st = match fstat(&fd) {
        Ok(st) => st,
        Err(e) => {
            send(Out::Answer(Err(refusal(e.into(), path))));
            return;
        }
    };
    match beneath::kind(&st) {
        "dir" => {
            let r = Beneath::entries(fd, MAX_ENTRIES)
                .map(|(entries, truncated)| pb::FilesAnswer {
                    info: Some(info(path.into(), &st, None)),
                    entries: entries
                        .into_iter()
                        .map(|(name, st, target)| {
                            info(name.to_string_lossy().into_owned(), &st, target)
                        })
                        .collect(),
                    truncated,
                })
                .map_err(|e| refusal(e, path));
            send(Out::Answer(r));
        }
        "file" => {
            if !send(Out::Answer(Ok(answer(info(path.into(), &st, None))))) {
                return;
            }
            // The size answered, no more: a file that grows meanwhile is cut
            // there, one that shrinks ends the stream short (the client sees it).
            let mut f = std::fs::File::from(fd).take(st.st_size as u64);
            loop {
                let mut buf = vec![0u8; CHUNK];
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if !send(Out::Chunk(buf)) {
                            return;
                        }
                    }
                }
            }
        }
        _ => {
            let e = file_error(
                Code::FileKind,
                format!("{ROOT}/{path}: not a file or directory"),
            );
            send(Out::Answer(Err(e)));
        }
    }
}

/// A WRITE: the bytes go to a new file beside the path, which then replaces
/// it (the old mode kept) if the preconditions still hold.
fn write(
    root: &Beneath,
    rel: &Path,
    req: &pb::FilesRequest,
    tx: &mpsc::Sender<Out>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> Result<pb::FilesAnswer, AgentError> {
    let path = req.path.as_str();
    let now = current(root, rel, path)?;
    precondition(req, now.as_ref())?;
    if let Some(k) = now.as_ref().map(beneath::kind).filter(|k| *k != "file") {
        return Err(file_error(
            Code::FileKind,
            format!("{ROOT}/{path} is a {k}: only a file can be written"),
        ));
    }
    let mode = now.as_ref().map_or(0o666, |st| st.st_mode & 0o7777);
    let (mut f, dir, tmp) = root.temporary(rel, mode).map_err(|e| refusal(e, path))?;
    let remove = || {
        let _ = nix::unistd::unlinkat(
            &dir,
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    if now.is_some() {
        // The umask narrowed the mode given at creation.
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
    }
    let _ = tx.blocking_send(Out::Ready);
    let mut total = 0u64;
    let mut complete = false;
    while let Some(chunk) = rx.blocking_recv() {
        if chunk.is_empty() {
            complete = true;
            break;
        }
        total += chunk.len() as u64;
        if total > req.max_bytes {
            remove();
            return Err(file_error(
                Code::FileTooLarge,
                format!("{ROOT}/{path}: more than {} bytes", req.max_bytes),
            ));
        }
        if let Err(e) = f.write_all(&chunk) {
            remove();
            return Err(refusal(e, path));
        }
    }
    drop(f);
    if !complete {
        remove();
        return Err(AgentError::InvalidRequest(format!(
            "{ROOT}/{path}: the upload ended before its last chunk; the file is as it was"
        )));
    }
    let name = rel.file_name().unwrap_or_default();
    // Checked again at the last moment: another writer may have come between.
    let again = match fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Some(st),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => {
            remove();
            return Err(refusal(e.into(), path));
        }
    };
    if let Err(e) = precondition(req, again.as_ref()) {
        remove();
        return Err(e);
    }
    if let Err(e) = nix::fcntl::renameat(&dir, tmp.as_os_str(), &dir, name) {
        remove();
        return Err(refusal(e.into(), path));
    }
    let st = fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| refusal(e.into(), path))?;
    Ok(answer(info(path.into(), &st, None)))
}

/// Serves one `FilesRequest` on a stream (see agent.proto).
pub async fn serve<M, Rd, Wr>(
    mut rd: Rd,
    mut wr: Wr,
    m: M,
    req: pb::FilesRequest,
) -> std::result::Result<(), berth_proto::FrameError>
where
    M: WorkspaceAccess,
    Rd: AsyncRead + Unpin + Send + 'static,
    Wr: AsyncWrite + Unpin + Send + 'static,
{
    let refuse = |e: &AgentError| pb::Response {
        result: Some(R::Error(e.to_proto())),
    };
    let target = match m.process(&req.name).await {
        Ok(t) => t,
        Err(e) => return write_frame(&mut wr, &refuse(&e)).await,
    };
    let session = m.activity().open(&req.name, Kind::Files);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(4);
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(4);
    let workspace = req.name.clone();
    let op = req.clone();
    let spawned = std::thread::Builder::new()
        .name("berth-files".into())
        .spawn(move || match sftp::enter(target) {
            Ok(()) => run(&op, &out_tx, in_rx),
            Err(e) => {
                tracing::warn!(%workspace, error = %e, "files: cannot enter the workspace");
                let e = AgentError::io("enter the workspace")(e);
                let _ = out_tx.blocking_send(Out::Answer(Err(e)));
            }
        });
    if let Err(e) = spawned {
        return write_frame(&mut wr, &refuse(&AgentError::io("spawn a thread")(e))).await;
    }
    let frame = |r: Result<pb::FilesAnswer, AgentError>| match r {
        Ok(a) => pb::Response {
            result: Some(R::Files(a)),
        },
        Err(e) => {
            tracing::info!(workspace = %req.name, code = e.code(), error = %e, "file operation refused");
            refuse(&e)
        }
    };
    let Some(first) = out_rx.recv().await else {
        return Ok(());
    };
    match first {
        Out::Answer(r) => {
            write_frame(&mut wr, &frame(r)).await?;
            // A READ's bytes follow its answer.
            while let Some(Out::Chunk(c)) = out_rx.recv().await {
                session.add_out(c.len());
                wr.write_all(&c).await?;
            }
            wr.shutdown().await?;
        }
        Out::Ready => {
            write_frame(
                &mut wr,
                &pb::Response {
                    result: Some(R::Connected(true)),
                },
            )
            .await?;
            let counted = session.clone();
            // The chunks until the last; the thread may answer first (too
            // large), which ends the copy.
            // An empty chunk tells the thread the upload is whole.
            let copy = async move {
                while let Ok(Some(c)) = read_frame::<_, pb::FileChunk>(&mut rd).await {
                    counted.add_in(c.data.len());
                    if !c.data.is_empty() && in_tx.send(c.data).await.is_err() {
                        return;
                    }
                    if c.end {
                        let _ = in_tx.send(Vec::new()).await;
                        return;
                    }
                }
            };
            let answer = tokio::select! {
                a = out_rx.recv() => a,
                () = copy => out_rx.recv().await,
            };
            if let Some(Out::Answer(r)) = answer {
                write_frame(&mut wr, &frame(r)).await?;
            }
            wr.shutdown().await?;
        }
        Out::Chunk(_) => {}
    }
    Ok(())
}
