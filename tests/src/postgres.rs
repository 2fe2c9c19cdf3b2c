//! A real PostgreSQL (Debian's package) for one test: its own data directory,
//! socket directory and loopback port, run as the `postgres` user (the
//! server refuses root), removed on drop. Each test asks for its own database.

use crate::process::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running PostgreSQL server.
pub struct Postgres {
    dir: PathBuf,
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed server's bin directory.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (is Debian's postgresql installed? `make deps`)",
                root.display()
            )
        })
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let v = versions
        .last()
        .expect("a PostgreSQL version under /usr/lib/postgresql");
    root.join(v.to_string()).join("bin")
}

/// `prog` run directly as the `postgres` user (so signals reach the server itself).
fn as_postgres(bin: &Path, prog: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("user postgres (Debian's postgresql package)");
    let mut c = Command::new(bin.join(prog));
    c.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir("/tmp");
    c
}

impl Postgres {
    /// initdb (trust auth for the `berth` superuser, loopback only) and start.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// `start`, also listening on `addr` (a test bridge's address) and
    /// trusting the machines on its /24.
    pub fn start_on(addr: Option<&str>) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/berth-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir pg dir");
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postgres {}", dir.display());
        let bin = bin_dir();
        let data = dir.join("data");
        let out = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "berth",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut listen = "127.0.0.1".to_string();
        if let Some(a) = addr {
            listen = format!("{listen},{a}");
            let net = a.rsplit_once('.').map_or(a, |(n, _)| n);
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .expect("pg_hba.conf");
            std::io::Write::write_all(
                &mut hba,
                format!("host all berth {net}.0/24 trust\n").as_bytes(),
            )
            .expect("write pg_hba.conf");
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).expect("pg log");
        let child = as_postgres(&bin, "postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c"])
            .arg(format!("listen_addresses={listen}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let pg = Self {
            dir,
            child: Some(child),
            port,
            bin,
        };
        let start = Instant::now();
        loop {
            let ok = Command::new(pg.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "berth",
                    "-q",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start: {}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://berth@127.0.0.1:{}/{name}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: fast shutdown (clients disconnected, children stopped).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
