//! What the agent knows about each workspace, kept as one JSON file per
//! workspace, written atomically and fsync'd, so a `kill -9` never loses or
//! half-writes it.

use crate::error::{AgentError, Result};
use crate::idmap::IdMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

fn legacy_userns() -> IdMap {
    IdMap {
        host_base: 1_000_000,
        size: 65536,
    }
}

/// Where a workspace is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being made; a crash here means roll back. Written without fsync: if
    /// a power cut loses it, what it covered is removed as strays anyway
    /// (labelled containers and snapshots, netns and volumes without a record).
    Creating,
    /// Complete: a container exists (it may or may not be running).
    Ready,
    /// Being deleted; a crash here means finish the delete.
    Deleting,
}

/// A workspace's durable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub image: String,
    pub chain_id: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids: u32,
    pub disk_bytes: u64,
    pub env: BTreeMap<String, String>,
    pub generation: u64,
    pub phase: Phase,
    pub ip: Ipv4Addr,
    /// Its user namespace's id range on the node (records of agents before
    /// per-workspace ranges had the node-wide one).
    #[serde(default = "legacy_userns")]
    pub userns: IdMap,
    pub uid: u32,
    pub gid: u32,
    /// Image env followed by the workspace's, "K=V".
    pub process_env: Vec<String>,
    pub args: Vec<String>,
    #[serde(default)]
    pub started_at_ms: i64,
    #[serde(default)]
    pub last_exit: Option<i32>,
    #[serde(default)]
    pub oom_kills: u64,
    /// Id of the volume and network namespace: a prepared slot's id when the
    /// workspace took one, empty when they were made under its own name.
    #[serde(default)]
    pub slot: String,
    /// Whether it may create nested user namespaces.
    #[serde(default)]
    pub nested_userns: bool,
    /// Private IPv4 ranges it may reach beyond the node's egress policy.
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// The container's hostname; empty means `name`.
    #[serde(default)]
    pub hostname: String,
    /// A repository workspace's clone, configuration and lifecycle steps.
    #[serde(default)]
    pub init: Option<crate::init::state::InitState>,
    /// The key of the prebuild /workspace is an overlay over, if any.
    #[serde(default)]
    pub prebuild: Option<String>,
    /// How the prebuild came to the node, or why it did not (a pull from
    /// the registry), for the init report.
    #[serde(default)]
    pub prebuild_note: Option<String>,
}

impl Record {
    /// The name the workspace's volume, netns and veth are made under.
    pub fn parts(&self) -> &str {
        if self.slot.is_empty() {
            &self.name
        } else {
            &self.slot
        }
    }
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Records live in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(AgentError::io(format!("mkdir {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Reads `name`'s record, if any.
    pub fn get(&self, name: &str) -> Result<Option<Record>> {
        match std::fs::read(self.path(name)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AgentError::Io {
                    context: format!("record {name}"),
                    source: e.into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(format!("read record {name}"))(e)),
        }
    }

    /// Writes a record durably: temp file, fsync, rename, fsync the directory.
    pub fn put(&self, r: &Record) -> Result<()> {
        self.write(r, true)
    }

    /// Writes a record atomically (a reader sees the old or the new one) but
    /// without waiting for the disk: it survives an agent crash, not a power
    /// cut. For records whose loss is harmless (see `Phase::Creating`).
    pub fn put_unsynced(&self, r: &Record) -> Result<()> {
        self.write(r, false)
    }

    fn write(&self, r: &Record, durable: bool) -> Result<()> {
        let tmp = self.dir.join(format!(".{}.tmp", r.name));
        let body = serde_json::to_vec_pretty(r).map_err(|e| AgentError::Io {
            context: "encode record".into(),
            source: e.into(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            if durable {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, self.path(&r.name))?;
            if durable {
                std::fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(AgentError::io(format!("write record {}", r.name)))
    }

    /// Removes `name`'s record (idempotent).
    pub fn remove(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AgentError::io(format!("remove record {name}"))(e))
            }
            _ => std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(AgentError::io("sync records dir")),
        }
    }

    /// All records, by name; unreadable ones are skipped with a warning.
    pub fn all(&self) -> Result<Vec<Record>> {
        let rd = std::fs::read_dir(&self.dir).map_err(AgentError::io("list records"))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(name) = n.strip_suffix(".json") else {
                continue;
            };
            match self.get(name) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(err) => tracing::warn!(record = %n, error = %err, "skipping unreadable record"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(name: &str) -> Record {
        Record {
            name: name.into(),
            image: "127.0.0.1:1/tiny:latest".into(),
            chain_id: "sha256:aa".into(),
            cpu_millis: 100,
            memory_bytes: 1 << 26,
            pids: 10,
            disk_bytes: 1 << 26,
            env: BTreeMap::new(),
            generation: 1,
            phase: Phase::Creating,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            userns: legacy_userns(),
            uid: 1000,
            gid: 1000,
            process_env: vec![],
            args: vec!["sh".into()],
            started_at_ms: 0,
            last_exit: None,
            oom_kills: 0,
            slot: String::new(),
            nested_userns: false,
            egress_allow: vec![],
            hostname: String::new(),
            init: None,
            prebuild: None,
            prebuild_note: None,
        }
    }

    #[test]
    fn put_get_all_remove() {
        let d = tempfile::tempdir().unwrap();
        let rs = Records::open(d.path().join("r")).unwrap();
        assert!(rs.get("a").unwrap().is_none());
        let mut a = sample("a");
        rs.put(&a).unwrap();
        a.phase = Phase::Ready;
        rs.put(&a).unwrap();
        rs.put(&sample("b")).unwrap();
        std::fs::write(d.path().join("r/broken.json"), "{").unwrap();
        assert_eq!(rs.get("a").unwrap().unwrap(), a);
        let all: Vec<String> = rs.all().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(all, ["a", "b"]);
        rs.remove("a").unwrap();
        rs.remove("a").unwrap();
        assert!(rs.get("a").unwrap().is_none());
    }
}
