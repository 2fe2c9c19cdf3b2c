//! A repository workspace's git, from outside: its init log (streamed) and
//! sync (`git pull --rebase` / `git push` with the owner's credential).

use super::run::{git_env, Askpass, InitCommand, InitLog};
use super::*;
use crate::init::git;
use crate::init::state::InitState;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

impl Manager {
    /// The record of a repository workspace.
    fn repository(&self, name: &str) -> Result<(Record, InitState)> {
        let r = self.record(name)?;
        match r.init.clone() {
            Some(st) => Ok((r, st)),
            None => Err(AgentError::InvalidRequest(format!(
                "workspace {name} was not made from a repository"
            ))),
        }
    }

    /// Checks that `name` has an init log to read (before the answer that
    /// hands the stream over).
    pub fn init_log_ready(&self, name: &str) -> Result<()> {
        self.repository(name).map(|_| ())
    }

    /// Copies a repository workspace's init log to `out`; with `follow`,
    /// also what is appended until its steps are done (or it is deleted).
    pub async fn copy_init_log<W: AsyncWrite + Unpin>(
        &self,
        name: &str,
        follow: bool,
        out: &mut W,
    ) -> Result<()> {
        // Made if missing, so a follower can wait for its first lines.
        drop(InitLog::open(&self.init_log_dir(), name, false)?);
        let path = self.init_log_dir().join(format!("{name}.log"));
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(AgentError::io("open the init log"))?;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(AgentError::io("read the init log"))?;
            if n > 0 {
                out.write_all(&buf[..n])
                    .await
                    .map_err(AgentError::io("send the init log"))?;
                continue;
            }
            let done = match self.inner.records.get(name)? {
                Some(r) => r.init.is_none_or(|st| st.settled()) && r.phase == Phase::Ready,
                None => true,
            };
            if !follow || done {
                // One last read: what was written before the steps settled.
                let n = f.read(&mut buf).await.unwrap_or(0);
                let _ = out.write_all(&buf[..n]).await;
                let _ = out.shutdown().await;
                return Ok(());
            }
            out.flush()
                .await
                .map_err(AgentError::io("send the init log"))?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `git pull --rebase` (or `git push`) of the workspace's repository,
    /// as its user, with the credential for this run only. A rebase that
    /// stops on conflicts is undone; the files are named.
    pub async fn sync(&self, req: pb::SyncRequest) -> Result<pb::SyncResult> {
        let (r, st) = self.repository(&req.name)?;
        let askpass = match req.credential.as_ref().filter(|c| !c.token.is_empty()) {
            Some(c) => {
                let dir = self.workspace_root(&r);
                let owner = host_ids(r.userns, r.uid, r.gid)?;
                Some((Askpass::offer(&dir, owner, &c.token)?, c.username.clone()))
            }
            None => None,
        };
        let mut env = git_env();
        if let Some((a, user)) = &askpass {
            env.extend(a.env(user));
        }
        let mut argv = git::base_args();
        argv.extend(match req.push {
            true => vec!["push".to_string()],
            false => vec!["pull".into(), "--rebase".into()],
        });
        let ran = self
            .run_init(
                &r.name,
                InitCommand {
                    argv,
                    root: false,
                    env,
                    cwd: &st.folder,
                    timeout: SYNC_TIMEOUT,
                },
                None,
            )
            .await?;
        drop(askpass);
        let folder = st.folder.as_str();
        let mut unmerged = Vec::new();
        if !req.push && ran.code != 0 {
            let listed = self
                .query(
                    &r.name,
                    &[
                        "git",
                        "-C",
                        folder,
                        "diff",
                        "--name-only",
                        "--diff-filter=U",
                    ],
                    false,
                )
                .await?
                .unwrap_or_default();
            unmerged = listed.lines().map(String::from).collect();
            if !unmerged.is_empty() {
                self.query(&r.name, &["git", "-C", folder, "rebase", "--abort"], false)
                    .await?;
            }
        }
        let (outcome, files) = git::sync_outcome(req.push, ran.code, &ran.output, &unmerged);
        let message = match outcome {
            "conflict" => "the rebase stopped on conflicts and was undone: the files named conflict with the remote's changes".to_string(),
            _ if ran.timed_out => format!("git did not finish in {} s", SYNC_TIMEOUT.as_secs()),
            _ => git::tail(&ran.output, 10),
        };
        let head = self
            .query(&r.name, &["git", "-C", folder, "rev-parse", "HEAD"], false)
            .await?
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(pb::SyncResult {
            outcome: outcome.into(),
            files,
            message,
            commit: head,
        })
    }
}
