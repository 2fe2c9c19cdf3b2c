//! Backups of a workspace's own data (docs/backups.md): its `/workspace`
//! (for a prebuild workspace, the overlay's upper: only the user's changes)
//! and its home directories, in a restic repository, one per workspace,
//! encrypted with the key the coordinator holds for it. Stock `restic`
//! writes and reads the repository (the format's reference implementation,
//! Debian's package): any restic can restore a Berth backup.
//!
//! A running workspace is backed up from a point-in-time copy of its volume
//! (`freeze`): the volume is frozen, its image cloned by reflink, thawed;
//! the workload waits only for that. The clone is mounted read-only and
//! read at leisure.

pub mod freeze;
pub mod ignored;
mod restic;

pub use restic::{Restic, Summary};

/// Tags every Berth backup carries besides `berth` and its consistency:
/// the workspace's generation and the first host id of the range its
/// files are owned in. The coordinator finds a fenced backup by them
/// (it is taken while the coordinator cannot hear of it).
pub const GENERATION_TAG: &str = "generation=";
pub const ID_BASE_TAG: &str = "id-base=";

use crate::error::{AgentError, Result};
use berth_proto::agent as pb;
use berth_proto::api::STORE_ENV as ENV_ALLOWED;
use std::collections::BTreeMap;

/// What is backed up, relative to the volume's root: the workspace's
/// files, and the home directories in its root filesystem's upper (shell
/// history, dotfiles, tool configuration). Packages installed elsewhere in
/// the root filesystem are not.
pub const PERSISTED: [&str; 3] = ["workspace", "rootfs/upper/home", "rootfs/upper/root"];

/// Where a workspace's backups go and how to open them.
#[derive(Clone)]
pub struct Store {
    /// A restic repository: a local directory, or `s3:http(s)://host/bucket/prefix`.
    pub repository: String,
    pub password: String,
    /// Extra environment for restic (e.g. `AWS_ACCESS_KEY_ID`).
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The store a request names, checked.
    pub fn of(s: Option<pb::BackupStore>) -> Result<Self> {
        let s = s.ok_or_else(|| AgentError::InvalidRequest("no backup store given".into()))?;
        let r = &s.repository;
        let local = r.starts_with('/') && !r.split('/').any(|p| p == "..");
        let remote = r.starts_with("s3:") || r.starts_with("rest:");
        if !(local || remote) || r.chars().any(char::is_control) {
            return Err(AgentError::InvalidRequest(format!(
                "backup repository {r:?}: an absolute local path, s3:URL or rest:URL"
            )));
        }
        if s.password.len() < 16 {
            return Err(AgentError::InvalidRequest(
                "a backup key is at least 16 characters".into(),
            ));
        }
        if let Some(k) = s.env.keys().find(|k| !ENV_ALLOWED.contains(&k.as_str())) {
            return Err(AgentError::InvalidRequest(format!(
                "backup store environment {k:?} is not one of {ENV_ALLOWED:?}"
            )));
        }
        Ok(Self {
            repository: s.repository,
            password: s.password,
            env: s.env.into_iter().collect(),
        })
    }
}

/// How consistent a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// One instant of a running workspace's volume (frozen, cloned).
    Snapshot,
    /// Nothing ran: the workspace was stopped.
    Stopped,
    /// Read while it ran: the volume's file system cannot clone.
    Live,
    /// Stopped by its node, cut off from the coordinator, then read: as
    /// `Stopped`, and the node will not start it again by itself
    /// (`crate::fence`).
    Fenced,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Stopped => "stopped",
            Self::Live => "live",
            Self::Fenced => "fenced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(repository: &str, password: &str, env: &[(&str, &str)]) -> Option<pb::BackupStore> {
        Some(pb::BackupStore {
            repository: repository.into(),
            password: password.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn stores_are_checked_before_restic_sees_them() {
        let key = "0123456789abcdef0123";
        let ok = [
            store("/var/lib/berth/backups/w1", key, &[]),
            store(
                "s3:http://127.0.0.1:9000/b/w1",
                key,
                &[("AWS_ACCESS_KEY_ID", "a")],
            ),
        ];
        for s in ok {
            assert!(Store::of(s.clone()).is_ok(), "{s:?}");
        }
        let bad = [
            None,
            store("relative/dir", key, &[]),
            store("/var/lib/../../etc", key, &[]),
            store("sftp:host:/x", key, &[]),
            store("/x\n--verbose", key, &[]),
            store("/x", "short", &[]),
            // Nothing that changes what restic runs or where it writes.
            store("/x", key, &[("RESTIC_PASSWORD_COMMAND", "sh -c id")]),
            store("/x", key, &[("HOME", "/root")]),
        ];
        for s in bad {
            let e = Store::of(s.clone()).unwrap_err();
            assert_eq!(e.code(), "invalid_request", "{s:?}");
        }
    }
}
