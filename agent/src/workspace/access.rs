//! What tunnels need of the workspaces: a connection dialled inside one,
//! the process SFTP enters.

use super::*;
use crate::tunnel::{sftp, WorkspaceAccess};

impl Manager {
    /// A TCP connection to `port` of a running workspace, dialled from
    /// inside its network namespace (so a server bound to 127.0.0.1 there is
    /// reachable).
    pub async fn connect(&self, name: &str, port: u32) -> Result<tokio::net::TcpStream> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AgentError::InvalidRequest(format!("port {port} is not 1 to 65535")))?;
        let r = self.record(name)?;
        let st = self.status_of(&r).await?;
        if st.state != pb::State::Running as i32 {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: pb::State::try_from(st.state)
                    .map_or("unknown", |s| s.as_str_name())
                    .trim_start_matches("STATE_")
                    .to_ascii_lowercase(),
                action: "connect",
            });
        }
        crate::net::netns::dial(self.inner.net.netns_path(r.parts()), port)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => {
                    AgentError::PortClosed {
                        name: name.into(),
                        port,
                        reason: e.to_string(),
                    }
                }
                _ => AgentError::Io {
                    context: "connect in the workspace".into(),
                    source: e,
                },
            })
    }
}

impl WorkspaceAccess for Manager {
    async fn exec(
        &self,
        req: pb::ExecRequest,
        input: tokio::sync::mpsc::Receiver<pb::ExecInput>,
        output: tokio::sync::mpsc::Sender<pb::ExecOutput>,
    ) -> Result<()> {
        Manager::exec(self, req, input, output).await
    }

    async fn connect(&self, name: &str, port: u32) -> Result<tokio::net::TcpStream> {
        Manager::connect(self, name, port).await
    }

    /// The init process and user of a running workspace (what SFTP enters).
    async fn process(&self, name: &str) -> Result<sftp::Target> {
        let r = self.record(name)?;
        let st = self.status_of(&r).await?;
        if st.state != pb::State::Running as i32 || st.pid == 0 {
            return Err(AgentError::Conflict {
                name: name.into(),
                state: "not running".into(),
                action: "sftp",
            });
        }
        let (uid, gid) = host_ids(r.userns, r.uid, r.gid)?;
        Ok(sftp::Target {
            pid: st.pid,
            uid,
            gid,
            idmap: r.userns,
        })
    }

    fn activity(&self) -> &crate::tunnel::activity::Activity {
        Manager::activity(self)
    }
}
