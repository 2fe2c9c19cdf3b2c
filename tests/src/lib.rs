//! Berth's test harness: real components started on this machine for one
//! test and removed after it. A [`Node`] is a private containerd (own root,
//! state dir and socket), a loopback registry serving the project's images,
//! and a `berth-agent` process with its own bridge, subnet, nftables table,
//! cgroup parent and state directory, so tests run in parallel without
//! touching each other or the host's own services.

pub mod backups;
pub mod bench;
pub mod browser;
pub mod clean;
pub mod cluster;
pub mod db;
pub mod git;
pub mod imds;
pub mod kubelet;
mod node;
pub mod oci;
pub mod oidc;
pub mod openssh;
pub mod postgres;
mod process;
pub mod s3;
pub mod targets;
pub mod xfs;

pub use clean::{assert_clean, Leaks};
pub use cluster::{Cluster, ClusterNode, ClusterOptions};
pub use node::{Node, NodeOptions};
pub use postgres::Postgres;
pub use process::{free_port, listening, wait_listening, Containerd, Coordinator, Registry};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Root of the source tree.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where images and downloads are cached (outside the clone).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_CACHE").map_or_else(|| "/var/cache/berth".into(), PathBuf::from)
}

/// Builds (or finds in the cache) the named images and returns the registry
/// storage directory that holds them.
pub fn images(names: &[&str]) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    for n in names {
        if built.iter().any(|b| b == n) {
            continue;
        }
        let out = std::process::Command::new(repo_root().join("images/build.sh"))
            .arg(n)
            .output()
            .expect("run images/build.sh");
        assert!(
            out.status.success(),
            "images/build.sh {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(n.to_string());
    }
    cache_dir().join("registry")
}

/// Builds (or finds in the cache) the container image of this build's
/// `berth-<name>` (agent or coordinator) with `images/component.sh`, served
/// by the registry storage `images` returns as `berth/<name>:<version>`;
/// returns that repository and tag.
pub fn component_image(name: &str) -> String {
    let bin = agent_bin().with_file_name(format!("berth-{name}"));
    let version = env!("CARGO_PKG_VERSION");
    let out = std::process::Command::new(repo_root().join("images/component.sh"))
        .args([name, &bin.display().to_string(), version])
        .output()
        .expect("run images/component.sh");
    assert!(
        out.status.success(),
        "images/component.sh {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("berth/{name}:{version}")
}

/// Path of the `berth-agent` binary of this build (next to the test binary's
/// directory), or `$BERTH_AGENT_BIN`.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_AGENT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("berth-agent");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first (cargo build)",
        bin.display()
    );
    bin
}

/// The berth-coordinator binary next to berth-agent.
pub fn coordinator_bin() -> PathBuf {
    agent_bin().with_file_name("berth-coordinator")
}

/// The `berth` CLI next to berth-agent.
pub fn cli_bin() -> PathBuf {
    agent_bin().with_file_name("berth")
}

/// Runs a command, returning (success, stdout, stderr).
pub fn sh(cmd: &str) -> (bool, String, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
