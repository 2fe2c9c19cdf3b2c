//! The file API: a workspace's files under /workspace, through its agent,
//! which does each operation as the workspace user inside the workspace
//! and never outside /workspace (`tunnel::files` in the agent). Only a
//! running workspace's: unlike a tunnel's, a file request does not wake a
//! stopped one (a GET that may take minutes is no API; the portal offers
//! to start it).

use super::Service;
use crate::domain::lifecycle::State;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Kind, Result};
use crate::link::{self, Duplex};
use berth_proto::agent as pb;
use berth_proto::agent::response::Result as R;
use berth_proto::api::{FileAction, FileEntry, FileListing, FILE_MAX_BYTES};
use berth_proto::codes::{self, Code};
use berth_proto::frame::{read_frame, write_frame};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt};

/// What a read found: a directory's listing, or a file and its bytes.
pub enum FileRead {
    Dir(FileListing),
    File {
        entry: FileEntry,
        body: Box<dyn AsyncRead + Send + Unpin>,
    },
}

/// A file operation's condition on what is at the path now.
#[derive(Debug, Default, Clone)]
pub struct Condition {
    /// Only if the path's etag is this one.
    pub if_match: Option<String>,
    /// Only if nothing is at the path.
    pub if_none_match: bool,
}

fn entry(i: pb::FileInfo) -> FileEntry {
    FileEntry {
        path: i.path,
        kind: i.kind,
        size: i.size,
        modified_ms: i.modified_ms,
        mode: i.mode,
        etag: i.etag,
        target: i.target,
    }
}

/// The API's error for an agent's refusal of a file operation.
fn refused(e: pb::Error) -> Error {
    let m = e.message.clone();
    match codes::of(&e) {
        Some(Code::FileNotFound) => Error::not_found(m).with_code("file_not_found"),
        Some(Code::FileExists) => Error::conflict("file_exists", m),
        Some(Code::FileKind) => Error::conflict("file_kind", m),
        Some(Code::VolumeFull) => Error::conflict("volume_full", m),
        Some(Code::FileDenied) => Error::new(Kind::Forbidden, "file_denied", m),
        Some(Code::OutsideWorkspace) => Error::new(Kind::Forbidden, "outside_workspace", m),
        Some(Code::PreconditionFailed) => {
            Error::new(Kind::PreconditionFailed, "precondition_failed", m)
        }
        Some(Code::FileTooLarge) => Error::too_large(m).with_code("file_too_large"),
        Some(Code::NotFound | Code::Conflict) => Error::conflict("not_running", m),
        Some(Code::InvalidRequest) => Error::bad_request("invalid_path", m),
        _ => Error::node("node_error", format!("{}: {}", e.code, e.message)),
    }
}

fn unexpected(other: &R) -> Error {
    Error::node("node_error", format!("unexpected answer {other:?}"))
}

impl Service {
    /// Sends `req` to the running workspace's agent: the stream and its
    /// first answer; `not_running` for a workspace in any other state.
    async fn file_stream(&self, w: WorkspaceRow, mut req: pb::FilesRequest) -> Result<(Duplex, R)> {
        if w.state != State::Running {
            return Err(Error::conflict(
                "not_running",
                format!(
                    "workspace {} is {}: start it to reach its files",
                    w.name,
                    w.state.as_str()
                ),
            ));
        }
        req.name = w.id.clone();
        let node = w.node.clone().unwrap_or_default();
        let (duplex, first) =
            link::opened(&*self.inner.link, &node, pb::request::Command::Files(req)).await?;
        match first {
            R::Error(e) => Err(refused(e)),
            first => Ok((duplex, first)),
        }
    }

    /// The directory or file at `path` (relative to /workspace).
    pub async fn file_read(&self, w: WorkspaceRow, path: &str) -> Result<FileRead> {
        let req = pb::FilesRequest {
            op: pb::FileOp::FileRead.into(),
            path: path.into(),
            ..Default::default()
        };
        match self.file_stream(w, req).await? {
            (d, R::Files(a)) => {
                let info = entry(a.info.unwrap_or_default());
                Ok(if info.kind == "dir" {
                    FileRead::Dir(FileListing {
                        dir: info,
                        entries: a.entries.into_iter().map(entry).collect(),
                        truncated: a.truncated,
                    })
                } else {
                    FileRead::File {
                        entry: info,
                        body: d.recv,
                    }
                })
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// Writes `body` to `path` (made with its parents if missing), replacing
    /// the file at once if `cond` holds; at most `FILE_MAX_BYTES`.
    pub async fn file_write<S, E>(
        &self,
        w: WorkspaceRow,
        path: &str,
        cond: Condition,
        mut body: S,
    ) -> Result<FileEntry>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let req = pb::FilesRequest {
            op: pb::FileOp::FileWrite.into(),
            path: path.into(),
            if_match: cond.if_match.unwrap_or_default(),
            if_none_match: cond.if_none_match,
            max_bytes: FILE_MAX_BYTES,
            ..Default::default()
        };
        let Duplex { mut send, mut recv } = match self.file_stream(w, req).await? {
            (d, R::Connected(true)) => d,
            (_, other) => return Err(unexpected(&other)),
        };
        let answer = async {
            match read_frame::<_, pb::Response>(&mut recv).await {
                Ok(Some(pb::Response {
                    result: Some(R::Files(a)),
                })) => Ok(entry(a.info.unwrap_or_default())),
                Ok(Some(pb::Response {
                    result: Some(R::Error(e)),
                })) => Err(refused(e)),
                Ok(other) => Err(Error::node(
                    "node_error",
                    format!("unexpected answer {other:?}"),
                )),
                Err(e) => Err(Error::node("node_link_broken", e.to_string())),
            }
        };
        // Without the last chunk (the client went away) the agent keeps the
        // file as it was.
        let upload = async {
            while let Some(chunk) = body.next().await {
                let data = chunk.map_err(|e| Error::bad_request("invalid_body", e.to_string()))?;
                let c = pb::FileChunk {
                    data: data.to_vec(),
                    end: false,
                };
                if write_frame(&mut send, &c).await.is_err() {
                    // The agent answered (too large) and went: its answer says why.
                    return Ok(());
                }
            }
            let end = pb::FileChunk {
                data: Vec::new(),
                end: true,
            };
            let _ = write_frame(&mut send, &end).await;
            let _ = send.shutdown().await;
            Ok::<(), Error>(())
        };
        tokio::pin!(answer);
        tokio::select! {
            a = &mut answer => a,
            r = upload => {
                r?;
                answer.await
            }
        }
    }

    /// Deletes what is at `path` (a directory only with `recursive`).
    pub async fn file_delete(
        &self,
        w: WorkspaceRow,
        path: &str,
        cond: Condition,
        recursive: bool,
    ) -> Result<()> {
        let req = pb::FilesRequest {
            op: pb::FileOp::FileDelete.into(),
            path: path.into(),
            if_match: cond.if_match.unwrap_or_default(),
            recursive,
            ..Default::default()
        };
        match self.file_stream(w, req).await? {
            (_, R::Files(_)) => Ok(()),
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// Makes a directory at `path`, or moves what is there.
    pub async fn file_act(
        &self,
        w: WorkspaceRow,
        path: &str,
        action: FileAction,
    ) -> Result<FileEntry> {
        let req = match action {
            FileAction::Mkdir => pb::FilesRequest {
                op: pb::FileOp::FileMkdir.into(),
                path: path.into(),
                ..Default::default()
            },
            FileAction::Rename { to } => pb::FilesRequest {
                op: pb::FileOp::FileRename.into(),
                path: path.into(),
                to,
                ..Default::default()
            },
        };
        match self.file_stream(w, req).await? {
            (_, R::Files(a)) => Ok(entry(a.info.unwrap_or_default())),
            (_, other) => Err(unexpected(&other)),
        }
    }
}
