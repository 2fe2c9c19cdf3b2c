//! `berth exec`: output streamed as it comes, or (`--json`) one answer.

use super::{ws_path, Ui};
use crate::args::ExecArgs;
use crate::client::Client;
use crate::{Failure, Outcome};
use anyhow::Context;
use berth_proto::api::{ExecBody, ExecResult, ExecUser};
use std::io::{Read, Write};

pub(crate) async fn run(c: &Client, ui: Ui, x: ExecArgs) -> Outcome {
    let stdin = match x.stdin {
        true => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read standard input")?;
            Some(s)
        }
        false => None,
    };
    let body = ExecBody {
        argv: x.argv,
        env: Some(x.env.into_iter().collect()),
        cwd: x.cwd,
        stdin,
        timeout_seconds: Some(x.timeout.as_secs()),
        user: Some(match x.root {
            true => ExecUser::Root,
            false => ExecUser::User,
        }),
    };
    if ui.json {
        // One JSON answer: each stream cut at 1 MiB (`truncated`).
        let r: ExecResult = c.post(&ws_path(&x.target, "/exec"), &body).await?;
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
        return Ok(r.exit_code);
    }
    streamed(c, &ws_path(&x.target, "/exec/stream"), &body).await
}

/// Runs an exec through the streaming endpoint, writing the command's
/// output as it comes; its exit status, or the API's error.
async fn streamed(c: &Client, path: &str, body: &ExecBody) -> Outcome {
    use berth_proto::exec_stream::Frame;
    let mut end = None;
    c.post_exec_stream(path, body, |f| match f {
        Frame::Stdout(b) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&b).and_then(|()| out.flush());
        }
        Frame::Stderr(b) => {
            let _ = std::io::stderr().write_all(&b);
        }
        Frame::Exit(code) => end = Some(Ok(code)),
        Frame::Error { code, message } => end = Some(Err((code, message))),
    })
    .await?;
    match end {
        Some(Ok(code)) => Ok(code),
        Some(Err((code, message))) => Err(Failure {
            code,
            message,
            status: 1,
        }),
        None => Err(Failure {
            code: "unreachable".into(),
            message: "the exec stream broke off before the command ended".into(),
            status: 1,
        }),
    }
}
