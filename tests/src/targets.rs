//! Bare Debian 12 machines for install tests: the rootfs of
//! `scripts/debian-rootfs.sh` (cached), booted with `systemd-nspawn --boot`
//! (its own systemd as PID 1, sshd, containerd) in a network namespace of
//! its own, on a bridge with this machine; root logs in over SSH with a key
//! made for the run. Stopped and removed on drop.
//!
//! nspawn mounts /proc/sys read-only inside, so the namespace's IPv4
//! forwarding (which the agent needs and would set) is set here before boot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Berth's Debian packages built from this build's debug binaries, version
/// `v`, into `out` (`scripts/dist.sh`): agent, coordinator, CLI.
pub fn dist_packages(out: &Path, v: &str) -> Vec<PathBuf> {
    let cmd = format!(
        "cd {} && scripts/dist.sh --profile dev --no-build --deb-version {v} -o {}",
        crate::repo_root().display(),
        out.display()
    );
    let (ok, o, e) = crate::sh(&cmd);
    assert!(ok, "{cmd}:\n{o}{e}");
    ["berth-agent", "berth-coordinator", "berth"]
        .iter()
        .map(|p| out.join(format!("{p}_{v}_amd64.deb")))
        .collect()
}

/// The cached Debian 12 rootfs tarball.
pub fn rootfs_tar() -> PathBuf {
    let cmd = format!("{}/scripts/debian-rootfs.sh", crate::repo_root().display());
    let (ok, o, e) = crate::sh(&cmd);
    assert!(ok, "{cmd}: {e}");
    PathBuf::from(o.trim())
}

/// One booted machine.
pub struct Target {
    pub name: String,
    pub ip: String,
    netns: String,
    root: PathBuf,
    child: Child,
}

/// Machines on one bridge.
pub struct Targets {
    pub targets: Vec<Target>,
    /// The private key root logs in with.
    pub key: PathBuf,
    /// This machine's address on their bridge.
    pub host_ip: String,
    bridge: String,
    dir: PathBuf,
}

fn run(cmd: &str) {
    let (ok, o, e) = crate::sh(cmd);
    assert!(ok, "{cmd}:\n{o}{e}");
}

impl Targets {
    /// Boots one machine per name and waits until each answers SSH.
    pub fn boot(names: &[&str]) -> Self {
        let tar = rootfs_tar();
        let id = format!("{}", std::process::id() % 100_000);
        let k = 100 + std::process::id() % 100;
        let dir = PathBuf::from(format!("/tmp/bt{id}"));
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(&dir)
            .status();
        std::fs::create_dir_all(&dir).expect("mkdir targets");
        let key = dir.join("id");
        crate::openssh::keygen(&key);
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let bridge = format!("bt{id}");
        let host_ip = format!("10.250.{k}.1");
        run(&format!(
            "ip link del {bridge} 2>/dev/null; ip link add {bridge} type bridge && \
             ip addr add {host_ip}/24 dev {bridge} && ip link set {bridge} up"
        ));
        let mut targets = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let root = dir.join(name);
            std::fs::create_dir_all(&root).expect("mkdir rootfs");
            run(&format!(
                "tar -xf {} -C {} --numeric-owner",
                tar.display(),
                root.display()
            ));
            let ssh = root.join("root/.ssh");
            std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
            std::fs::write(ssh.join("authorized_keys"), &public).expect("authorized_keys");
            run(&format!(
                "chmod 700 {0} && chmod 600 {0}/authorized_keys",
                ssh.display()
            ));
            std::fs::write(root.join("etc/hostname"), format!("{name}\n")).expect("hostname");
            let ip = format!("10.250.{k}.{}", 10 + i);
            let netns = format!("bt{id}-{i}");
            let veth = format!("bt{id}h{i}");
            run(&format!(
                "ip netns del {netns} 2>/dev/null; ip netns add {netns} && \
                 ip link add {veth} type veth peer name eth0 netns {netns} && \
                 ip link set {veth} master {bridge} up && \
                 ip -n {netns} addr add {ip}/24 dev eth0 && ip -n {netns} link set eth0 up && \
                 ip -n {netns} link set lo up && ip -n {netns} route add default via {host_ip} && \
                 ip netns exec {netns} sysctl -qw net.ipv4.ip_forward=1"
            ));
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
            let child = Command::new("systemd-nspawn")
                .arg("-D")
                .arg(&root)
                .args(["--boot", "--register=no", "--keep-unit", "--quiet"])
                // The agent makes bridges, veths and nftables rules in the
                // machine's network namespace (nspawn keeps CAP_NET_ADMIN
                // for --private-network only).
                .arg("--capability=all")
                .arg(format!("--machine={name}"))
                .arg(format!("--network-namespace-path=/run/netns/{netns}"))
                // No console: the container's output goes to the log.
                .arg("--console=passive")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("systemd-nspawn (Debian package systemd-container)");
            targets.push(Target {
                name: name.to_string(),
                ip,
                netns,
                root,
                child,
            });
        }
        let t = Self {
            targets,
            key,
            host_ip,
            bridge,
            dir,
        };
        for i in 0..t.targets.len() {
            // Booting takes seconds alone, much longer on a loaded machine.
            let deadline = Instant::now() + Duration::from_secs(180);
            while !t
                .ssh(i, "systemctl is-system-running --wait >/dev/null; true")
                .0
            {
                assert!(
                    Instant::now() < deadline,
                    "{} does not answer SSH:\n{}",
                    t.targets[i].name,
                    std::fs::read_to_string(t.dir.join(format!("{}.log", t.targets[i].name)))
                        .unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        t
    }

    /// `sh -c cmd` on target `i` as root over SSH: (ok, stdout, stderr).
    pub fn ssh(&self, i: usize, cmd: &str) -> (bool, String, String) {
        let out = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=5", "-i"])
            .arg(&self.key)
            .arg(format!("root@{}", self.targets[i].ip))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A target's console log (its boot and services).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.targets[i].name)))
            .unwrap_or_default()
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &mut self.targets {
            // SIGTERM: nspawn asks the container's systemd to power off.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(t.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for t in &mut self.targets {
            let deadline = Instant::now() + Duration::from_secs(15);
            while t.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = t.child.kill();
            let _ = t.child.wait();
            let _ = crate::sh(&format!("ip netns del {}", t.netns));
            let _ = Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&t.root)
                .status();
        }
        let _ = crate::sh(&format!("ip link del {}", self.bridge));
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(&self.dir)
            .status();
    }
}
