//! Debian's OpenSSH for tests and benches: key pairs, a client set up for
//! `berth.*` by `berth config-ssh`, and a private sshd (openssh-server) for
//! baselines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private sshd: its own host key, config and authorized key, on a
/// loopback port, optionally in a network namespace; root logs in with the
/// key it made. Killed on drop.
pub struct Sshd {
    pub port: u16,
    /// The client key root logs in with.
    pub key: PathBuf,
    netns: Option<String>,
    child: Child,
}

/// Makes an ed25519 key pair at `path` (and `path`.pub), replacing one there.
pub fn keygen(path: &Path) {
    let (ok, _, err) = crate::sh(&format!(
        "rm -f {p} {p}.pub && ssh-keygen -q -t ed25519 -N '' -C test -f {p}",
        p = path.display()
    ));
    assert!(ok, "ssh-keygen: {err}");
}

/// OpenSSH's client with the `Host berth.*` block `berth config-ssh` wrote
/// in `config`: its ProxyCommand reaches the coordinator at `api`.
#[derive(Debug, Clone)]
pub struct Client {
    pub home: PathBuf,
    pub config: PathBuf,
    pub api: String,
}

impl Client {
    /// `prog` (ssh, scp, sftp) with that config, `key`, and the API `token`
    /// (none when empty) for the ProxyCommand; killed on drop.
    pub fn command(
        &self,
        prog: &str,
        key: &Path,
        token: &str,
        args: &[&str],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(prog);
        cmd.arg("-F")
            .arg(&self.config)
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("BERTH_URL", &self.api)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if !token.is_empty() {
            cmd.env("BERTH_TOKEN", token);
        }
        cmd
    }

    /// Runs it to the end: (status, stdout, stderr).
    pub async fn run(
        &self,
        prog: &str,
        key: &Path,
        token: &str,
        args: &[&str],
    ) -> (i32, String, String) {
        let out = self
            .command(prog, key, token, args)
            .output()
            .await
            .expect("run OpenSSH");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Client {
    /// Runs it to the end with `stdin` as its input: (status, stdout, stderr).
    pub async fn run_with_stdin(
        &self,
        prog: &str,
        key: &Path,
        token: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> (i32, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command(prog, key, token, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run OpenSSH");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).await.expect("write stdin");
        // Kept open until the answer is in: closing stdin early would end
        // the forwarded connection's request side before the reply.
        let out = child.wait_with_output().await.expect("wait for OpenSSH");
        drop(input);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Sshd {
    /// Starts sshd on 127.0.0.1:`port` (in `netns` if given) under `dir`.
    pub fn start(dir: &Path, netns: Option<&str>, port: u16) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host);
        keygen(&key);
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile {}\nAllowTcpForwarding yes\nUseDNS no\n",
                host.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
                c
            }
            None => Command::new("/usr/sbin/sshd"),
        };
        let child = cmd
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd (Debian package openssh-server)");
        let s = Sshd {
            port,
            key,
            netns: netns.map(str::to_string),
            child,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.listening() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn listening(&self) -> bool {
        crate::process::listening(self.netns.as_deref(), self.port)
    }

    /// The `ssh` options that log in to it as root.
    pub fn client_args(&self) -> Vec<String> {
        [
            "-p",
            &self.port.to_string(),
            "-i",
            &self.key.display().to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
