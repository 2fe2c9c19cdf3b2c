//! Running init commands in a workspace (the clone, git queries, lifecycle
//! commands) with their output kept in its init log, a time limit, and a
//! git credential handed over through a one-use pipe.

use super::*;
use berth_proto::agent::exec_output::Output;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use tokio::sync::mpsc;

/// The most a workspace's init log keeps; what comes after is dropped.
const LOG_LIMIT: u64 = 16 << 20;
/// The most output a command's result keeps in memory (its end).
const KEEP: usize = 64 << 10;

/// The directory of init logs, under the agent's state directory.
pub const INIT_LOG_DIR: &str = "init";

/// A workspace's init log: root's, in the agent's state directory (never
/// on the workspace's volume, where the workspace could swap it for a link).
pub(super) struct InitLog {
    file: Mutex<(std::fs::File, u64)>,
}

impl InitLog {
    /// Opens the log of `name` in `dir`, emptied when `fresh`.
    pub(super) fn open(dir: &std::path::Path, name: &str, fresh: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(AgentError::io("mkdir init log dir"))?;
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(AgentError::io(format!("open {}", path.display())))?;
        if fresh {
            file.set_len(0)
                .map_err(AgentError::io("empty the init log"))?;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            file: Mutex::new((file, len)),
        })
    }

    /// Appends `bytes` (up to the log's limit).
    pub(super) fn write(&self, bytes: &[u8]) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, len) = &mut *f;
        if *len >= LOG_LIMIT {
            return;
        }
        let room = (LOG_LIMIT - *len) as usize;
        let part = &bytes[..bytes.len().min(room)];
        if file.write_all(part).is_ok() {
            *len += part.len() as u64;
            if part.len() < bytes.len() {
                let _ = file.write_all(b"\n[berth: the init log is full; the rest is dropped]\n");
                *len = LOG_LIMIT;
            }
        }
    }

    /// A line of Berth's own.
    pub(super) fn note(&self, line: &str) {
        self.write(format!("==> {line}\n").as_bytes());
    }
}

/// How a command run for init ended.
#[derive(Debug)]
pub(super) struct Ran {
    pub code: i32,
    /// The end of its output (stdout and stderr as they came).
    pub output: String,
    pub timed_out: bool,
}

impl Ran {
    /// What a step's report keeps of a failed command.
    pub fn failure(ran: Option<&Ran>) -> Option<(i32, &str, bool)> {
        ran.map(|r| (r.code, r.output.as_str(), r.timed_out))
    }
}

/// A command to run for init.
pub(super) struct InitCommand<'a> {
    pub argv: Vec<String>,
    pub root: bool,
    pub env: BTreeMap<String, String>,
    pub cwd: &'a str,
    pub timeout: Duration,
}

impl Manager {
    /// Runs a command in running workspace `name`, its output appended to
    /// `log` (if given); past its time limit it is hung up on and killed.
    pub(super) async fn run_init(
        &self,
        name: &str,
        c: InitCommand<'_>,
        log: Option<&InitLog>,
    ) -> Result<Ran> {
        let req = pb::ExecRequest {
            name: name.into(),
            argv: c.argv,
            env: c.env.into_iter().collect(),
            tty: false,
            rows: 0,
            cols: 0,
            cwd: c.cwd.into(),
            activity: String::new(),
            user: if c.root { "root".into() } else { String::new() },
        };
        let (in_tx, in_rx) = mpsc::channel(2);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let me = self.clone();
        let exec = tokio::spawn(async move { me.exec(req, in_rx, out_tx).await });
        // Nothing is typed into an init command.
        let _ = in_tx
            .send(pb::ExecInput {
                input: Some(pb::exec_input::Input::CloseStdin(true)),
            })
            .await;
        let mut input = Some(in_tx);
        let mut kept: Vec<u8> = Vec::new();
        let mut code = -1;
        let mut timed_out = false;
        let deadline = tokio::time::sleep(c.timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = out_rx.recv() => match msg.and_then(|m| m.output) {
                    Some(Output::Stdout(b) | Output::Stderr(b)) => {
                        if let Some(log) = log {
                            log.write(&b);
                        }
                        kept.extend_from_slice(&b);
                        if kept.len() > 2 * KEEP {
                            kept.drain(..kept.len() - KEEP);
                        }
                    }
                    Some(Output::ExitCode(c)) => code = c,
                    Some(Output::Error(e)) => {
                        if let Some(log) = log {
                            log.note(&format!("{}: {}", e.code, e.message));
                        }
                    }
                    None => break,
                },
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    // Dropping the input hangs up on the command, then kills it.
                    input = None;
                }
            }
        }
        drop(input);
        exec.await
            .map_err(|e| AgentError::InvalidRequest(format!("init command: {e}")))??;
        Ok(Ran {
            code,
            output: String::from_utf8_lossy(&kept).into_owned(),
            timed_out,
        })
    }

    /// Runs a short query (git rev-parse, cat, id) as the workspace's user
    /// (or root), without logging it; its output when it succeeded.
    pub(super) async fn query(
        &self,
        name: &str,
        argv: &[&str],
        root: bool,
    ) -> Result<Option<String>> {
        let ran = self
            .run_init(
                name,
                InitCommand {
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    root,
                    env: BTreeMap::new(),
                    cwd: "/",
                    timeout: Duration::from_secs(30),
                },
                None,
            )
            .await?;
        Ok((ran.code == 0).then_some(ran.output))
    }
}

/// A git credential offered to one git command: an askpass helper and a
/// pipe on the workspace's volume, in a directory of a random name that
/// only the workspace's user may enter. The token is written into the pipe
/// (never to a file); the helper reads one line per question. Everything is
/// removed when this is dropped.
pub(super) struct Askpass {
    dir: std::path::PathBuf,
    /// Holds the pipe open (read-write) so what was written stays readable.
    _pipe: std::fs::File,
    /// The paths inside the workspace.
    pub script: String,
    pub pipe: String,
}

/// How many times the token is offered (git asks once per connection it
/// makes: the clone, submodules, a partial clone's fetches).
const OFFERS: usize = 32;

impl Askpass {
    /// Makes the helper and the pipe in the workspace directory `host_dir`
    /// (mounted at /workspace), owned by node ids `owner`.
    pub(super) fn offer(
        host_dir: &std::path::Path,
        owner: (u32, u32),
        token: &str,
    ) -> Result<Self> {
        if token.contains('\n') || token.contains('\0') {
            return Err(AgentError::InvalidRequest(
                "a git token cannot have a newline or NUL".into(),
            ));
        }
        let leaf = format!(".berth-askpass-{:016x}", rand::random::<u64>());
        let dir = host_dir.join(&leaf);
        let io = |what: &'static str| AgentError::io(format!("git askpass: {what}"));
        // mkdir fails on anything already there, link or not.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("mkdir"))?;
        let made = (|| {
            let script = dir.join("askpass");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&script)
                .and_then(|mut f| f.write_all(crate::init::git::ASKPASS.as_bytes()))
                .map_err(io("write the helper"))?;
            let pipe = dir.join("pipe");
            nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io("mkfifo")(e.into()))?;
            // Read-write: the open does not wait for a reader, and the
            // written lines stay in the pipe until read.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&pipe)
                .map_err(io("open the pipe"))?;
            let meta = f.metadata().map_err(io("stat the pipe"))?;
            if !std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) {
                return Err(AgentError::InvalidRequest("git askpass: not a pipe".into()));
            }
            let line = format!("{token}\n");
            let mut w = &f;
            for _ in 0..OFFERS {
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
            for p in [&dir, &script, &pipe] {
                std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1)).map_err(io("chown"))?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("chmod"))?;
            Ok(f)
        })();
        match made {
            Ok(f) => Ok(Self {
                dir,
                _pipe: f,
                script: format!("/workspace/{leaf}/askpass"),
                pipe: format!("/workspace/{leaf}/pipe"),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The environment of the git command that may use it.
    pub(super) fn env(&self, username: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("GIT_ASKPASS".to_string(), self.script.clone()),
            ("BERTH_GIT_PIPE".to_string(), self.pipe.clone()),
            ("BERTH_GIT_USERNAME".to_string(), username.to_string()),
        ])
    }
}

impl Drop for Askpass {
    fn drop(&mut self) {
        // remove_dir_all does not follow links; whatever the workspace put
        // there goes with the directory.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the git askpass");
        }
    }
}

/// The environment every git command of init runs with: git never waits
/// for a prompt on a terminal (the credential helpers the image configures
/// are switched off on the command line, `git::base_args`).
pub(super) fn git_env() -> BTreeMap<String, String> {
    BTreeMap::from([("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())])
}
