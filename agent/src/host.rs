//! What the agent reads and sets of the machine it runs on, under one
//! `/proc` root given as a parameter: a DaemonSet may mount the host's
//! `/proc` elsewhere, and tests point it at a directory of their own.

use std::io;
use std::path::{Path, PathBuf};

/// The machine, seen through its `/proc`.
#[derive(Debug, Clone)]
pub struct Host {
    proc: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl Host {
    /// The machine whose proc filesystem is mounted at `proc`.
    pub fn new(proc: impl Into<PathBuf>) -> Self {
        Self { proc: proc.into() }
    }

    /// The proc filesystem's root.
    pub fn proc(&self) -> &Path {
        &self.proc
    }

    /// The agent's own mount table.
    pub fn mountinfo(&self) -> PathBuf {
        self.proc.join("self/mountinfo")
    }

    /// The host name, lower case (a node id when none is configured).
    pub fn hostname(&self) -> io::Result<String> {
        std::fs::read_to_string(self.proc.join("sys/kernel/hostname"))
            .map(|h| h.trim().to_ascii_lowercase())
    }

    /// The machine's memory in bytes (0 when unknown).
    pub fn memory_bytes(&self) -> u64 {
        std::fs::read_to_string(self.proc.join("meminfo"))
            .ok()
            .and_then(|s| mem_total(&s))
            .unwrap_or(0)
    }

    /// Lets the node route workspace traffic.
    /// Turns IPv4 forwarding on, unless it already is: a host whose
    /// /proc/sys is read-only (a container, a locked-down node) works when
    /// its admin set it beforehand.
    pub fn enable_ip_forward(&self) -> io::Result<()> {
        let path = self.proc.join("sys/net/ipv4/ip_forward");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        std::fs::write(path, "1")
    }
}

/// `MemTotal` of a meminfo text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|k| k.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_under_its_own_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/kernel")).unwrap();
        std::fs::create_dir_all(d.path().join("sys/net/ipv4")).unwrap();
        std::fs::write(d.path().join("sys/kernel/hostname"), "Node-7\n").unwrap();
        std::fs::write(
            d.path().join("meminfo"),
            "MemTotal:  2048 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        let h = Host::new(d.path());
        assert_eq!(h.hostname().unwrap(), "node-7");
        assert_eq!(h.memory_bytes(), 2048 * 1024);
        h.enable_ip_forward().unwrap();
        let fwd = std::fs::read_to_string(d.path().join("sys/net/ipv4/ip_forward")).unwrap();
        assert_eq!(fwd, "1");
        assert_eq!(h.mountinfo(), d.path().join("self/mountinfo"));
        assert_eq!(Host::new(d.path().join("none")).memory_bytes(), 0);
    }
}
