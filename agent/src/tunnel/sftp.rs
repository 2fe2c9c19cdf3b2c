//! The `sftp` subsystem (also what OpenSSH's `scp` speaks). It runs on a
//! thread of its own that enters the workspace container's mount namespace
//! (so paths, volumes and symlinks resolve exactly as inside the container)
//! and takes the workspace user's uid, gid and groups for that thread only
//! (raw syscalls: glibc's wrappers would change every thread of the agent).
//! The thread therefore has the user's permissions and no capability; it
//! ends with the session. No pooled thread ever changes namespace or
//! identity.

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWrite};

/// Where and as whom a workspace's files are served.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// A process of the container (its init): its mount namespace is used.
    pub pid: u32,
    /// The user's node ids (its ids inside, shifted by `idmap`).
    pub uid: u32,
    pub gid: u32,
    /// How ids inside map to the node's, for the ids clients see and set.
    pub idmap: crate::idmap::IdMap,
}

/// Serves SFTP on `stream` from a dedicated thread inside the workspace;
/// when the client is done, ends the channel as sshd does when its
/// sftp-server exits (exit status 0, EOF, close).
pub fn spawn<S>(
    target: Target,
    stream: S,
    workspace: String,
    session: russh::server::Handle,
    channel: russh::ChannelId,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let spawned = std::thread::Builder::new()
        .name("berth-sftp".into())
        .spawn(move || {
            // Ends the channel as sshd does when sftp-server exits. It must be
            // queued before the channel stream is dropped, which sends Close.
            let end = move |status: u32| {
                futures::executor::block_on(async {
                    let _ = session.exit_status_request(channel, status).await;
                    let _ = session.eof(channel).await;
                });
            };
            if let Err(e) = enter(target) {
                tracing::warn!(%workspace, error = %e, "sftp: cannot enter the workspace");
                end(1);
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "sftp: runtime");
                    end(1);
                    return;
                }
            };
            rt.block_on(async move {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                let stream = OnDrop {
                    inner: Some(stream),
                    end: Some(Box::new(move || end(0))),
                    done: Some(done_tx),
                };
                russh_sftp::server::run(stream, Sftp::new(target.idmap)).await;
                // `run` serves on a task of this runtime; it drops the stream at the end.
                let _ = done_rx.await;
            });
            tracing::debug!(%workspace, "sftp session ended");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "sftp: spawn thread");
    }
}

/// Moves the calling thread into the container's mount namespace as its user.
pub(super) fn enter(t: Target) -> std::io::Result<()> {
    use nix::sched::{setns, unshare, CloneFlags};
    // A thread shares its root and cwd with the process unless it unshares them.
    unshare(CloneFlags::CLONE_FS).map_err(std::io::Error::from)?;
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", t.pid))?;
    setns(&ns, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
    let groups = [t.gid];
    // SAFETY: raw syscalls with valid arguments; they change this thread's
    // credentials only, which is the point (see the module doc).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) != 0
            || libc::syscall(libc::SYS_setresgid, t.gid, t.gid, t.gid) != 0
            || libc::syscall(libc::SYS_setresuid, t.uid, t.uid, t.uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    if std::env::set_current_dir("/workspace").is_err() {
        std::env::set_current_dir("/")?;
    }
    Ok(())
}

/// The channel's stream, which runs `end` before it is dropped and then
/// says it is gone.
struct OnDrop<S> {
    inner: Option<S>,
    end: Option<Box<dyn FnOnce() + Send>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S> Drop for OnDrop<S> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end();
        }
        drop(self.inner.take());
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(ErrorKind::NotConnected, "sftp stream closed")
}

impl<S: AsyncRead + Unpin> AsyncRead for OnDrop<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OnDrop<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_flush(cx),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            None => std::task::Poll::Ready(Err(gone())),
        }
    }
}

enum Open {
    File(std::fs::File),
    /// A directory's entries, handed out by the first readdir.
    Dir(Option<Vec<File>>),
}

/// Most handles one session may hold open.
const MAX_HANDLES: usize = 1024;

struct Sftp {
    handles: HashMap<String, Open>,
    next: u64,
    idmap: crate::idmap::IdMap,
}

/// The id shown inside for a node id outside the map (the kernel's overflow id).
const OVERFLOW_ID: u32 = 65534;

fn fail(e: std::io::Error) -> StatusReply {
    let code = match e.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

/// The attributes of `path` as SFTP shows them (the file type kept in the mode).
fn attrs(md: &std::fs::Metadata, map: crate::idmap::IdMap) -> FileAttributes {
    use std::os::unix::fs::MetadataExt;
    let mut a = FileAttributes::from(md);
    a.permissions = Some(md.permissions().mode());
    a.uid = Some(map.to_container(md.uid()).unwrap_or(OVERFLOW_ID));
    a.gid = Some(map.to_container(md.gid()).unwrap_or(OVERFLOW_ID));
    a
}

/// Applies what a SETSTAT asks for, in the order OpenSSH does.
fn set_attrs(
    path: Option<&Path>,
    file: Option<&std::fs::File>,
    a: &FileAttributes,
    map: crate::idmap::IdMap,
) -> std::io::Result<()> {
    if let Some(size) = a.size {
        match (file, path) {
            (Some(f), _) => f.set_len(size)?,
            (None, Some(p)) => std::fs::OpenOptions::new()
                .write(true)
                .open(p)?
                .set_len(size)?,
            _ => {}
        }
    }
    if let Some(mode) = a.permissions {
        let perm = std::fs::Permissions::from_mode(mode & 0o7777);
        match (file, path) {
            (Some(f), _) => f.set_permissions(perm)?,
            (None, Some(p)) => std::fs::set_permissions(p, perm)?,
            _ => {}
        }
    }
    if a.uid.is_some() || a.gid.is_some() {
        let host = |id: Option<u32>| match id {
            Some(i) => map.to_host(i).map(Some).ok_or(ErrorKind::InvalidInput),
            None => Ok(None),
        };
        let (uid, gid) = (host(a.uid)?, host(a.gid)?);
        match (file, path) {
            (Some(f), _) => std::os::unix::fs::fchown(f, uid, gid)?,
            (None, Some(p)) => std::os::unix::fs::chown(p, uid, gid)?,
            _ => {}
        }
    }
    if let (Some(at), Some(mt)) = (a.atime, a.mtime) {
        let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
        let times = std::fs::FileTimes::new()
            .set_accessed(t(at))
            .set_modified(t(mt));
        match (file, path) {
            (Some(f), _) => f.set_times(times)?,
            (None, Some(p)) => std::fs::File::options()
                .write(true)
                .open(p)?
                .set_times(times)?,
            _ => {}
        }
    }
    Ok(())
}

/// `path` made absolute against the thread's cwd and cleaned of `.` and
/// `..` (for paths that need not exist).
fn lexical(path: &str) -> PathBuf {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let joined = if path.is_empty() {
        base
    } else {
        base.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

impl Sftp {
    fn new(idmap: crate::idmap::IdMap) -> Self {
        Self {
            handles: HashMap::new(),
            next: 0,
            idmap,
        }
    }

    fn insert(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn file(&self, handle: &str) -> Result<&std::fs::File, StatusReply> {
        match self.handles.get(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(StatusCode::Failure.with_message("no such file handle")),
        }
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut o = std::fs::OpenOptions::new();
        o.read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        let f = o.open(&filename).map_err(fail)?;
        Ok(Handle {
            id,
            handle: self.insert(Open::File(f))?,
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let f = self.file(&handle)?;
        let mut buf = vec![0u8; len.min(256 * 1024) as usize];
        let n = f.read_at(&mut buf, offset).map_err(fail)?;
        if n == 0 && !buf.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.file(&handle)?
            .write_all_at(&data, offset)
            .map_err(fail)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let md = std::fs::symlink_metadata(&path).map_err(fail)?;
        Ok(Attrs {
            id,
            attrs: attrs(&md, self.idmap),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let md = std::fs::metadata(&path).map_err(fail)?;
        Ok(Attrs {
            id,
            attrs: attrs(&md, self.idmap),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let md = self.file(&handle)?.metadata().map_err(fail)?;
        Ok(Attrs {
            id,
            attrs: attrs(&md, self.idmap),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        set_attrs(Some(Path::new(&path)), None, &a, self.idmap).map_err(fail)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        set_attrs(None, Some(self.file(&handle)?), &a, self.idmap).map_err(fail)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let mut files = Vec::new();
        for name in [".", ".."] {
            if let Ok(md) = std::fs::metadata(Path::new(&path).join(name)) {
                files.push(File::new(name, attrs(&md, self.idmap)));
            }
        }
        for e in std::fs::read_dir(&path).map_err(fail)? {
            let e = e.map_err(fail)?;
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            files.push(File::new(
                e.file_name().to_string_lossy(),
                attrs(&md, self.idmap),
            ));
        }
        Ok(Handle {
            id,
            handle: self.insert(Open::Dir(Some(files)))?,
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir(entries)) => match entries.take() {
                Some(files) if !files.is_empty() => Ok(Name { id, files }),
                _ => Err(StatusCode::Eof.into()),
            },
            _ => Err(StatusCode::Failure.with_message("no such directory handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        std::fs::remove_file(&filename).map_err(fail)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        a: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(a.permissions.map_or(0o777, |m| m & 0o7777))
            .create(&path)
            .map_err(fail)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        std::fs::remove_dir(&path).map_err(fail)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = std::fs::canonicalize(if path.is_empty() { "." } else { &path })
            .unwrap_or_else(|_| lexical(&path));
        Ok(Name {
            id,
            files: vec![File::dummy(p.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTP v3 rename does not overwrite (OpenSSH's server refuses too).
        if std::fs::symlink_metadata(&newpath).is_ok() {
            return Err(StatusCode::Failure.with_message(format!("{newpath} exists")));
        }
        std::fs::rename(&oldpath, &newpath).map_err(fail)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = std::fs::read_link(&path).map_err(fail)?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH's client sends the two paths swapped relative to the
        // draft; OpenSSH's server (and so this one) follows the client.
        std::os::unix::fs::symlink(&linkpath, &targetpath).map_err(fail)?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_never_climb_above_root() {
        assert_eq!(lexical("/a/../../b/./c"), PathBuf::from("/b/c"));
        assert_eq!(lexical("/.."), PathBuf::from("/"));
    }
}
