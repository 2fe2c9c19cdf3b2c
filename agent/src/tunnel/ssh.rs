//! The agent's SSH server. Every workspace is reachable by SSH without an
//! sshd in its image: the coordinator relays the user's SSH connection, as
//! opaque bytes, over a QUIC stream to this server, which authenticates the
//! user's key against the owner's keys sent with the stream and serves:
//!
//! - `shell` and `exec` as processes inside the workspace container (a real
//!   PTY when the client asked for one), with `env`, `window-change`,
//!   signals, stdin EOF and the exit status;
//! - the `sftp` subsystem (so `sftp` and `scp` work), see [`sftp`];
//! - `direct-tcpip` channels (`ssh -L`) to the workspace's own ports.

use super::{sftp, WorkspaceAccess};
use crate::error::{AgentError, Result};
use crate::tunnel::activity::Kind;
use berth_proto::agent::{self as pb, exec_input::Input, exec_output::Output};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Sig};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Most `env` requests a session keeps (OpenSSH clients send a few).
const MAX_ENV: usize = 64;

/// Parses authorized_keys lines; lines that are not keys are skipped.
pub fn parse_keys(lines: &[String]) -> Vec<PublicKey> {
    lines
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            (!l.is_empty() && !l.starts_with('#'))
                .then(|| PublicKey::from_openssh(l).ok())
                .flatten()
        })
        .collect()
}

/// Serves one SSH connection for workspace `name` on `stream` until the
/// client goes away.
pub async fn serve<A, S>(
    m: A,
    config: Arc<russh::server::Config>,
    name: String,
    keys: Vec<PublicKey>,
    stream: S,
) -> Result<()>
where
    A: WorkspaceAccess,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracked = m.activity().open(&name, Kind::Ssh);
    let server = Server {
        m: m.clone(),
        name,
        keys,
        chans: HashMap::new(),
    };
    let counted = crate::tunnel::activity::Counted::new(stream, tracked);
    let session = russh::server::run_stream(config, counted, server)
        .await
        .map_err(|e| AgentError::InvalidRequest(format!("ssh: {e}")))?;
    if let Err(e) = session.await {
        tracing::debug!(error = %e, "ssh connection ended");
    }
    Ok(())
}

struct Server<A> {
    m: A,
    name: String,
    keys: Vec<PublicKey>,
    chans: HashMap<ChannelId, Chan>,
}

#[derive(Default)]
struct Chan {
    /// Kept until a request decides what the channel is (sftp takes it).
    channel: Option<Channel<Msg>>,
    env: Vec<(String, String)>,
    /// (TERM, rows, cols) once a PTY was asked for.
    pty: Option<(String, u32, u32)>,
    /// The running process's input, once started.
    input: Option<mpsc::Sender<pb::ExecInput>>,
}

impl<A: WorkspaceAccess> Server<A> {
    /// Whether `id` is an open session channel that runs nothing yet.
    fn fresh(&self, id: ChannelId) -> bool {
        self.chans.get(&id).is_some_and(|c| c.input.is_none())
    }

    fn known(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.key_data() == key.key_data())
    }

    /// Starts `argv` for a session channel and streams its output back.
    fn start(&mut self, id: ChannelId, argv: Vec<String>, session: &mut Session) {
        let Some(chan) = self.chans.get_mut(&id) else {
            return;
        };
        // The process's output goes through the session handle; the channel
        // object is not read, so drop it (russh then skips queueing to it).
        chan.channel = None;
        let (tty, rows, cols) = match &chan.pty {
            Some((term, rows, cols)) => {
                if !term.is_empty() {
                    chan.env.push(("TERM".into(), term.clone()));
                }
                (true, *rows, *cols)
            }
            None => (false, 0, 0),
        };
        let req = pb::ExecRequest {
            name: self.name.clone(),
            argv,
            env: chan.env.iter().cloned().collect(),
            cwd: String::new(),
            tty,
            rows,
            cols,
            activity: String::new(),
            user: String::new(),
        };
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel::<pb::ExecOutput>(64);
        chan.input = Some(in_tx);
        let handle = session.handle();
        let m = self.m.clone();
        tokio::spawn(async move {
            let run = async {
                if let Err(e) = m.exec(req, in_rx, out_tx.clone()).await {
                    let _ = out_tx
                        .send(pb::ExecOutput {
                            output: Some(Output::Error(e.to_proto())),
                        })
                        .await;
                }
                drop(out_tx);
            };
            let forward = async {
                let mut status = None;
                while let Some(msg) = out_rx.recv().await {
                    match msg.output {
                        Some(Output::Stdout(b)) => {
                            let _ = handle.data(id, b).await;
                        }
                        Some(Output::Stderr(b)) => {
                            let _ = handle.extended_data(id, 1, b).await;
                        }
                        Some(Output::ExitCode(c)) => status = Some(c as u32),
                        Some(Output::Error(e)) => {
                            let line = format!("berth: {} ({})\r\n", e.message, e.code);
                            let _ = handle.extended_data(id, 1, line.into_bytes()).await;
                            status = Some(255);
                        }
                        None => {}
                    }
                }
                let _ = handle.exit_status_request(id, status.unwrap_or(255)).await;
                let _ = handle.eof(id).await;
                let _ = handle.close(id).await;
            };
            tokio::join!(run, forward);
        });
    }

    async fn input(&mut self, id: ChannelId, input: Input) {
        if let Some(tx) = self.chans.get(&id).and_then(|c| c.input.clone()) {
            let _ = tx.send(pb::ExecInput { input: Some(input) }).await;
        }
    }
}

/// The number of a signal named in an SSH `signal` request.
fn signal_number(sig: &Sig) -> Option<u32> {
    let n = match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "WINCH" => libc::SIGWINCH,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            _ => return None,
        },
    };
    u32::try_from(n).ok()
}

/// A command as OpenSSH runs it: through the shell, in the workspace directory.
fn command(cmd: &[u8]) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        String::from_utf8_lossy(cmd).into_owned(),
    ]
}

impl<A: WorkspaceAccess> Handler for Server<A> {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> std::result::Result<Auth, Self::Error> {
        Ok(if self.known(offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> std::result::Result<Auth, Self::Error> {
        let ok = self.known(key.public_key);
        tracing::info!(workspace = %self.name, user, accepted = ok, "ssh public key login");
        Ok(if ok { Auth::Accept } else { Auth::reject() })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        self.chans.insert(
            channel.id(),
            Chan {
                channel: Some(channel),
                ..Default::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        // Only the workspace's own ports: it is dialled inside its netns.
        if !matches!(
            host,
            "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0"
        ) {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let m = self.m.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            match m.connect(&name, port).await {
                Ok(tcp) => {
                    reply.accept().await;
                    let tracked = m.activity().open(&name, Kind::Ssh);
                    let mut tcp = crate::tunnel::activity::Counted::new(tcp, tracked);
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                }
                Err(e) => {
                    tracing::info!(workspace = %name, port, code = e.code(), error = %e, "ssh -L refused");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        match self.chans.get_mut(&channel) {
            Some(c) if c.input.is_none() => {
                c.pty = Some((term.to_string(), row_height, col_width));
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        let valid = !name.is_empty()
            && !name.contains('=')
            && !name.contains('\0')
            && !value.contains('\0');
        match self.chans.get_mut(&channel) {
            Some(c) if valid && c.input.is_none() && c.env.len() < MAX_ENV => {
                c.env.push((name.to_string(), value.to_string()));
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        if !self.fresh(channel) {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        self.start(channel, berth_proto::login_shell(), session);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        if !self.fresh(channel) {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        self.start(channel, command(data), session);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        let taken = match self.chans.get_mut(&channel) {
            Some(c) if name == "sftp" && c.input.is_none() => c.channel.take(),
            _ => None,
        };
        let Some(ch) = taken else {
            return session.channel_failure(channel);
        };
        match self.m.process(&self.name).await {
            Ok(target) => {
                session.channel_success(channel)?;
                sftp::spawn(
                    target,
                    ch.into_stream(),
                    self.name.clone(),
                    session.handle(),
                    channel,
                );
                Ok(())
            }
            Err(e) => {
                tracing::info!(workspace = %self.name, code = e.code(), error = %e, "sftp refused");
                session.channel_failure(channel)
            }
        }
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        self.input(channel, Input::Stdin(data.to_vec())).await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        self.input(channel, Input::CloseStdin(true)).await;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        let size = pb::Resize {
            rows: row_height,
            cols: col_width,
        };
        self.input(channel, Input::Resize(size)).await;
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        if let Some(n) = signal_number(&signal) {
            self.input(channel, Input::Signal(n)).await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        // The client is gone: hang up on a process still running, as sshd
        // does when it closes the session's terminal.
        if let Some(c) = self.chans.remove(&channel) {
            if let Some(tx) = c.input {
                let hup = Input::Signal(libc::SIGHUP as u32);
                let _ = tx.try_send(pb::ExecInput { input: Some(hup) });
            }
        }
        Ok(())
    }
}

impl<A> Drop for Server<A> {
    fn drop(&mut self) {
        for (_, c) in self.chans.drain() {
            if let Some(tx) = c.input {
                let hup = Input::Signal(libc::SIGHUP as u32);
                let _ = tx.try_send(pb::ExecInput { input: Some(hup) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::host_key;

    #[test]
    fn authorized_keys_lines_parse_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let k = host_key(dir.path()).unwrap();
        let line = k.public_key().to_openssh().unwrap();
        let keys = parse_keys(&[
            format!("{line} me@laptop"),
            "# comment".into(),
            "not a key".into(),
            String::new(),
        ]);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_data(), k.public_key().key_data());
    }

    #[test]
    fn signals_map_to_their_numbers() {
        assert_eq!(signal_number(&Sig::INT), Some(2));
        assert_eq!(signal_number(&Sig::Custom("WINCH".into())), Some(28));
        assert_eq!(signal_number(&Sig::Custom("NOPE".into())), None);
    }
}
