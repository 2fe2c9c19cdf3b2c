//! Commands run in a workspace: answered whole (each stream cut at 1 MiB)
//! or streamed as they come.

use super::Service;
use crate::domain::lifecycle::State;
use crate::domain::workspace::WorkspaceRow;
use crate::error::{Error, Result};
use crate::link::{self, ExecDone, LinkError};
use berth_proto::agent as pb;
use berth_proto::api::{ExecBody, ExecUser};
use berth_proto::codes::{self, Code};
use berth_proto::exec_stream::Frame;
use std::time::Duration;

/// An exec the service accepted: where it runs and what the agent is asked.
#[derive(Debug)]
pub struct Exec {
    node: String,
    req: pb::ExecRequest,
    stdin: Vec<u8>,
    timeout: Duration,
}

/// Checks an exec request against its (running) workspace. Pure.
fn accept(w: &WorkspaceRow, req: ExecBody) -> Result<Exec> {
    if req.argv.is_empty() || req.argv.len() > 4096 || req.argv.iter().any(|x| x.contains('\0')) {
        return Err(Error::invalid(
            "invalid_command",
            "argv needs 1 to 4096 arguments without NUL",
        ));
    }
    let env = req.env.unwrap_or_default();
    for k in env.keys() {
        crate::domain::validate::env_key(k)?;
    }
    if env.values().any(|v| v.contains('\0'))
        || req
            .cwd
            .as_deref()
            .is_some_and(|c| c.contains('\0') || !c.starts_with('/'))
    {
        return Err(Error::invalid(
            "invalid_command",
            "cwd must be absolute; no NUL in values",
        ));
    }
    let timeout = req.timeout_seconds.unwrap_or(60);
    if !(1..=3600).contains(&timeout) {
        return Err(Error::invalid(
            "invalid_command",
            "timeout_seconds must be 1 to 3600",
        ));
    }
    if w.state != State::Running {
        return Err(Error::conflict(
            "not_running",
            format!("workspace {} is {}", w.name, w.state.as_str()),
        ));
    }
    Ok(Exec {
        node: w.node.clone().unwrap_or_default(),
        req: pb::ExecRequest {
            name: w.id.clone(),
            argv: req.argv,
            env,
            cwd: req.cwd.unwrap_or_default(),
            user: match req.user {
                Some(ExecUser::Root) => "root".into(),
                _ => String::new(),
            },
            ..Default::default()
        },
        stdin: req.stdin.unwrap_or_default().into_bytes(),
        timeout: Duration::from_secs(timeout),
    })
}

/// The error of an agent's refusal to run a command.
fn refused(e: pb::Error) -> Error {
    match codes::of(&e) {
        Some(Code::NotFound | Code::Conflict) => Error::conflict("not_running", e.message),
        Some(Code::InvalidRequest) => Error::invalid("invalid_command", e.message),
        _ => Error::node("node_error", format!("{}: {}", e.code, e.message)),
    }
}

fn timed_out(timeout: Duration) -> Error {
    // The agent ends the command when its stream goes.
    Error::timeout(
        "exec_timeout",
        format!(
            "the command did not finish in {} s and was killed",
            timeout.as_secs()
        ),
    )
}

impl Service {
    /// Runs a command in `owner`'s workspace `name`; its output, each stream
    /// cut at 1 MiB.
    pub async fn exec(&self, owner: &str, name: &str, req: ExecBody) -> Result<ExecDone> {
        let w = self.find(owner, name).await?;
        let x = accept(&w, req)?;
        let out = link::exec(&*self.inner.link, &x.node, x.req, x.stdin, x.timeout)
            .await
            .map_err(|e| match e {
                LinkError::Timeout(_) => timed_out(x.timeout),
                e => e.into(),
            })?;
        out.map_err(refused)
    }

    /// Runs a command in `owner`'s workspace `name` and streams its output
    /// as frames; dropping the stream kills the command.
    pub async fn exec_stream(
        &self,
        owner: &str,
        name: &str,
        req: ExecBody,
    ) -> Result<impl futures::Stream<Item = Frame>> {
        let w = self.find(owner, name).await?;
        let x = accept(&w, req)?;
        let duplex = link::exec_stream(&*self.inner.link, &x.node, x.req)
            .await?
            .map_err(refused)?;
        Ok(link::relay_exec(duplex, x.stdin, x.timeout, x.node))
    }
}
