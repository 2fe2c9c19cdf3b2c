//! Workspace secrets on the node: a tmpfs (`<state>/secrets`, mounted by
//! the agent, root-only) that holds, per workspace,
//!
//! - `files/`: its file secrets, bound read-only at `/run/secrets` in its
//!   container, each file owned by the workspace's user, mode 0400;
//! - `env`: its environment secrets (root-only, never in the container),
//!   added to every process Berth starts in it.
//!
//! Nothing here reaches a disk, a record, a log or a backup: the coordinator
//! sends the secrets with each start, and a stop wipes them.

use crate::error::{AgentError, Result};
use berth_proto::agent as pb;
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where file secrets appear in a workspace.
pub const MOUNT_POINT: &str = "/run/secrets";
/// Size of the secrets tmpfs (all workspaces on the node).
const TMPFS_SIZE: &str = "64m";
use berth_proto::api::{is_secret_name as is_name, SECRET_MAX_BYTES as MAX_VALUE_BYTES};

/// What a write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Files and environment: the workspace is starting.
    All,
    /// Files only: a rotation while it runs (its processes keep the
    /// environment they started with; new ones get the start's).
    Files,
}

/// The node's secrets tmpfs.
#[derive(Debug, Clone)]
pub struct Secrets {
    root: PathBuf,
}

impl Secrets {
    /// The secrets directory under `state`, with a tmpfs mounted on it
    /// unless one is (an agent restart keeps running workspaces' secrets).
    pub fn open(state: &Path, mountinfo: &Path) -> Result<Self> {
        let root = state.join("secrets");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(AgentError::io("mkdir secrets"))?;
        if !crate::volume::is_mount_point(mountinfo, &root) {
            use nix::mount::MsFlags;
            let options = format!("size={TMPFS_SIZE},mode=0700");
            nix::mount::mount(
                Some("tmpfs"),
                &root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(options.as_str()),
            )
            .map_err(|e| AgentError::Io {
                context: format!("mount the secrets tmpfs on {}", root.display()),
                source: e.into(),
            })?;
        }
        Ok(Self { root })
    }

    /// The directory bound at /run/secrets in `name`'s container.
    pub fn files_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join("files")
    }

    fn env_file(&self, name: &str) -> PathBuf {
        self.root.join(name).join("env")
    }

    /// Makes `name`'s (empty) files directory if it is missing, owned by
    /// the workspace's user on the node: its container binds it.
    pub fn ensure(&self, name: &str, owner: (u32, u32)) -> Result<()> {
        let dir = self.files_dir(name);
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(AgentError::io("mkdir secret files"))?;
        std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1))
            .map_err(AgentError::io("chown secret files"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))
            .map_err(AgentError::io("chmod secret files"))
    }

    /// Puts `set` in place for `name`: each file written whole then renamed
    /// over the old one (a reader sees the old or the new value), files no
    /// longer in the set removed; with `Write::All` the environment too.
    pub fn write(
        &self,
        name: &str,
        set: &pb::SecretSet,
        owner: (u32, u32),
        what: Write,
    ) -> Result<()> {
        for s in &set.secrets {
            check(s)?;
        }
        self.ensure(name, owner)?;
        let dir = self.files_dir(name);
        let files: BTreeMap<&str, &[u8]> = set
            .secrets
            .iter()
            .filter(|s| s.file)
            .map(|s| (s.name.as_str(), s.value.as_slice()))
            .collect();
        for (file, value) in &files {
            let tmp = dir.join(format!(".{file}.new"));
            write_private(&tmp, value)?;
            std::os::unix::fs::chown(&tmp, Some(owner.0), Some(owner.1))
                .map_err(AgentError::io("chown a secret"))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400))
                .map_err(AgentError::io("chmod a secret"))?;
            std::fs::rename(&tmp, dir.join(file)).map_err(AgentError::io("rename a secret"))?;
        }
        for entry in std::fs::read_dir(&dir).map_err(AgentError::io("list secret files"))? {
            let entry = entry.map_err(AgentError::io("list secret files"))?;
            let kept = entry
                .file_name()
                .to_str()
                .is_some_and(|n| files.contains_key(n));
            if !kept {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if what == Write::All {
            let env: BTreeMap<&str, String> = set
                .secrets
                .iter()
                .filter(|s| !s.file)
                .map(|s| {
                    (
                        s.name.as_str(),
                        String::from_utf8_lossy(&s.value).into_owned(),
                    )
                })
                .collect();
            let text = serde_json::to_vec(&env).unwrap_or_default();
            write_private(&self.env_file(name), &text)?;
        }
        Ok(())
    }

    /// `name`'s environment secrets, "K=V", for a process started in it.
    pub fn env(&self, name: &str) -> Vec<String> {
        let Ok(text) = std::fs::read(self.env_file(name)) else {
            return vec![];
        };
        let env: BTreeMap<String, String> = serde_json::from_slice(&text).unwrap_or_default();
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Forgets `name`'s secrets (a stop or a delete), keeping the empty
    /// files directory its container binds.
    pub fn wipe(&self, name: &str) {
        let _ = std::fs::remove_file(self.env_file(name));
        if let Ok(entries) = std::fs::read_dir(self.files_dir(name)) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes everything of `name` (a delete).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.root.join(name));
    }
}

/// Refuses a secret the node cannot place: a name that is not an
/// environment variable's (it is a file name too), a value too large, an
/// environment value with a NUL.
fn check(s: &pb::Secret) -> Result<()> {
    let bad = |why: &str| {
        Err(AgentError::InvalidRequest(format!(
            "secret {:?}: {why}",
            s.name
        )))
    };
    if !is_name(&s.name) {
        return bad("a name is a letter or _, then letters, digits or _ (at most 64)");
    }
    if s.value.len() > MAX_VALUE_BYTES {
        return bad("larger than 64 KiB");
    }
    if !s.file && (s.value.contains(&0) || std::str::from_utf8(&s.value).is_err()) {
        return bad("an environment variable's value is UTF-8 without NUL");
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(AgentError::io("write a secret"))?;
    f.write_all(bytes).map_err(AgentError::io("write a secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &[u8], file: bool) -> pb::Secret {
        pb::Secret {
            name: name.into(),
            value: value.to_vec(),
            file,
        }
    }

    fn at(dir: &Path) -> Secrets {
        let root = dir.join("secrets");
        std::fs::create_dir_all(&root).unwrap();
        Secrets { root }
    }

    #[test]
    fn files_rotate_and_env_waits_for_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = at(dir.path());
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let first = pb::SecretSet {
            secrets: vec![
                secret("TOKEN", b"one", false),
                secret("CREDS", b"c1", true),
                secret("OLD", b"o", true),
            ],
        };
        s.write("w", &first, me, Write::All).unwrap();
        assert_eq!(s.env("w"), vec!["TOKEN=one".to_string()]);
        assert_eq!(
            std::fs::read(s.files_dir("w").join("CREDS")).unwrap(),
            b"c1"
        );
        let mode = std::fs::metadata(s.files_dir("w").join("CREDS"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let second = pb::SecretSet {
            secrets: vec![secret("TOKEN", b"two", false), secret("CREDS", b"c2", true)],
        };
        s.write("w", &second, me, Write::Files).unwrap();
        assert_eq!(
            std::fs::read(s.files_dir("w").join("CREDS")).unwrap(),
            b"c2"
        );
        assert!(
            !s.files_dir("w").join("OLD").exists(),
            "a removed file secret goes"
        );
        assert_eq!(
            s.env("w"),
            vec!["TOKEN=one".to_string()],
            "env changes at the next start"
        );
        s.write("w", &second, me, Write::All).unwrap();
        assert_eq!(s.env("w"), vec!["TOKEN=two".to_string()]);
        s.wipe("w");
        assert!(s.env("w").is_empty());
        assert!(s.files_dir("w").is_dir(), "the bound directory stays");
        assert_eq!(std::fs::read_dir(s.files_dir("w")).unwrap().count(), 0);
    }

    #[test]
    fn bad_secrets_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = at(dir.path());
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        for bad in [
            secret("../x", b"v", true),
            secret("9A", b"v", false),
            secret("A", &vec![b'a'; MAX_VALUE_BYTES + 1], true),
            secret("A", b"a\0b", false),
        ] {
            let set = pb::SecretSet {
                secrets: vec![secret("GOOD", b"g", true), bad],
            };
            assert!(s.write("w", &set, me, Write::All).is_err());
            assert!(!s.files_dir("w").join("GOOD").exists());
        }
        assert!(is_name("_A1") && is_name("gh_token") && !is_name("") && !is_name("a-b"));
    }
}
