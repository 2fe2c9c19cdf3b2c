//! Workspaces from a repository (docs/repositories.md): cloned inside the
//! running workspace as its user with the image's own git, configured by
//! the repository's devcontainer.json (or by what the repository looks
//! like), then its lifecycle commands: those up to `waitFor` before the
//! create answers, the others after. A clone or configuration that fails
//! fails the create (rolled back, with the error's code); a lifecycle
//! command that fails marks its step failed and leaves the workspace
//! running, as Codespaces does.

use super::run::{git_env, Askpass, InitCommand, InitLog, Ran, INIT_LOG_DIR};
use super::*;
use crate::init::command::Command;
use crate::init::devcontainer::Step;
use crate::init::git;
use crate::init::prebuild as p;
use crate::init::state::{InitState, Phase};
use berth_proto::codes::Code;

/// Where every repository lives: the workspace's volume.
pub(super) const WORKSPACE: &str = "/workspace";

/// Lifecycle steps left to run once the create has answered.
#[derive(Debug, Default)]
pub(super) struct Later {
    steps: Vec<(Step, Command)>,
}

impl Manager {
    /// The directory of init logs.
    pub(super) fn init_log_dir(&self) -> std::path::PathBuf {
        self.inner.cfg.file.state_dir.join(INIT_LOG_DIR)
    }

    pub(super) fn timeout(seconds: u32) -> Duration {
        Duration::from_secs(u64::from(seconds))
    }

    /// Records a change of `st` in `r` (the create holds the workspace's
    /// lock while it runs this).
    fn keep(&self, r: &mut Record, st: &InitState) -> Result<()> {
        r.init = Some(st.clone());
        self.inner.records.put_unsynced(r)
    }

    /// Marks the steps after `waitFor` skipped: the workspace was created
    /// stopped, so nothing runs once the create has answered.
    pub(super) fn skip_later(&self, r: &mut Record, later: Later) {
        let Some(st) = r.init.as_mut() else { return };
        for (s, _) in later.steps {
            st.step(s.key()).phase = Phase::Skipped;
        }
        st.warnings
            .push("created stopped: the steps after waitFor did not run".into());
    }

    /// Clones and configures a new, running repository workspace and runs
    /// its lifecycle commands up to `waitFor`; returns those left.
    pub(super) async fn init_repo(&self, r: &mut Record, repo: pb::RepoInit) -> Result<Later> {
        let log = InitLog::open(&self.init_log_dir(), &r.name, true)?;
        let folder = format!("{WORKSPACE}/{}", git::repo_name(&repo.url));
        let mut st = InitState {
            repo_url: repo.url.clone(),
            branch: repo.branch.clone(),
            folder: folder.clone(),
            ..Default::default()
        };
        // A prebuild on this node replaces the clone; one asked for that
        // is not here is said, and the repository cloned.
        let from_prebuild = match (&r.prebuild, &repo.prebuild) {
            (Some(_), Some(want)) => Some(want.clone()),
            (None, Some(want)) => {
                st.prebuild = Some(p::Used {
                    key: want.key.clone(),
                    commit: want.commit.clone(),
                    built_at_ms: want.built_at_ms,
                    outcome: "missing".into(),
                    note: match &r.prebuild_note {
                        Some(why) => format!("{why}: cloned instead"),
                        None => "the prebuild is not on this node: cloned instead".into(),
                    },
                });
                None
            }
            _ => None,
        };
        let first = match from_prebuild {
            Some(_) => "prebuild",
            None => "clone",
        };
        st.step(first);
        st.step("configure");
        self.keep(r, &st)?;

        let t = Instant::now();
        st.step(first).phase = Phase::Running;
        self.keep(r, &st)?;
        let cloned = match &from_prebuild {
            Some(want) => {
                st.folder = want.folder.clone();
                Box::pin(self.update_from_prebuild(r, &repo, want, &log)).await
            }
            None => Box::pin(self.clone_repo(r, &repo, &folder, &log)).await,
        };
        st.step(first).end(
            ms(t),
            cloned
                .as_ref()
                .err()
                .map(|(c, tail)| (c.as_str(), tail.clone())),
        );
        match cloned {
            Ok(commit) => st.commit = commit,
            Err((code, tail)) => {
                self.keep(r, &st)?;
                return Err(AgentError::init(
                    code,
                    format!("{first} of {}: {tail}", repo.url),
                ));
            }
        }
        let mut moved = false;
        if let Some(want) = &from_prebuild {
            moved = st.commit != want.commit;
            let short = |c: &str| c.get(..12).unwrap_or(c).to_string();
            st.prebuild = Some(p::Used {
                key: want.key.clone(),
                commit: want.commit.clone(),
                built_at_ms: want.built_at_ms,
                outcome: if moved { "updated" } else { "used" }.into(),
                note: [
                    r.prebuild_note.clone(),
                    Some(match moved {
                        true => format!(
                            "prebuild of {} brought up to {}",
                            short(&want.commit),
                            short(&st.commit)
                        ),
                        false => "as built".to_string(),
                    }),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
            });
            log.note(&format!(
                "started from prebuild {} ({})",
                want.key,
                st.prebuild.as_ref().map_or("", |u| u.note.as_str())
            ));
        }
        self.keep(r, &st)?;

        let t = Instant::now();
        st.step("configure").phase = Phase::Running;
        let configured = self.configure(r, &mut st, &repo, &log).await;
        st.step("configure").end(
            ms(t),
            configured.as_ref().err().map(|e| (e.code(), e.to_string())),
        );
        let mut plan = match configured {
            Ok(plan) => plan,
            Err(e) => {
                self.keep(r, &st)?;
                return Err(e);
            }
        };
        st.config_hash = self.config_hash(r, &st, &repo);
        let mode = match (&from_prebuild, self.is_building(&r.name)) {
            (_, true) => p::Mode::Build,
            (Some(want), false) => {
                let same_config = want.config_hash == st.config_hash;
                if !same_config {
                    st.warnings.push(
                        "the configuration changed since the prebuild: its commands run again"
                            .into(),
                    );
                }
                p::Mode::FromPrebuild { moved, same_config }
            }
            (None, false) => p::Mode::Plain,
        };
        if mode == p::Mode::Build {
            // A prebuild runs what it keeps before it answers.
            plan.wait_for = Step::PostStart;
        }
        let mut kept = Vec::new();
        for (s, c) in plan.steps {
            let step = st.step(s.key());
            step.command = c.describe();
            match p::left_out(mode, s) {
                None => kept.push((s, c)),
                Some(why) => {
                    step.phase = Phase::Skipped;
                    step.tail = why.into();
                }
            }
        }
        plan.steps = kept;
        self.keep(r, &st)?;
        // The steps up to waitFor run now; the rest once the create answered.
        let (now, later): (Vec<_>, Vec<_>) = plan
            .steps
            .into_iter()
            .partition(|(s, _)| *s <= plan.wait_for);
        let failed = self.run_steps(r, &mut st, now, &log).await?;
        if failed {
            let skipped: Vec<&str> = later.iter().map(|(s, _)| s.key()).collect();
            for s in skipped {
                st.step(s).phase = Phase::Skipped;
            }
            self.keep(r, &st)?;
            return Ok(Later::default());
        }
        Ok(Later { steps: later })
    }

    /// Clones the repository into `folder` (and checks out the commit);
    /// returns the commit, or the failure's code and git's last lines.
    async fn clone_repo(
        &self,
        r: &Record,
        repo: &pb::RepoInit,
        folder: &str,
        log: &InitLog,
    ) -> std::result::Result<String, (Code, String)> {
        let node_err = |e: AgentError| (Code::GitCloneFailed, e.to_string());
        let (askpass, env) = self.git_session(r, repo).map_err(node_err)?;
        log.note(&format!(
            "git clone {}{}",
            repo.url,
            match repo.branch.as_str() {
                "" => String::new(),
                b => format!(" (branch {b})"),
            }
        ));
        let timeout = Self::timeout(self.inner.cfg.file.workspace.clone_timeout_seconds);
        let run = |argv: Vec<String>, env: BTreeMap<String, String>| InitCommand {
            argv,
            root: false,
            env,
            cwd: WORKSPACE,
            timeout,
        };
        let argv = git::clone_args(&repo.url, &repo.branch, repo.partial, folder);
        let ran = self
            .run_init(&r.name, run(argv, env.clone()), Some(log))
            .await
            .map_err(node_err)?;
        check_git(&ran, timeout)?;
        if !repo.commit.is_empty() {
            log.note(&format!("git checkout {}", repo.commit));
            let mut argv = git::base_args();
            argv.extend(
                [
                    "-C",
                    folder,
                    "checkout",
                    "--detach",
                    repo.commit.as_str(),
                    "--",
                ]
                .map(String::from),
            );
            let ran = self
                .run_init(&r.name, run(argv, env), Some(log))
                .await
                .map_err(node_err)?;
            if ran.timed_out || ran.code != 0 {
                return Err((
                    Code::GitCommitNotFound,
                    format!("commit {} is not in the repository", repo.commit),
                ));
            }
        }
        drop(askpass);
        // Read on the node, through descriptors that follow no link.
        Ok(self
            .repo_dir(r, folder)
            .and_then(|c| c.head_commit().ok())
            .unwrap_or_default())
    }

    /// The environment of git commands that talk to the repository's
    /// remote, with the owner's credential offered for as long as the
    /// returned helper lives.
    pub(super) fn git_session(
        &self,
        r: &Record,
        repo: &pb::RepoInit,
    ) -> Result<(Option<Askpass>, BTreeMap<String, String>)> {
        let credential = repo.credential.clone().filter(|c| !c.token.is_empty());
        let askpass = match &credential {
            Some(c) => {
                let dir = self.workspace_root(r);
                let owner = host_ids(r.userns, r.uid, r.gid)?;
                Some(Askpass::offer(&dir, owner, &c.token)?)
            }
            None => None,
        };
        let mut env = git_env();
        if let (Some(a), Some(c)) = (&askpass, &credential) {
            env.extend(a.env(&c.username));
        }
        Ok((askpass, env))
    }

    /// The repository at `folder` (a path under /workspace), opened on the
    /// volume without following links.
    pub(super) fn repo_dir(&self, r: &Record, folder: &str) -> Option<crate::build::Context> {
        let rel = folder.strip_prefix("/workspace/")?;
        crate::build::Context::open(&self.workspace_root(r), rel).ok()
    }

    /// Runs lifecycle steps in order; a failure marks its step and skips
    /// the rest. Returns whether one failed.
    pub(super) async fn run_steps(
        &self,
        r: &mut Record,
        st: &mut InitState,
        steps: Vec<(Step, Command)>,
        log: &InitLog,
    ) -> Result<bool> {
        let mut failed = false;
        for (step, cmd) in steps {
            let key = step.key();
            if failed {
                st.step(key).phase = Phase::Skipped;
                continue;
            }
            st.step(key).phase = Phase::Running;
            self.keep(r, st)?;
            let t = Instant::now();
            let result = self.lifecycle(r, &st.folder, key, &cmd, log).await?;
            failed = result.is_some();
            st.step(key)
                .end_command(ms(t), Ran::failure(result.as_ref()));
            self.keep(r, st)?;
        }
        Ok(failed)
    }

    /// Runs one lifecycle command (its parts at once when it has several);
    /// `None` when all succeeded, else the first failure.
    async fn lifecycle(
        &self,
        r: &Record,
        folder: &str,
        key: &str,
        cmd: &Command,
        log: &InitLog,
    ) -> Result<Option<Ran>> {
        let timeout = Self::timeout(self.inner.cfg.file.workspace.command_timeout_seconds);
        let runs = cmd.programs(key).into_iter().map(|(name, argv)| {
            log.note(&format!("{name}: {}", argv.join(" ")));
            self.run_init(
                &r.name,
                InitCommand {
                    argv,
                    root: false,
                    env: BTreeMap::new(),
                    cwd: folder,
                    timeout,
                },
                Some(log),
            )
        });
        let results = futures::future::join_all(runs).await;
        for ran in results {
            let ran = ran?;
            if ran.timed_out || ran.code != 0 {
                log.note(&format!("{key} failed (exit status {})", ran.code));
                return Ok(Some(ran));
            }
        }
        Ok(None)
    }

    /// Runs the steps a create left for later, each step's state in the
    /// record as it goes. Holds the workspace's lock only to write.
    pub(super) fn run_later(&self, name: &str, later: Later) {
        if later.steps.is_empty() {
            return;
        }
        let me = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            if let Err(e) = me.later(&name, later.steps).await {
                tracing::warn!(workspace = %name, error = %e, "lifecycle commands");
            }
        });
    }

    async fn later(&self, name: &str, steps: Vec<(Step, Command)>) -> Result<()> {
        let log = InitLog::open(&self.init_log_dir(), name, false)?;
        let mut failed = false;
        for (step, cmd) in steps {
            let key = step.key();
            let Some(folder) = self
                .update_init(name, |st| {
                    st.step(key).phase = if failed {
                        Phase::Skipped
                    } else {
                        Phase::Running
                    };
                })
                .await?
            else {
                return Ok(());
            };
            if failed {
                continue;
            }
            let r = self.record(name)?;
            let t = Instant::now();
            let result = self.lifecycle(&r, &folder, key, &cmd, &log).await?;
            failed = result.is_some();
            self.update_init(name, |st| {
                st.step(key)
                    .end_command(ms(t), Ran::failure(result.as_ref()))
            })
            .await?;
        }
        Ok(())
    }

    /// Changes a workspace's init state under its lock and reports the
    /// change; the repository's folder, or None if the workspace is gone.
    async fn update_init(
        &self,
        name: &str,
        change: impl FnOnce(&mut InitState),
    ) -> Result<Option<String>> {
        let _guard = self.lock(name).await;
        let Some(mut r) = self.inner.records.get(name)? else {
            return Ok(None);
        };
        let Some(st) = r.init.as_mut() else {
            return Ok(None);
        };
        change(st);
        let folder = st.folder.clone();
        self.inner.records.put(&r)?;
        let _ = self.inner.changes.send(name.to_string());
        Ok(Some(folder))
    }

    /// After a start: postStartCommand again, in the background.
    pub(super) fn post_start(&self, r: &Record) {
        let Some(cmd) = r.init.as_ref().and_then(|s| s.post_start.clone()) else {
            return;
        };
        self.run_later(
            &r.name,
            Later {
                steps: vec![(Step::PostStart, cmd)],
            },
        );
    }
}

/// A clone's outcome as a code and git's last lines.
pub(super) fn check_git(ran: &Ran, timeout: Duration) -> std::result::Result<(), (Code, String)> {
    if ran.timed_out {
        return Err((
            Code::GitTimeout,
            format!("the clone did not finish in {} s", timeout.as_secs()),
        ));
    }
    if ran.code != 0 {
        return Err((git::classify(&ran.output), git::tail(&ran.output, 5)));
    }
    Ok(())
}
