//! Reads one workspace's sample from the machine: its cgroup's CPU time,
//! its processes (the `procfs` crate, under the agent's `/proc` root), the
//! terminals they hold and those terminals' input/output times, the TCP
//! connections of its network namespace that are not the agent's tunnels,
//! its interface's byte counters, and (cgroup v2) its PSI stall time.
//! Blocking: run it off the runtime.

use super::detector::{Proc, Sample, Tty};
use crate::cgroup::CgroupReader;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where one workspace is seen from.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its cgroup, e.g. "/berth/ws-1".
    pub cgroup: String,
    /// The host side of its veth (its byte counters), if it has one.
    pub veth: Option<String>,
    /// The address the agent's tunnels come from (the bridge's).
    pub gateway: Ipv4Addr,
    /// Its interface's byte count at the last sample, and how many more
    /// bytes make its connections worth reading: reading a namespace's TCP
    /// table walks the kernel's whole connection hash (~10 ms for IPv4 and
    /// IPv6 here), so it is read only when the interface moved enough
    /// bytes for connections to matter to the verdict.
    pub prev_net_bytes: Option<u64>,
    pub net_limit: u64,
}

/// What the sampler reads the machine through.
#[derive(Debug, Clone)]
pub struct Reader {
    pub proc: PathBuf,
    pub sys_class_net: PathBuf,
    pub cgroups: CgroupReader,
    /// Unix seconds the machine booted, and clock ticks per second: a
    /// process's start time is in ticks since boot.
    boot_s: u64,
    ticks: u64,
}

impl Reader {
    pub fn new(proc: &Path, cgroups: CgroupReader) -> Self {
        let boot_s = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
            })
            .unwrap_or(0);
        Self {
            proc: proc.to_path_buf(),
            sys_class_net: PathBuf::from("/sys/class/net"),
            cgroups,
            boot_s,
            ticks: procfs::ticks_per_second().max(1),
        }
    }

    /// The sample of `t` at `at_ms`, with the tunnels left for the caller.
    pub fn sample(&self, t: &Target, at_ms: u64) -> Sample {
        let pids = self.cgroups.procs(&t.cgroup);
        let procs: Vec<Proc> = pids.iter().filter_map(|&pid| self.proc_of(pid)).collect();
        let net_bytes = t.veth.as_deref().map_or(0, |v| {
            let read = |f: &str| {
                std::fs::read_to_string(self.sys_class_net.join(v).join("statistics").join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            read("rx_bytes") + read("tx_bytes")
        });
        let busy_net = t
            .prev_net_bytes
            .is_some_and(|p| net_bytes.saturating_sub(p) >= t.net_limit);
        let connections = match pids.first() {
            Some(&pid) if busy_net => self.connections(pid, t.gateway),
            _ => 0,
        };
        Sample {
            at_ms,
            cpu_nanos: self.cgroups.cpu_nanos(&t.cgroup),
            procs,
            tunnels: Vec::new(),
            connections,
            net_bytes,
            stall_micros: self.cgroups.stall_micros(&t.cgroup),
        }
    }

    fn proc_of(&self, pid: u32) -> Option<Proc> {
        let dir = self.proc.join(pid.to_string());
        let p = procfs::process::Process::new_with_root(dir.clone()).ok()?;
        let st = p.stat().ok()?;
        let mut command = p.cmdline().ok().unwrap_or_default().join(" ");
        if command.is_empty() {
            command = st.comm.clone();
        }
        if command.chars().count() > 60 {
            command = command.chars().take(57).collect::<String>() + "...";
        }
        let tty = (st.tty_nr != 0).then(|| tty_of(&dir)).flatten();
        Some(Proc {
            pid,
            command,
            start_ms: self.boot_s * 1000 + st.starttime * 1000 / self.ticks,
            cpu_nanos: (st.utime + st.stime) * 1_000_000_000 / self.ticks,
            tty,
        })
    }

    /// Established TCP connections in `pid`'s network namespace that do not
    /// come from the agent (its tunnels connect from the bridge address).
    fn connections(&self, pid: u32, gateway: Ipv4Addr) -> u32 {
        let Ok(p) = procfs::process::Process::new_with_root(self.proc.join(pid.to_string())) else {
            return 0;
        };
        let v4 = p.tcp().unwrap_or_default();
        let v6 = p.tcp6().unwrap_or_default();
        v4.iter()
            .chain(v6.iter())
            .filter(|e| e.state == procfs::net::TcpState::Established)
            .filter(|e| !is_gateway(e.remote_address.ip(), gateway))
            .count() as u32
    }
}

fn is_gateway(ip: IpAddr, gateway: Ipv4Addr) -> bool {
    match ip {
        IpAddr::V4(a) => a == gateway || a.is_loopback(),
        IpAddr::V6(a) => a.to_ipv4_mapped() == Some(gateway) || a.is_loopback(),
    }
}

/// The terminal a process has open on 0, 1 or 2, with its input and output
/// times (the device's atime and mtime, read through the magic link, so
/// from the host whatever mount namespace the process is in).
/// The terminals process `dir` (a /proc/PID directory) holds on fds 0-2:
/// the fd's path, the device's name under /dev, and its metadata.
fn terminals(dir: &Path) -> impl Iterator<Item = (PathBuf, String, std::fs::Metadata)> + '_ {
    ["0", "1", "2"].into_iter().filter_map(move |fd| {
        let link = dir.join("fd").join(fd);
        let target = std::fs::read_link(&link).ok()?;
        let name = target
            .to_string_lossy()
            .strip_prefix("/dev/")
            .filter(|n| n.starts_with("pts/") || n.starts_with("tty") || *n == "console")?
            .to_string();
        let md = std::fs::metadata(&link).ok()?;
        use std::os::unix::fs::FileTypeExt;
        md.file_type().is_char_device().then_some((link, name, md))
    })
}

fn tty_of(dir: &Path) -> Option<Tty> {
    let (_, name, md) = terminals(dir).next()?;
    let ms = |s: i64, ns: i64| (s.max(0) as u64) * 1000 + (ns.max(0) as u64) / 1_000_000;
    Some(Tty {
        name,
        input_ms: ms(md.atime(), md.atime_nsec()),
        output_ms: ms(md.mtime(), md.mtime_nsec()),
    })
}

/// Writes `message` to every terminal the processes of `cgroup` hold (as
/// `wall` does): what an open SSH or web terminal session shows. Returns
/// how many terminals it reached.
pub fn tell_terminals(proc: &Path, cgroups: &CgroupReader, cgroup: &str, message: &str) -> u32 {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seen = std::collections::BTreeSet::new();
    for pid in cgroups.procs(cgroup) {
        let dir = proc.join(pid.to_string());
        for (link, name, md) in terminals(&dir) {
            if !name.starts_with("pts/") || !seen.insert((md.dev(), md.rdev())) {
                continue;
            }
            // O_NOCTTY: the agent must not acquire the workspace's terminal.
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(&link);
            if let Ok(mut f) = opened {
                let _ = f.write_all(format!("\r\n{message}\r\n").as_bytes());
                // The notice is not the user's output: the terminal's times
                // go back to what they were, or it would keep itself awake.
                let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
                let _ = nix::sys::stat::futimens(
                    &f,
                    &ts(md.atime(), md.atime_nsec()),
                    &ts(md.mtime(), md.mtime_nsec()),
                );
            }
        }
    }
    seen.len() as u32
}
