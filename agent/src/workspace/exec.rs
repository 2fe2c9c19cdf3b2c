//! Exec: run a process inside a running workspace, with its stdio carried
//! over FIFOs that containerd's shim opens.

use super::Manager;
use crate::error::{AgentError, Result};
use crate::spec;
use berth_proto::agent::{self as pb, exec_input::Input, exec_output::Output};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// How long to wait for output still in flight after the process exited.
const DRAIN: Duration = Duration::from_secs(2);

impl Manager {
    /// Runs `req` in its workspace. `input` carries stdin, resizes and
    /// signals; `output` gets stdout/stderr chunks and finally the exit code.
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
        let running = self
            .inner
            .ctd
            .get_task(&r.name)
            .await?
            .is_some_and(|p| p.status == containerd_client::types::v1::Status::Running as i32);
        if !running {
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
        let ctd = &self.inner.ctd;
        let paths = ["stdin", "stdout", "stderr"].map(|n| dir.join(n));
        for p in &paths {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                |e| AgentError::Io {
                    context: format!("mkfifo {}", p.display()),
                    source: e.into(),
                },
            )?;
        }
        // Read ends open without waiting for a writer; stdin opens read-write
        // so it does not wait for the shim either.
        let stdout = pipe::OpenOptions::new()
            .open_receiver(&paths[1])
            .map_err(AgentError::io("open stdout fifo"))?;
        let stderr = pipe::OpenOptions::new()
            .open_receiver(&paths[2])
            .map_err(AgentError::io("open stderr fifo"))?;
        let mut stdin = Some(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&paths[0])
                .map_err(AgentError::io("open stdin fifo"))?,
        );
        let r = self.record(name)?;
        let extra_env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cwd = if req.cwd.is_empty() {
            "/workspace"
        } else {
            req.cwd.as_str()
        };
        let process = spec::process(
            &self.spec_input(&r),
            &req.argv,
            &extra_env,
            cwd,
            req.tty.then_some((req.rows, req.cols)),
        );
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let stdio = [
            s(&paths[0]),
            s(&paths[1]),
            if req.tty { String::new() } else { s(&paths[2]) },
        ];
        ctd.exec(name, exec_id, &process, stdio, req.tty).await?;
        ctd.start(name, exec_id).await?;
        // The shim opens the write ends on start; a reader before that sees EOF.
        let out_task = tokio::spawn(pump(stdout, output.clone(), false));
        let err_task = tokio::spawn(pump(stderr, output.clone(), true));
        if req.tty && req.rows > 0 && req.cols > 0 {
            let _ = ctd.resize(name, exec_id, req.cols, req.rows).await;
        }
        let wait = ctd.wait(name, exec_id);
        tokio::pin!(wait);
        let code = loop {
            tokio::select! {
                status = &mut wait => break status?,
                msg = input.recv() => match msg.and_then(|m| m.input) {
                    Some(Input::Stdin(bytes)) => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(&bytes).await.is_err() { stdin = None; }
                        }
                    }
                    Some(Input::CloseStdin(_)) => {
                        stdin = None;
                        let _ = ctd.close_stdin(name, exec_id).await;
                    }
                    Some(Input::Resize(sz)) => { let _ = ctd.resize(name, exec_id, sz.cols, sz.rows).await; }
                    Some(Input::Signal(sig)) => { let _ = ctd.kill(name, exec_id, sig, false).await; }
                    // The client went away: the process stays until it ends by itself.
                    None => { stdin = None; input.close(); std::future::pending::<()>().await; }
                },
            }
        };
        drop(stdin);
        let _ = tokio::time::timeout(DRAIN, async {
            let _ = out_task.await;
            let _ = err_task.await;
        })
        .await;
        let _ = output
            .send(pb::ExecOutput {
                output: Some(Output::ExitCode(code as i32)),
            })
            .await;
        Ok(())
    }
}

async fn pump(mut r: pipe::Receiver, tx: mpsc::Sender<pb::ExecOutput>, is_err: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
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
