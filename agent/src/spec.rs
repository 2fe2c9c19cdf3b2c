//! Builds the OCI runtime spec of a workspace container. Pure: every input,
//! including the seccomp profile, comes in as an argument.

use oci_spec::runtime::{
    BoxBuilder as ConsoleSizeBuilder, Capability, Linux, LinuxCapabilities, LinuxCpu,
    LinuxDeviceCgroup, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources,
    LinuxSeccomp, Mount, Process, Root, Spec, User,
};
use std::collections::HashSet;
use std::path::PathBuf;

/// Docker's default capability set without NET_RAW: what root inside a
/// workspace holds, over its own user namespace only.
pub const DEFAULT_CAPS: [&str; 13] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// /proc and /sys paths hidden from workspaces (as Docker does).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths mounted read-only in workspaces.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// CFS period used for every workspace, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// CPU a workspace's init starts with, in millicores: runc's init under a
/// tiny quota takes seconds (1.7 s at 10 millicores); the workspace's own
/// quota is applied once it runs.
pub const START_CPU_FLOOR_MILLIS: u32 = 1000;

/// Everything the spec depends on.
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub hostname: String,
    pub args: Vec<String>,
    /// "KEY=value" entries: image env first, then the workspace's.
    pub env: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    /// The user namespace's id map (container id 0 is `idmap.host_base` on the node).
    pub idmap: crate::idmap::IdMap,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids: u32,
    /// Whether the node accounts swap; only then can "no swap" be written.
    pub swap_accounting: bool,
    /// The volume's directory bound at /workspace.
    pub volume: PathBuf,
    pub netns: PathBuf,
    /// The user namespace (made by the agent; it owns `netns`).
    pub userns: PathBuf,
    /// cgroupfs path, e.g. "/berth/ws-1".
    pub cgroups_path: String,
    pub resolv_conf: Option<PathBuf>,
    /// The workspace's own /etc/hosts (its name and localhost).
    pub hosts: Option<PathBuf>,
    /// The workspace's secret files on the node, bound read-only at
    /// `/run/secrets` (`crate::secrets`).
    pub secrets: Option<PathBuf>,
    /// OCI `linux.seccomp` (see `seccomp::to_oci`).
    pub seccomp: LinuxSeccomp,
}

/// CPU quota in microseconds per `CPU_PERIOD_US` for a share of `millis`/1000 cores.
pub fn cpu_quota_us(millis: u32) -> i64 {
    (u64::from(millis) * CPU_PERIOD_US / 1000) as i64
}

/// cgroup v1 cpu.shares for `millis` (1024 per core, at least 2).
pub fn cpu_shares(millis: u32) -> u64 {
    (u64::from(millis) * 1024 / 1000).max(2)
}

/// Who a process runs as inside the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The workspace's user (the image's non-root user or the node default).
    User,
    /// Root of the workspace's user namespace.
    Root,
}

/// Capabilities by their names ("CAP_CHOWN"); every name in
/// `DEFAULT_CAPS` is one (tested).
fn caps(names: &[&str]) -> HashSet<Capability> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("CAP_").unwrap_or(n).parse().ok())
        .collect()
}

/// The process part of the spec, shared by the container's init and by exec.
/// `tty` is the terminal's (rows, cols), given at creation so the process
/// never sees a 0x0 terminal. Root holds Docker's set (minus NET_RAW) over
/// the workspace's own namespaces; the user holds no capability at all, as
/// Docker gives a non-root `USER`, and no_new_privs keeps it that way.
pub fn process(
    input: &SpecInput,
    args: &[String],
    extra_env: &[String],
    cwd: &str,
    tty: Option<(u32, u32)>,
    who: As,
) -> Process {
    let bounding = caps(&DEFAULT_CAPS);
    let (uid, gid, held) = match who {
        As::Root => (0, 0, bounding.clone()),
        As::User => (input.uid, input.gid, HashSet::new()),
    };
    let mut env = input.env.clone();
    env.extend_from_slice(extra_env);
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(vec![gid]));
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(bounding));
    c.set_effective(Some(held.clone()));
    c.set_permitted(Some(held));
    c.set_inheritable(Some(HashSet::new()));
    c.set_ambient(Some(HashSet::new()));
    // From the default only what is set here: no rlimits, no profiles.
    let mut p = Process::default();
    p.set_rlimits(None);
    p.set_terminal(Some(tty.is_some()));
    p.set_console_size(tty.filter(|&(r, c)| r > 0 && c > 0).map(|(rows, cols)| {
        // The builder has nothing to refuse: both fields are given.
        ConsoleSizeBuilder::default()
            .height(rows)
            .width(cols)
            .build()
            .unwrap_or_default()
    }));
    p.set_user(user);
    p.set_args(Some(args.to_vec()));
    p.set_env(Some(env));
    p.set_cwd(cwd.into());
    p.set_capabilities(Some(c));
    p.set_no_new_privileges(Some(true));
    p
}

/// A mount of `source` at `destination`.
pub fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path.cloned());
    n
}

/// The full OCI runtime spec of a workspace's container.
pub fn build(input: &SpecInput) -> Spec {
    let mut memory = LinuxMemory::default();
    memory.set_limit(Some(input.memory_bytes as i64));
    if input.swap_accounting {
        // swap limit == memory limit means no swap at all
        memory.set_swap(Some(input.memory_bytes as i64));
    }
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        // A sysfs mount needs CAP_SYS_ADMIN over the network namespace's
        // owner (the node's user namespace): bind the node's, read-only.
        mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        mount(
            "/workspace",
            "bind",
            &input.volume,
            &["rbind", "rw", "nosuid", "nodev"],
        ),
    ];
    if let Some(hosts) = &input.hosts {
        mounts.push(mount(
            "/etc/hosts",
            "bind",
            hosts,
            &["rbind", "rw", "nosuid", "nodev", "noexec"],
        ));
    }
    if let Some(secrets) = &input.secrets {
        mounts.push(mount(
            crate::secrets::MOUNT_POINT,
            "bind",
            secrets,
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    if let Some(resolv) = &input.resolv_conf {
        mounts.push(mount(
            "/etc/resolv.conf",
            "bind",
            resolv,
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    let mut deny_devices = LinuxDeviceCgroup::default();
    deny_devices.set_allow(false);
    deny_devices.set_access(Some("rwm".into()));
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(cpu_shares(input.cpu_millis)));
    cpu.set_quota(Some(cpu_quota_us(
        input.cpu_millis.max(START_CPU_FLOOR_MILLIS),
    )));
    cpu.set_period(Some(CPU_PERIOD_US));
    let mut pids = LinuxPids::default();
    pids.set_limit(i64::from(input.pids));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![deny_devices]));
    resources.set_memory(Some(memory));
    resources.set_cpu(Some(cpu));
    resources.set_pids(Some(pids));
    use LinuxNamespaceType as Ns;
    let namespaces = vec![
        namespace(Ns::User, Some(&input.userns)),
        namespace(Ns::Pid, None),
        namespace(Ns::Ipc, None),
        namespace(Ns::Uts, None),
        namespace(Ns::Mount, None),
        namespace(Ns::Cgroup, None),
        namespace(Ns::Network, Some(&input.netns)),
    ];
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut linux = Linux::default();
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(input.cgroups_path.clone().into()));
    linux.set_uid_mappings(Some(input.idmap.oci()));
    linux.set_gid_mappings(Some(input.idmap.oci()));
    linux.set_namespaces(Some(namespaces));
    linux.set_masked_paths(Some(strings(&MASKED_PATHS)));
    linux.set_readonly_paths(Some(strings(&READONLY_PATHS)));
    linux.set_seccomp(Some(input.seccomp.clone()));
    let mut root = Root::default();
    root.set_path("rootfs".into());
    root.set_readonly(Some(false));
    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    spec.set_process(Some(process(
        input,
        &input.args,
        &[],
        "/workspace",
        None,
        As::User,
    )));
    spec.set_root(Some(root));
    spec.set_hostname(Some(input.hostname.clone()));
    spec.set_mounts(Some(mounts));
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The spec as JSON, as containerd gets it.
    fn spec_json(input: &SpecInput) -> Value {
        serde_json::to_value(build(input)).unwrap()
    }

    fn process_json(
        input: &SpecInput,
        args: &[String],
        extra_env: &[String],
        cwd: &str,
        tty: Option<(u32, u32)>,
        who: As,
    ) -> Value {
        serde_json::to_value(process(input, args, extra_env, cwd, tty, who)).unwrap()
    }

    fn input() -> SpecInput {
        SpecInput {
            hostname: "ws-1".into(),
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            uid: 1000,
            gid: 1000,
            idmap: crate::idmap::IdMap {
                host_base: 1_000_000,
                size: 65536,
            },
            cpu_millis: 1500,
            memory_bytes: 256 << 20,
            pids: 100,
            swap_accounting: true,
            volume: "/var/lib/berth/volumes/ws-1".into(),
            netns: "/run/berth/netns/ws-1".into(),
            userns: "/run/berth/netns/ws-1.user".into(),
            cgroups_path: "/berth/ws-1".into(),
            resolv_conf: None,
            hosts: None,
            secrets: None,
            seccomp: serde_json::from_value(json!({"defaultAction": "SCMP_ACT_ERRNO"})).unwrap(),
        }
    }

    #[test]
    fn limits() {
        let s = spec_json(&input());
        let r = &s["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 150_000);
        let mut small = input();
        small.cpu_millis = 10;
        assert_eq!(
            spec_json(&small)["linux"]["resources"]["cpu"]["quota"],
            100_000,
            "init starts with a floor"
        );
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 1536);
        assert_eq!(r["memory"]["limit"], 256 << 20);
        assert_eq!(r["memory"]["swap"], 256 << 20, "no swap");
        assert_eq!(r["pids"]["limit"], 100);
        let mut no_swap_acct = input();
        no_swap_acct.swap_accounting = false;
        assert!(spec_json(&no_swap_acct)["linux"]["resources"]["memory"]
            .get("swap")
            .is_none());
        assert_eq!(cpu_shares(1), 2);
    }

    #[test]
    fn every_default_cap_is_a_capability() {
        assert_eq!(caps(&DEFAULT_CAPS).len(), DEFAULT_CAPS.len());
    }

    #[test]
    fn security_defaults() {
        let s = spec_json(&input());
        let p = &s["process"];
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["cwd"], "/workspace");
        assert_eq!(p["noNewPrivileges"], true);
        for set in ["effective", "permitted", "inheritable", "ambient"] {
            assert_eq!(
                p["capabilities"][set],
                json!([]),
                "the user holds no {set} caps"
            );
        }
        let root = process_json(&input(), &[], &[], "/", None, As::Root);
        assert_eq!(root["user"]["uid"], 0);
        let eff: Vec<&str> = root["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(eff.len(), 13);
        assert!(!eff.contains(&"CAP_NET_RAW"));
        assert!(!eff.contains(&"CAP_SYS_ADMIN"));
        assert_eq!(root["capabilities"]["ambient"], json!([]));
        let l = &s["linux"];
        assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(l["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        assert!(l["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        assert_eq!(
            l["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert!(l.get("devices").is_none(), "no host devices");
        // Every namespace is private; the network and user ones are the
        // workspace's own, made by the agent.
        let ns = l["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .all(|n| n.get("path").is_none() || n["type"] == "network" || n["type"] == "user"));
        assert!(ns.contains(&json!({"type": "network", "path": "/run/berth/netns/ws-1"})));
        assert!(ns.contains(&json!({"type": "pid"})));
        assert!(ns.contains(&json!({"type": "user", "path": "/run/berth/netns/ws-1.user"})));
        assert_eq!(
            l["uidMappings"],
            json!([{"containerID": 0, "hostID": 1_000_000, "size": 65536}])
        );
        assert_eq!(l["gidMappings"], l["uidMappings"]);
    }

    #[test]
    fn workspace_volume_is_mounted_rw_without_devices_or_suid() {
        let s = spec_json(&input());
        let ws = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/workspace")
            .unwrap();
        assert_eq!(ws["source"], "/var/lib/berth/volumes/ws-1");
        assert_eq!(ws["options"], json!(["rbind", "rw", "nosuid", "nodev"]));
    }

    #[test]
    fn exec_process_adds_env_and_tty() {
        let p = process_json(
            &input(),
            &["id".into()],
            &["A=1".into()],
            "/tmp",
            Some((30, 100)),
            As::User,
        );
        assert_eq!(p["env"], json!(["PATH=/bin", "A=1"]));
        assert_eq!(p["terminal"], true);
        assert_eq!(p["consoleSize"], json!({"height": 30, "width": 100}));
        assert!(process_json(&input(), &[], &[], "/", None, As::User)
            .get("consoleSize")
            .is_none());
        assert_eq!(p["cwd"], "/tmp");
    }
}
