//! The file API (`docs/api.md`, "Files"): a running workspace's files
//! under /workspace, read and written as its user. Paths are relative to
//! /workspace; nothing outside it is reached, whatever symlinks it holds.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Most bytes a `PUT` of a file carries.
pub const FILE_MAX_BYTES: u64 = 64 << 20;

/// A file, directory or symlink under /workspace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FileEntry {
    /// Relative to /workspace ("" for /workspace itself); in a listing, the entry's name.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    pub modified_ms: i64,
    /// Permission bits.
    pub mode: u32,
    /// Changes whenever the content may have; send it back in `If-Match`.
    pub etag: String,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
}

/// A directory's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FileListing {
    pub dir: FileEntry,
    pub entries: Vec<FileEntry>,
    /// More than 10000 entries: the rest were left out.
    pub truncated: bool,
}

/// `POST …/files/{path}`: make a directory there, or move what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileAction {
    /// Makes the directory and any missing parents.
    Mkdir,
    /// Moves the file or directory to `to` (never over something there).
    Rename {
        #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
        to: String,
    },
}
