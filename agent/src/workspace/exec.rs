//! Exec: run a process inside a running workspace, with its stdio carried
//! over FIFOs that containerd's shim opens.

use super::Manager;
use crate::error::{AgentError, Result};
use crate::spec;
use berth_proto::agent::{self as pb, exec_input::Input, exec_output::Output};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// How long to wait for output still in flight after the process exited.
const DRAIN: Duration = Duration::from_secs(2);
/// The terminal's end-of-file character (^D).
const VEOF: u8 = 0x04;
/// How long after the process exited the shim may still connect to an output FIFO.
const CONNECT_GRACE: Duration = Duration::from_secs(1);

impl Manager {
    /// Runs `req` in its workspace. `input` carries stdin, resizes and
    /// signals; `output` gets stdout/stderr chunks and finally the exit code.
    #[tracing::instrument(name = "exec", skip_all, fields(workspace = req.name.as_str()))]
    pub async fn exec(
        &self,
        req: pb::ExecRequest,
        mut input: mpsc::Receiver<pb::ExecInput>,
        output: mpsc::Sender<pb::ExecOutput>,
    ) -> Result<()> {
        let r = self.record(&req.name)?;
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(AgentError::InvalidRequest(
                "argv must name a program".into(),
            ));
        }
        if !self.task_running(&r.name).await? {
            return Err(AgentError::Conflict {
                name: r.name.clone(),
                state: "not running".into(),
                action: "exec",
            });
        }
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        let dir = self.inner.cfg.file.state_dir.join("exec").join(&exec_id);
        std::fs::create_dir_all(&dir).map_err(AgentError::io("mkdir exec dir"))?;
        let result = self
            .exec_in(&r.name, &exec_id, &dir, &req, &mut input, &output)
            .await;
        let _ = self.inner.ctd.delete_process(&r.name, &exec_id).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn exec_in(
        &self,
        name: &str,
        exec_id: &str,
        dir: &Path,
        req: &pb::ExecRequest,
        input: &mut mpsc::Receiver<pb::ExecInput>,
        output: &mpsc::Sender<pb::ExecOutput>,
    ) -> Result<()> {
        let paths = ["stdin", "stdout", "stderr"].map(|n| dir.join(n));
        for p in &paths {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                |e| AgentError::Io {
                    context: format!("mkfifo {}", p.display()),
                    source: e.into(),
                },
            )?;
        }
        // Readers wait (in a blocking open) for the shim to connect, so the
        // only EOF they see is the shim's. A TTY has no separate stderr.
        let mut readers = vec![Reader::spawn(&paths[1], output, false)];
        if !req.tty {
            readers.push(Reader::spawn(&paths[2], output, true));
        }
        let ran = self.run_process(name, exec_id, &paths, req, input).await;
        finish_readers(readers, ran.is_ok()).await;
        // A command that cannot run is the caller's mistake, answered as a
        // shell does (127 not found, 126 not executable); a missing working
        // directory is a bad request. Anything else is the node's failure.
        let code = match ran {
            Err(e) => match refusal(&e, req) {
                Some(Refused::Exit(code, why)) => {
                    let _ = output
                        .send(pb::ExecOutput {
                            output: Some(Output::Stderr(format!("berth: {why}\n").into_bytes())),
                        })
                        .await;
                    code
                }
                Some(Refused::Cwd) => {
                    return Err(AgentError::InvalidRequest(format!(
                        "cwd {:?} is not a directory in the workspace",
                        req.cwd
                    )))
                }
                None => return Err(e),
            },
            Ok(code) => code,
        };
        let _ = output
            .send(pb::ExecOutput {
                output: Some(Output::ExitCode(code as i32)),
            })
            .await;
        Ok(())
    }

    /// Starts the exec'd process, feeds it input until it exits, returns its status.
    async fn run_process(
        &self,
        name: &str,
        exec_id: &str,
        paths: &[std::path::PathBuf; 3],
        req: &pb::ExecRequest,
        input: &mut mpsc::Receiver<pb::ExecInput>,
    ) -> Result<u32> {
        let ctd = &self.inner.ctd;
        // stdin opens read-write so it does not wait for the shim.
        let mut stdin = Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&paths[0])
                .map_err(AgentError::io("open stdin fifo"))?,
        );
        let r = self.record(name)?;
        // The workspace's secrets, then what the request asks for.
        let mut extra_env = self.inner.secrets.env(name);
        extra_env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
        let cwd = if req.cwd.is_empty() {
            "/workspace"
        } else {
            req.cwd.as_str()
        };
        let who = match req.user.as_str() {
            "" => spec::As::User,
            "root" => spec::As::Root,
            other => {
                return Err(AgentError::InvalidRequest(format!(
                    "user {other:?}: expected \"\" (the workspace's user) or \"root\""
                )))
            }
        };
        let process = spec::process(
            &self.spec_input(&r),
            &req.argv,
            &extra_env,
            cwd,
            req.tty.then_some((req.rows, req.cols)),
            who,
        );
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let stdio = [
            s(&paths[0]),
            s(&paths[1]),
            if req.tty { String::new() } else { s(&paths[2]) },
        ];
        ctd.exec(name, exec_id, &process, stdio, req.tty).await?;
        let pid = ctd.start(name, exec_id).await?;
        let wait = ctd.wait(name, exec_id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                status = &mut wait => return status,
                msg = input.recv() => match msg.and_then(|m| m.input) {
                    Some(Input::Stdin(bytes)) => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(&bytes).await.is_err() { stdin = None; }
                        }
                    }
                    // On a terminal, end of input is VEOF (^D), as a keyboard sends it:
                    // closing a TTY exec's stdin makes the shim close its console
                    // and drop output the process has not yet written.
                    Some(Input::CloseStdin(_)) if req.tty => {
                        if let Some(w) = stdin.as_mut() {
                            let _ = w.write_all(&[VEOF]).await;
                        }
                    }
                    Some(Input::CloseStdin(_)) => {
                        stdin = None;
                        let _ = ctd.close_stdin(name, exec_id).await;
                    }
                    Some(Input::Resize(sz)) => { let _ = ctd.resize(name, exec_id, sz.cols, sz.rows).await; }
                    Some(Input::Signal(sig)) => { let _ = ctd.kill(name, exec_id, sig, false).await; }
                    // The client went away (or its timeout passed): hang up
                    // on the process and its process group as a closed
                    // terminal does, kill what is left after a grace
                    // period, then collect its status.
                    None => {
                        drop(stdin.take());
                        input.close();
                        signal_group(pid, Signal::SIGHUP);
                        if let Ok(status) = tokio::time::timeout(HANGUP_GRACE, &mut wait).await {
                            return status;
                        }
                        signal_group(pid, Signal::SIGKILL);
                        return (&mut wait).await;
                    }
                },
            }
        }
    }
}

/// How an exec that could not start is answered.
enum Refused {
    /// As a shell answers: the exit code and why.
    Exit(u32, String),
    /// The working directory does not exist.
    Cwd,
}

/// Classifies runc's refusal to start an exec'd process (from its message).
fn refusal(e: &AgentError, req: &pb::ExecRequest) -> Option<Refused> {
    let AgentError::Containerd { status, .. } = e else {
        return None;
    };
    let m = status.message();
    let prog = req.argv.first().map(String::as_str).unwrap_or("");
    if m.contains("chdir to cwd") {
        Some(Refused::Cwd)
    } else if m.contains("executable file not found") || m.contains("no such file or directory") {
        Some(Refused::Exit(127, format!("{prog}: command not found")))
    } else if m.contains("permission denied") {
        Some(Refused::Exit(126, format!("{prog}: permission denied")))
    } else {
        None
    }
}

/// SIGKILLs the process `pid` (a node pid) and, when it leads a process
/// group (a terminal's session), the whole group.
/// How long a process whose client went away has between SIGHUP and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Sends `sig` to an exec'd process, and to its whole process group when it
/// leads one (a shell under a terminal does).
fn signal_group(pid: u32, sig: Signal) {
    use nix::sys::signal::{kill, killpg};
    use nix::unistd::Pid;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let target = Pid::from_raw(pid as i32);
    let leads = process_group(&stat) == Some(pid as i32);
    let sent = if leads {
        killpg(target, sig)
    } else {
        kill(target, sig)
    };
    tracing::debug!(
        pid,
        group = leads,
        signal = %sig,
        ok = sent.is_ok(),
        "exec ending: its client went away"
    );
}

/// The process group in a /proc/PID/stat line (the field after the state;
/// the command name before it may hold spaces and parentheses).
pub fn process_group(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// A task copying one output FIFO into exec output messages.
struct Reader {
    path: std::path::PathBuf,
    /// Set once the shim has connected (the blocking open returned).
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn spawn(path: &Path, tx: &mpsc::Sender<pb::ExecOutput>, is_err: bool) -> Self {
        let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(pump(
            path.to_path_buf(),
            tx.clone(),
            is_err,
            connected.clone(),
        ));
        Self {
            path: path.to_path_buf(),
            connected,
            task,
        }
    }
}

/// Waits for the output readers to reach the shim's EOF after the process
/// ended. A reader the shim never connected to (the process did not start,
/// or the shim is gone) is released by opening its FIFO's write end
/// ourselves, but only when the shim cannot connect any more: at once if the
/// process never started, else after `CONNECT_GRACE`; releasing earlier would
/// hand the reader an EOF before the shim's output. A connected reader still
/// busy after `DRAIN` (a background child holding the output) is abandoned.
async fn finish_readers(readers: Vec<Reader>, started: bool) {
    let t0 = tokio::time::Instant::now();
    for mut r in readers {
        loop {
            let poll =
                tokio::time::timeout(std::time::Duration::from_millis(50), &mut r.task).await;
            if poll.is_ok() {
                break;
            }
            let waited = t0.elapsed();
            if !r.connected.load(std::sync::atomic::Ordering::Acquire) {
                if !started || waited > CONNECT_GRACE {
                    tracing::debug!(fifo = %r.path.display(), "releasing an output reader the shim never reached");
                    release(&r.path);
                }
            } else if waited > DRAIN {
                r.task.abort();
                break;
            }
        }
    }
}

/// Connects to, then leaves, a FIFO's write end so that a reader blocked in
/// open() returns; does nothing if no reader waits.
fn release(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

async fn pump(
    path: std::path::PathBuf,
    tx: mpsc::Sender<pb::ExecOutput>,
    is_err: bool,
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    // A blocking open returns once a writer (the shim) has connected.
    let t0 = std::time::Instant::now();
    let shown = path.display().to_string();
    let Ok(Ok(file)) = tokio::task::spawn_blocking(move || std::fs::File::open(path)).await else {
        return;
    };
    connected.store(true, std::sync::atomic::Ordering::Release);
    tracing::debug!(fifo = %shown, after_us = t0.elapsed().as_micros() as u64, "output reader connected");
    let mut total = 0usize;
    let Ok(mut r) = pipe::Receiver::from_file(file) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                tracing::debug!(fifo = %shown, bytes = total, after_us = t0.elapsed().as_micros() as u64, "output reader done");
                return;
            }
            Ok(n) => {
                total += n;
                let data = buf[..n].to_vec();
                let output = Some(if is_err {
                    Output::Stderr(data)
                } else {
                    Output::Stdout(data)
                });
                if tx.send(pb::ExecOutput { output }).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_process_group_past_odd_names() {
        let stat = "4242 (sh -c (x)) S 4200 4242 4242 34816 4242 4194560 120";
        assert_eq!(super::process_group(stat), Some(4242));
        assert_eq!(super::process_group("1 (init) S 0 7 1"), Some(7));
        assert_eq!(super::process_group("garbage"), None);
    }
}
