//! Runs Debian's `restic` on a workspace's repository: the key goes by
//! environment (never on a command line), each repository is initialised
//! on first use, and a run that is dropped (its request cancelled) is
//! killed.

use super::Store;
use crate::error::{AgentError, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use tokio::process::Command;

/// The `restic` binary and its cache.
#[derive(Debug)]
pub struct Restic {
    bin: PathBuf,
    cache_dir: PathBuf,
    /// Repositories known to exist.
    ready: Mutex<HashSet<String>>,
}

/// What one backup did, from restic's JSON summary.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Summary {
    pub snapshot_id: String,
    /// Bytes added to the repository (after deduplication, before compression).
    pub data_added: u64,
    pub total_bytes_processed: u64,
    pub total_files_processed: u64,
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
}

impl Restic {
    pub fn new(bin: PathBuf, cache_dir: PathBuf) -> Self {
        Self {
            bin,
            cache_dir,
            ready: Mutex::new(HashSet::new()),
        }
    }

    fn command(&self, store: &Store) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RESTIC_REPOSITORY", &store.repository)
            .env("RESTIC_PASSWORD", &store.password)
            .envs(&store.env)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, what: &str, cmd: &mut Command) -> Result<String> {
        let out = cmd.output().await.map_err(|e| {
            AgentError::Backup(format!("restic {what}: {e} ({})", self.bin.display()))
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            let err = err.get(err.len().saturating_sub(2000)..).unwrap_or(err);
            return Err(AgentError::Backup(format!(
                "restic {what} failed ({}): {err}",
                out.status
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Makes the repository unless it exists.
    async fn ensure(&self, store: &Store) -> Result<()> {
        let known = |s: &Self| {
            s.ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&store.repository)
        };
        if known(self) {
            return Ok(());
        }
        if let Some(dir) = store.repository.strip_prefix('/') {
            let parent = Path::new("/").join(dir);
            if let Some(p) = parent.parent() {
                std::fs::create_dir_all(p)
                    .map_err(AgentError::io(format!("mkdir {}", p.display())))?;
            }
        }
        let exists = self
            .run("cat config", self.command(store).args(["cat", "config"]))
            .await
            .is_ok();
        if !exists {
            self.run("init", self.command(store).args(["init"])).await?;
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(store.repository.clone());
        Ok(())
    }

    /// Backs up `paths` (relative to `cwd`, stored so), and the files
    /// listed one per line in `files` if given, with `tags`.
    pub async fn backup(
        &self,
        store: &Store,
        cwd: &Path,
        host: &str,
        (paths, files): (&[&str], Option<&Path>),
        tags: &[String],
    ) -> Result<Summary> {
        self.ensure(store).await?;
        let mut cmd = self.command(store);
        cmd.current_dir(cwd)
            .args(["backup", "--json", "--quiet", "--host", host]);
        for t in tags {
            cmd.arg("--tag").arg(t);
        }
        if let Some(list) = files {
            cmd.arg("--files-from-verbatim").arg(list);
        }
        cmd.args(paths);
        let out = self.run("backup", &mut cmd).await?;
        out.lines()
            .filter(|l| l.contains("\"summary\""))
            .find_map(|l| serde_json::from_str::<Summary>(l).ok())
            .ok_or_else(|| AgentError::Backup(format!("restic backup: no summary in {out:?}")))
    }

    /// Forgets the snapshots of `host` that `keep` does not keep and frees
    /// their space; the ids of those kept.
    pub async fn forget(
        &self,
        store: &Store,
        host: &str,
        keep: &berth_proto::agent::Retention,
    ) -> Result<Vec<String>> {
        let mut cmd = self.command(store);
        cmd.args(["forget", "--json", "--prune", "--host", host]);
        // The newest is always kept.
        cmd.arg("--keep-last")
            .arg(keep.keep_last.max(1).to_string());
        if keep.keep_daily > 0 {
            cmd.arg("--keep-daily").arg(keep.keep_daily.to_string());
        }
        if keep.keep_weekly > 0 {
            cmd.arg("--keep-weekly").arg(keep.keep_weekly.to_string());
        }
        let out = self.run("forget", &mut cmd).await?;
        kept_ids(&out)
            .ok_or_else(|| AgentError::Backup(format!("restic forget: no groups in {out:?}")))
    }

    /// Forgets every snapshot in the repository and frees their space; how
    /// many there were. A local repository's directory is removed.
    pub async fn drop_all(&self, store: &Store) -> Result<u64> {
        let out = self
            .run(
                "snapshots",
                self.command(store).args(["snapshots", "--json"]),
            )
            .await;
        let out = match out {
            Ok(o) => o,
            // Never made, or gone already.
            Err(AgentError::Backup(m)) if m.contains("Is there a repository") => return Ok(0),
            Err(e) => return Err(e),
        };
        let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .map_err(|e| AgentError::Backup(format!("restic snapshots: {e}")))?
            .iter()
            .filter_map(|s| s.get("id")?.as_str().map(String::from))
            .collect();
        if let Some(dir) = store.repository.strip_prefix('/') {
            let dir = Path::new("/").join(dir);
            std::fs::remove_dir_all(&dir)
                .map_err(AgentError::io(format!("remove {}", dir.display())))?;
        } else if !ids.is_empty() {
            let mut cmd = self.command(store);
            cmd.args(["forget", "--prune"]).args(&ids);
            self.run("forget", &mut cmd).await?;
        }
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&store.repository);
        Ok(ids.len() as u64)
    }

    /// Restores snapshot `id` into `target` (paths as they were stored).
    pub async fn restore(&self, store: &Store, id: &str, target: &Path) -> Result<()> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(AgentError::InvalidRequest(format!(
                "backup id {id:?}: hexadecimal"
            )));
        }
        let mut cmd = self.command(store);
        cmd.args(["restore", id, "--target"]).arg(target);
        // restic 0.14 exits 1 for every failure: these two messages are
        // how it says the backup or the repository is not there.
        match self.run("restore", &mut cmd).await {
            Err(AgentError::Backup(m)) if m.contains("no matching ID found") => Err(
                AgentError::BackupMissing(format!("backup {id} is not in {}", store.repository)),
            ),
            Err(AgentError::Backup(m)) if m.contains("Is there a repository") => {
                Err(AgentError::BackupMissing(format!(
                    "no backup repository at {}: {m}",
                    store.repository
                )))
            }
            r => r.map(drop),
        }
    }
}

/// The ids `restic forget --json` says it kept (None: not its output).
fn kept_ids(out: &str) -> Option<Vec<String>> {
    // restic prints the groups as one JSON array (then the prune's lines).
    let groups: Vec<serde_json::Value> = out
        .lines()
        .find_map(|l| serde_json::from_str(l.trim()).ok())?;
    Some(
        groups
            .iter()
            .filter_map(|g| g.get("keep")?.as_array())
            .flatten()
            .filter_map(|s| s.get("id")?.as_str().map(String::from))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kept_ids_are_read_from_forget_s_json() {
        let out = r#"[{"tags":null,"host":"w1","paths":["workspace"],"keep":[{"time":"2026-12-03T20:00:00Z","id":"aaa","short_id":"aaa"},{"id":"bbb"}],"remove":[{"id":"ccc"}],"reasons":[]}]
loading indexes...
"#;
        assert_eq!(super::kept_ids(out).unwrap(), ["aaa", "bbb"]);
        assert!(super::kept_ids("Fatal: wrong password").is_none());
        assert_eq!(super::kept_ids("[]").unwrap(), Vec::<String>::new());
    }
}
