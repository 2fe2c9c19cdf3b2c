//! Processes a test starts: containerd, an OCI registry, a lone coordinator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether a TCP server listens on `port`, in network namespace `netns`
/// or this one.
pub fn listening(netns: Option<&str>, port: u16) -> bool {
    let probe = format!("ss -ltn 'sport = :{port}' | grep -q LISTEN");
    let cmd = match netns {
        Some(ns) => format!("ip netns exec {ns} sh -c \"{probe}\""),
        None => probe,
    };
    crate::sh(&cmd).0
}

/// Waits (30 s at most) until a TCP server listens on `port`.
pub fn wait_listening(netns: Option<&str>, port: u16) {
    wait_for(
        &format!("a listener on {port} ({netns:?})"),
        Duration::from_secs(30),
        || listening(netns, port),
    );
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "{what} not ready after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private containerd: own root, state directory, socket and config.
#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Network namespace (under /run/netns) it runs in; None: the host's.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with everything under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_in(dir, None)
    }

    /// Starts containerd inside network namespace `netns` (its mount
    /// namespace stays the host's, so mounts remain visible to checks).
    pub fn start_in(dir: &Path, netns: Option<&str>) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir containerd dir");
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
                d = dir.display(),
                s = socket.display()
            ),
        )
        .expect("write containerd config");
        let mut c = Self {
            dir: dir.to_path_buf(),
            socket,
            netns: netns.map(String::from),
            child: None,
        };
        c.restart();
        c
    }

    /// (Re)starts the containerd process and waits until it answers.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("containerd log");
        let child = in_netns(self.netns.as_deref(), "containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd (is it installed? make test installs it)");
        self.child = Some(child);
        wait_for("containerd", Duration::from_secs(20), || {
            self.ctr(&["version"]).0
        });
    }

    /// SIGKILLs containerd (its shims, hence the workspaces, keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `ctr` against this containerd in the agent's namespace.
    pub fn ctr(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth"])
            .args(args)
            .output()
            .expect("run ctr");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Non-empty lines of a `ctr ... -q` listing.
    pub fn ctr_list(&self, args: &[&str]) -> Vec<String> {
        self.ctr(args)
            .1
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command to run in network namespace `netns` (via nsenter, network only), or directly.
pub fn in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A registry (Debian's docker-registry) on 127.0.0.1.
#[derive(Debug)]
pub struct Registry {
    /// host:port to use in image references.
    pub addr: String,
    child: Child,
    _config: PathBuf,
}

impl Registry {
    /// Serves `storage`; with `htpasswd` every request needs Basic auth.
    pub fn start(storage: &Path, htpasswd: Option<&Path>, scratch: &Path) -> Self {
        let auth = htpasswd.map_or(String::new(), |p| {
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                p.display()
            )
        });
        Self::start_with_auth(storage, &auth, scratch)
    }

    /// Serves `storage` with `auth`, an `auth:` section of the registry's
    /// configuration (YAML), or none if empty.
    pub fn start_with_auth(storage: &Path, auth: &str, scratch: &Path) -> Self {
        Self::start_on("127.0.0.1", storage, auth, scratch)
    }

    /// Serves `storage` on `host` (an address of this machine).
    pub fn start_on(host: &str, storage: &Path, auth: &str, scratch: &Path) -> Self {
        Self::start_with(host, storage, auth, scratch, false)
    }

    /// `start_on` for a registry things are pushed to and deleted from.
    pub fn start_writable_on(host: &str, storage: &Path, scratch: &Path) -> Self {
        Self::start_with(host, storage, "", scratch, true)
    }

    fn start_with(host: &str, storage: &Path, auth: &str, scratch: &Path, delete: bool) -> Self {
        let port = free_port();
        let addr = format!("{host}:{port}");
        let config = scratch.join(format!("registry-{port}.yml"));
        std::fs::create_dir_all(scratch).expect("mkdir scratch");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 redirect:\n    disable: true\n  delete:\n    enabled: {delete}\nhttp:\n  addr: {addr}\n{auth}",
                storage.display()
            ),
        )
        .expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        wait_for("registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Self {
            addr,
            child,
            _config: config,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `berth-coordinator` on its own (no agent), API and link on loopback,
/// SQLite in a temporary directory; killed on drop.
pub struct Coordinator {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Base URL of the API.
    pub api: String,
    pub link: std::net::SocketAddr,
}

impl Coordinator {
    pub fn start() -> Self {
        Self::start_configured(|_| String::new())
    }

    /// `start` with a configuration file (`--config`): `config` is given
    /// the API's base URL and returns the file's text (empty: none).
    pub fn start_configured(config: impl FnOnce(&str) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = format!("127.0.0.1:{}", free_port());
        let text = config(&format!("http://{api}"));
        let mut extra = Vec::new();
        if !text.is_empty() {
            let path = dir.path().join("coordinator.toml");
            std::fs::write(&path, text).expect("write the coordinator's configuration");
            extra = vec!["--config".to_string(), path.display().to_string()];
        }
        let link: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("link address");
        let log = std::fs::File::create(dir.path().join("coordinator.log")).expect("log");
        let child = Command::new(crate::coordinator_bin())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--api", &api, "--link", &link.to_string()])
            // As make up runs it: a create may leave out the image.
            .args(["--default-image", "127.0.0.1:5000/dev:latest"])
            .arg("--backup-repository")
            .arg(dir.path().join("backups"))
            .args(&extra)
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-coordinator");
        wait_for("coordinator API", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&api).is_ok()
        });
        Self {
            child,
            dir,
            api: format!("http://{api}"),
            link,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin token written on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    /// The URL of its SQLite store (another process may open it too).
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.data_dir().join("berth.db").display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
