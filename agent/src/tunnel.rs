//! Tunnels into workspaces, served by the agent itself: SSH (`ssh`, with
//! SFTP in `sftp`) for OpenSSH and VS Code, and what they need of the
//! workspaces (`WorkspaceAccess`: run a process, dial a port, find a
//! process to enter). The workspace manager implements it; nothing here
//! knows how workspaces are made.

pub mod activity;
pub mod beneath;
pub mod files;
pub mod sftp;
pub mod ssh;

use crate::error::{AgentError, Result};
use crate::tunnel::activity::Activity;
use berth_proto::agent as pb;
use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a tunnel needs of the workspaces.
pub trait WorkspaceAccess: Clone + Send + Sync + 'static {
    /// Runs a process in a workspace: its input from `input`, its output
    /// and exit status to `output`.
    fn exec(
        &self,
        req: pb::ExecRequest,
        input: mpsc::Receiver<pb::ExecInput>,
        output: mpsc::Sender<pb::ExecOutput>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A TCP connection to a port of a running workspace, dialled inside it.
    fn connect(
        &self,
        name: &str,
        port: u32,
    ) -> impl Future<Output = Result<tokio::net::TcpStream>> + Send;

    /// The process (and user) SFTP works as in a running workspace.
    fn process(&self, name: &str) -> impl Future<Output = Result<sftp::Target>> + Send;

    /// Tunnel sessions and bytes, per workspace.
    fn activity(&self) -> &Activity;
}

/// The SSH server's settings, with the node's host key.
#[derive(Clone)]
pub struct Tunnels {
    ssh: Arc<russh::server::Config>,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels").finish_non_exhaustive()
    }
}

impl Tunnels {
    /// The tunnels of a node whose state lives in `state_dir` (its SSH host
    /// key is made there on first use).
    pub fn new(state_dir: &Path) -> Result<Self> {
        Ok(Self {
            ssh: Arc::new(config(host_key(state_dir)?)),
        })
    }

    /// The SSH server's settings.
    pub fn ssh_config(&self) -> Arc<russh::server::Config> {
        self.ssh.clone()
    }

    /// The node's SSH host key, OpenSSH public key format.
    pub fn ssh_host_key(&self) -> String {
        self.ssh
            .keys
            .first()
            .and_then(|k| k.public_key().to_openssh().ok())
            .unwrap_or_default()
    }
}

/// The host key's file in the agent's state directory (OpenSSH format).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// The node's SSH host key, made (ed25519) on first use and kept in the
/// state directory, readable by root only.
pub fn host_key(state_dir: &Path) -> Result<PrivateKey> {
    let path = state_dir.join(HOST_KEY_FILE);
    let bad = |e: &dyn std::fmt::Display| {
        AgentError::InvalidRequest(format!("ssh host key {}: {e}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(&text).map_err(|e| bad(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
                &seed,
            ));
            let text = key
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| bad(&e))?;
            berth_proto::files::write_private(&path, text.as_bytes())
                .map_err(AgentError::io("write the ssh host key"))?;
            tracing::info!(path = %path.display(), "made the node's ssh host key");
            Ok(key)
        }
        Err(e) => Err(AgentError::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// The server settings every connection shares.
pub fn config(key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-berth_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![key],
        // Keys are checked against a list in memory: a short constant delay.
        auth_rejection_time: Duration::from_millis(200),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // A quiet editor session may last all day; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = host_key(dir.path()).unwrap();
        let b = host_key(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(dir.path().join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
