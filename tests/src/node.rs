//! One Berth node for a test: containerd + registry + a berth-agent process.

use crate::process::{Containerd, Registry};
use berth_agent::client::{Client, ClientError};
use berth_proto::agent::{self as pb, request::Command, response::Result as R};
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What a node should look like.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Extra TOML appended to the agent config.
    pub extra_config: String,
    /// Extra keys of the agent config's `[network]` table.
    pub network_config: String,
}

/// A node: everything under `dir`, names derived from a per-test id.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub containerd: Containerd,
    pub registry: Registry,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    pub nft_table: String,
    pub cgroup_parent: String,
    agent: Option<Child>,
    agent_env: Vec<(String, String)>,
}

impl Node {
    /// Starts containerd and a registry with the `tiny` image; no agent yet.
    pub fn new(opts: NodeOptions) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{pid}{seq}");
        let dir = PathBuf::from(format!("/tmp/bt{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir node dir");
        let storage = crate::images(&["tiny"]);
        let registry = Registry::start(&storage, None, &dir);
        let containerd = Containerd::start(&dir.join("containerd"));
        // A /24 per node out of 10.64.0.0/10, picked from pid and sequence.
        let idx = (pid.wrapping_mul(8).wrapping_add(seq)) % 16384;
        let subnet = format!("10.{}.{}.0/24", 64 + idx / 256, idx % 256);
        let (bridge, nft_table, cgroup_parent) =
            (format!("bt{id}"), format!("bt_{id}"), format!("bt-{id}"));
        let state_dir = dir.join("agent");
        let netns_dir = dir.join("netns");
        let socket = state_dir.join("agent.sock");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n\
                 [containerd]\nsocket = \"{sock}\"\nrunc_root = \"{runc}\"\n\
                 [network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\nnft_table = \"{nft_table}\"\nnetns_dir = \"{netns}\"\n{network}\n\
                 [cgroup]\nparent = \"{cgroup_parent}\"\n\
                 [workspace]\nstop_grace_seconds = 5\n{extra}",
                state = state_dir.display(),
                sock = containerd.socket.display(),
                runc = dir.join("runc").display(),
                netns = netns_dir.display(),
                extra = opts.extra_config,
                network = opts.network_config,
            ),
        )
        .expect("write agent config");
        Self {
            id,
            dir,
            containerd,
            registry,
            config,
            socket,
            state_dir,
            netns_dir,
            bridge,
            subnet,
            nft_table,
            cgroup_parent,
            agent: None,
            agent_env: Vec::new(),
        }
    }

    /// The `tiny` image as served by this node's registry.
    pub fn tiny(&self) -> String {
        format!("{}/tiny:latest", self.registry.addr)
    }

    /// Starts the agent and waits until it serves requests; returns how long that took.
    pub async fn start_agent(&mut self) -> Duration {
        self.start_agent_with(&[]).await
    }

    /// Starts the agent with extra environment (e.g. a failpoint).
    pub async fn start_agent_with(&mut self, env: &[(&str, &str)]) -> Duration {
        assert!(self.agent.is_none(), "agent already running");
        self.agent_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        let started = Instant::now();
        let child = Proc::new(crate::agent_bin())
            .arg("--config")
            .arg(&self.config)
            .envs(self.agent_env.iter().cloned())
            .env(
                "BERTH_LOG",
                "info,berth_agent::workspace::exec=debug,netlink_packet_route=error",
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-agent");
        self.agent = Some(child);
        let ready = crate::eventually(Duration::from_secs(30), || async {
            let mut c = Client::connect(&self.socket).await.ok()?;
            c.call(Command::List(pb::ListRequest {}))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(
            ready.is_some(),
            "agent not ready in 30 s; log:\n{}",
            self.agent_log()
        );
        started.elapsed()
    }

    /// The agent's process id, if it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// `kill -9` of the agent process.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for an agent that is expected to kill itself (failpoint).
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> bool {
        let Some(c) = self.agent.as_mut() else {
            return true;
        };
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = c.try_wait() {
                self.agent = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// A fresh client connection.
    pub async fn client(&self) -> Client {
        Client::connect(&self.socket)
            .await
            .expect("connect to agent")
    }

    /// Sends one command.
    pub async fn call(&self, cmd: Command) -> Result<R, ClientError> {
        self.client().await.call(cmd).await
    }

    /// A small workspace spec on the `tiny` image.
    pub fn spec(&self, name: &str) -> pb::WorkspaceSpec {
        pb::WorkspaceSpec {
            name: name.into(),
            image: self.tiny(),
            cpu_millis: 500,
            memory_bytes: 128 << 20,
            pids: 128,
            disk_bytes: 64 << 20,
            ..Default::default()
        }
    }

    /// Creates and starts a workspace from `spec`.
    pub async fn create(
        &self,
        spec: pb::WorkspaceSpec,
    ) -> Result<pb::WorkspaceStatus, ClientError> {
        self.client()
            .await
            .status_call(Command::Create(pb::CreateRequest {
                spec: Some(spec),
                auth: None,
                start: true,
                restore: None,
                secrets: None,
            }))
            .await
    }

    /// Status of a workspace.
    pub async fn status(&self, name: &str) -> Result<pb::WorkspaceStatus, ClientError> {
        self.client()
            .await
            .status_call(Command::Status(pb::NameRequest {
                name: name.into(),
                generation: 0,
            }))
            .await
    }

    /// All workspaces.
    pub async fn list(&self) -> Vec<pb::WorkspaceStatus> {
        match self.call(Command::List(pb::ListRequest {})).await {
            Ok(R::List(l)) => l.workspaces,
            other => panic!("list: {other:?}"),
        }
    }

    /// Stops a workspace.
    pub async fn stop(&self, name: &str) -> Result<pb::WorkspaceStatus, ClientError> {
        let req = pb::StopRequest {
            name: name.into(),
            grace_seconds: 0,
            generation: 0,
        };
        self.client().await.status_call(Command::Stop(req)).await
    }

    /// Starts a workspace.
    pub async fn start(&self, name: &str) -> Result<pb::WorkspaceStatus, ClientError> {
        self.client()
            .await
            .status_call(Command::Start(pb::StartRequest {
                name: name.into(),
                generation: 0,
                secrets: None,
            }))
            .await
    }

    /// Deletes a workspace.
    pub async fn delete(&self, name: &str) -> Result<pb::WorkspaceStatus, ClientError> {
        self.client()
            .await
            .status_call(Command::Delete(pb::NameRequest {
                name: name.into(),
                generation: 0,
            }))
            .await
    }

    /// Runs `sh -c script` in a workspace; returns (exit code, stdout, stderr).
    pub async fn sh(&self, name: &str, script: &str) -> (i32, String, String) {
        self.sh_as(name, "", script).await
    }

    /// Runs `sh -c script` as root of the workspace's user namespace.
    pub async fn sh_root(&self, name: &str, script: &str) -> (i32, String, String) {
        self.sh_as(name, "root", script).await
    }

    async fn sh_as(&self, name: &str, user: &str, script: &str) -> (i32, String, String) {
        let req = pb::ExecRequest {
            name: name.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            user: user.into(),
            ..Default::default()
        };
        let out = self
            .client()
            .await
            .exec(req, b"")
            .await
            .unwrap_or_else(|e| panic!("exec {script:?} in {name}: {e}"));
        (
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The name a workspace's volume and namespace go by: its prepared
    /// slot's id if it took one (from its record), else its own name.
    pub fn parts(&self, name: &str) -> String {
        let record = std::fs::read(
            self.state_dir
                .join("workspaces")
                .join(format!("{name}.json")),
        )
        .unwrap_or_else(|e| panic!("record of {name}: {e}"));
        let r: serde_json::Value = serde_json::from_slice(&record).expect("record is JSON");
        match r["slot"].as_str() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => name.to_string(),
        }
    }

    /// The network namespace file of a workspace.
    pub fn netns(&self, name: &str) -> PathBuf {
        self.netns_dir.join(self.parts(name))
    }

    /// The directory of a workspace's volume bound at /workspace, on the node.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.state_dir
            .join("volumes")
            .join(self.parts(name))
            .join("workspace")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.agent_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- agent log of node {} (last 40 lines) ---", self.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill_agent();
        crate::clean::force_clean(self);
    }
}
