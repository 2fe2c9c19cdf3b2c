//! A client of the local control API (used by `berth-agent ctl`, tests and benchmarks).

use berth_proto::agent::{self as pb, request::Command, response::Result as R};
use berth_proto::{read_frame, write_frame, FrameError};
use std::path::Path;
use tokio::net::UnixStream;

/// A failed call: transport trouble, or the agent's typed error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the agent closed the connection")]
    Closed,
    #[error("{}: {}", .0.code, .0.message)]
    Agent(pb::Error),
    #[error("unexpected answer from the agent")]
    Unexpected,
}

impl ClientError {
    /// The agent's error code, if the agent answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Agent(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// One connection to an agent.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

/// What an exec produced.
#[derive(Debug, Default, Clone)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Client {
    /// Connects to the agent's control socket.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            stream: UnixStream::connect(path)
                .await
                .map_err(ClientError::Connect)?,
        })
    }

    /// Sends one command and returns its result.
    pub async fn call(&mut self, cmd: Command) -> Result<R, ClientError> {
        write_frame(&mut self.stream, &pb::Request { command: Some(cmd) }).await?;
        let resp: pb::Response = read_frame(&mut self.stream)
            .await?
            .ok_or(ClientError::Closed)?;
        match resp.result {
            Some(R::Error(e)) => Err(ClientError::Agent(e)),
            Some(r) => Ok(r),
            None => Err(ClientError::Unexpected),
        }
    }

    /// Sends a command that answers with a workspace status.
    pub async fn status_call(&mut self, cmd: Command) -> Result<pb::WorkspaceStatus, ClientError> {
        match self.call(cmd).await? {
            R::Status(s) => Ok(s),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Opens a TCP connection to `port` of workspace `name`; the returned
    /// socket carries the connection's bytes.
    pub async fn connect_port(mut self, name: &str, port: u32) -> Result<UnixStream, ClientError> {
        match self
            .call(Command::Connect(pb::ConnectRequest {
                name: name.into(),
                port,
                kind: String::new(),
            }))
            .await?
        {
            R::Connected(true) => Ok(self.stream),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Runs a command to completion, feeding it `stdin`, and collects its output.
    pub async fn exec(self, req: pb::ExecRequest, stdin: &[u8]) -> Result<ExecOutput, ClientError> {
        use pb::exec_input::Input;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        if !stdin.is_empty() {
            let _ = tx
                .send(pb::ExecInput {
                    input: Some(Input::Stdin(stdin.to_vec())),
                })
                .await;
        }
        let _ = tx
            .send(pb::ExecInput {
                input: Some(Input::CloseStdin(true)),
            })
            .await;
        drop(tx);
        let mut out = ExecOutput::default();
        out.exit_code = self
            .exec_stream(req, rx, |o| match o {
                pb::exec_output::Output::Stdout(b) => out.stdout.extend(b),
                pb::exec_output::Output::Stderr(b) => out.stderr.extend(b),
                _ => {}
            })
            .await?;
        Ok(out)
    }

    /// Starts an exec, forwards `inputs` as they come, and hands every output
    /// to `on_output`; returns the exit code.
    pub async fn exec_stream(
        mut self,
        req: pb::ExecRequest,
        mut inputs: tokio::sync::mpsc::Receiver<pb::ExecInput>,
        mut on_output: impl FnMut(pb::exec_output::Output),
    ) -> Result<i32, ClientError> {
        match self.call(Command::Exec(req)).await? {
            R::ExecStarted(_) => {}
            _ => return Err(ClientError::Unexpected),
        }
        let (mut rd, mut wr) = self.stream.into_split();
        let writer = tokio::spawn(async move {
            while let Some(i) = inputs.recv().await {
                if write_frame(&mut wr, &i).await.is_err() {
                    break;
                }
            }
            // keep the write half open until the exec ends
            std::future::pending::<()>().await;
        });
        let result = loop {
            let msg: pb::ExecOutput = match read_frame(&mut rd).await {
                Ok(Some(m)) => m,
                Ok(None) => break Err(ClientError::Closed),
                Err(e) => break Err(e.into()),
            };
            match msg.output {
                Some(pb::exec_output::Output::Error(e)) => break Err(ClientError::Agent(e)),
                Some(pb::exec_output::Output::ExitCode(c)) => break Ok(c),
                Some(o) => on_output(o),
                None => {}
            }
        };
        writer.abort();
        result
    }
}
