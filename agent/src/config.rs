//! The agent's TOML configuration: every setting has a default, unknown keys
//! are rejected, and `validate` turns the file form into typed config.

use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The configuration file as written (see docs/agent-config.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where the agent keeps workspace records, volumes and its socket.
    pub state_dir: PathBuf,
    /// Unix socket of the local control API; defaults to `<state_dir>/agent.sock`.
    pub control_socket: Option<PathBuf>,
    pub containerd: ContainerdConfig,
    pub network: NetworkConfig,
    pub cgroup: CgroupConfig,
    pub security: SecurityConfig,
    pub workspace: WorkspaceDefaults,
    /// Registries with credentials or plain HTTP.
    #[serde(rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    pub coordinator: CoordinatorConfig,
    pub node: NodeConfig,
    pub cache: CacheConfig,
    pub idle: IdleConfig,
    pub preemption: crate::preempt::PreemptionConfig,
    /// `/metrics` (docs/agent.md, "Metrics").
    pub metrics: MetricsConfig,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (e.g. "0.0.0.0:9464"); absent: not served.
    pub listen: Option<std::net::SocketAddr>,
    /// Series per workspace (default true).
    pub per_workspace: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            per_workspace: true,
        }
    }
}

/// How workspaces are sampled for the idle detector (docs/idle.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdleConfig {
    /// Seconds between two samples of every running workspace (1 to 300).
    pub sample_seconds: u64,
    /// CPU use, in percent of one core, that keeps a workspace awake.
    pub cpu_percent: f64,
    /// Tunnel bytes per sample (both ways) that count as use; fewer are
    /// keep-alives.
    pub tunnel_bytes: u64,
    /// Bytes per sample through the workspace's interface, beyond its
    /// tunnels', that count when it has connections of its own.
    pub net_bytes: u64,
    /// Time some task stalled on I/O or memory (PSI, cgroup v2), in percent
    /// of the sampling interval, that counts as work.
    pub stall_percent: f64,
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self {
            sample_seconds: 10,
            cpu_percent: 5.0,
            tunnel_bytes: 4096,
            net_bytes: 64 * 1024,
            stall_percent: 5.0,
        }
    }
}

/// The node's cache of prebuild layers and images.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most bytes prebuild layers and images may take together; the least
    /// recently used ones no workspace uses are removed past it (0: a
    /// quarter of the state directory's file system).
    pub max_bytes: u64,
    /// An image used less than this long ago is not removed (a create may
    /// be between its pull and its record).
    pub image_min_idle_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 0,
            image_min_idle_seconds: 600,
        }
    }
}

/// The link to the coordinator. Without an address the agent runs alone,
/// driven through its control socket only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// HOST:PORT of the coordinator's QUIC link (also `--coordinator`); several,
    /// comma-separated, for coordinators sharing one store: the agent moves to
    /// the next when its link fails.
    pub address: Option<String>,
    /// Longest wait between reconnection attempts, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Cut off from every coordinator this long, the agent stops its
    /// running workspaces and backs each up stopped (`crate::fence`), so
    /// the coordinator can start them on another node with all their data.
    /// 0 (the default): never; a coordinator outage then stops nothing.
    pub stop_after_seconds: u64,
}

/// What this node offers and how it is known.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node id asked for when joining (default: the host name).
    pub id: Option<String>,
    /// Labels workspaces can select nodes by.
    pub labels: std::collections::BTreeMap<String, String>,
    /// CPU offered to workspaces in millicores (0: all of the machine's).
    pub cpu_millis: u64,
    /// Memory offered to workspaces (0: the machine's total).
    pub memory_bytes: u64,
    /// Disk offered to workspace volumes (0: the size of the state directory's file system).
    pub disk_bytes: u64,
    /// Most workspaces on this node (0: 250).
    pub max_workspaces: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            address: None,
            reconnect_max_ms: 10_000,
            stop_after_seconds: 0,
        }
    }
}

/// How to reach containerd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdConfig {
    pub socket: PathBuf,
    /// containerd namespace holding Berth's images and containers.
    pub namespace: String,
    pub snapshotter: String,
    pub runtime: String,
    /// runc's state root; empty means runc's default. Give every containerd
    /// on a machine its own, or workspaces of the same name collide in runc.
    pub runc_root: String,
}

/// The node bridge, subnet and firewall.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub bridge: String,
    /// IPv4 subnet in CIDR form; the first address is the bridge (gateway).
    pub subnet: String,
    /// nftables table name (used in the inet, ip and bridge families).
    pub nft_table: String,
    /// Directory holding the workspaces' network namespace files.
    pub netns_dir: PathBuf,
    /// Host's resolv.conf to give workspaces (read-only bind); its
    /// nameservers are reachable on port 53 even in a private range.
    pub resolv_conf: PathBuf,
    /// Destinations (CIDR, IPv4 or IPv6) workspaces may reach although they
    /// are private (RFC 1918, CGNAT, ULA, loopback, link-local are refused
    /// by default; the metadata range 169.254.0.0/16 is always refused).
    pub egress_allow: Vec<String>,
}

/// Where cgroups live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// cgroupfs mount point.
    pub root: PathBuf,
    /// Parent cgroup of all workspaces.
    pub parent: String,
}

/// Security defaults of workspace containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Seccomp profile in the Docker/containers JSON format.
    pub seccomp_profile: PathBuf,
    /// Node uid/gid of id 0 inside the first workspace's user namespace;
    /// workspace `i` (its address's index in the subnet) maps from
    /// `userns_base + i * userns_size`.
    pub userns_base: u32,
    /// How many ids each workspace's user namespace maps (0 .. size).
    pub userns_size: u32,
    /// Let every workspace on this node create nested user namespaces
    /// (rootless tools inside); a workspace can also ask for it in its spec.
    pub nested_userns: bool,
}

/// Defaults for workspaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspaceDefaults {
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_grace_seconds: u32,
    /// User for images that name none or root.
    pub uid: u32,
    pub gid: u32,
    /// Volume + network namespace pairs kept ready for the most recently
    /// requested size, so a create skips making them (0: never prepare).
    pub prepared: usize,
    /// Longest a repository's clone may take (seconds).
    pub clone_timeout_seconds: u32,
    /// Longest one lifecycle command (onCreateCommand, ...) may take (seconds).
    pub command_timeout_seconds: u32,
}

/// One registry's settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// host[:port] as it appears in image references.
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Use plain HTTP (loopback registries always do).
    pub insecure: bool,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/berth/agent".into(),
            control_socket: None,
            containerd: ContainerdConfig::default(),
            network: NetworkConfig::default(),
            cgroup: CgroupConfig::default(),
            security: SecurityConfig::default(),
            workspace: WorkspaceDefaults::default(),
            registries: Vec::new(),
            coordinator: CoordinatorConfig::default(),
            node: NodeConfig::default(),
            cache: CacheConfig::default(),
            idle: IdleConfig::default(),
            preemption: Default::default(),
            metrics: Default::default(),
        }
    }
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            socket: "/run/containerd/containerd.sock".into(),
            namespace: "berth".into(),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            runc_root: String::new(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "berth0".into(),
            subnet: "10.213.0.0/16".into(),
            nft_table: "berth".into(),
            netns_dir: "/run/berth/netns".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            egress_allow: Vec::new(),
        }
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            root: "/sys/fs/cgroup".into(),
            parent: "berth".into(),
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            seccomp_profile: "/usr/share/containers/seccomp.json".into(),
            userns_base: 1_000_000,
            userns_size: 65536,
            nested_userns: false,
        }
    }
}

impl Default for WorkspaceDefaults {
    fn default() -> Self {
        Self {
            stop_grace_seconds: 10,
            uid: 1000,
            gid: 1000,
            prepared: 2,
            clone_timeout_seconds: 600,
            command_timeout_seconds: 3600,
        }
    }
}

/// A subnet in typed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// The gateway (bridge) address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// The `n`th workspace address (n from 0), or None past the end of the subnet.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        // network, gateway, ..., broadcast
        let offset = u64::from(n) + 2;
        (offset < size - 1).then(|| Ipv4Addr::from(u32::from(self.base) + offset as u32))
    }

    /// The `n` of workspace address `ip` (the inverse of `host`).
    pub fn index(&self, ip: Ipv4Addr) -> Option<u32> {
        let n = u32::from(ip)
            .checked_sub(u32::from(self.base))?
            .checked_sub(2)?;
        (self.host(n) == Some(ip)).then_some(n)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: ConfigFile,
    pub subnet: Subnet,
    pub control_socket: PathBuf,
    /// The workspaces' user-namespace id ranges, one per workspace.
    pub userns: crate::idmap::Ranges,
}

/// A configuration error naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Parses a configuration file's text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    validate(toml::from_str(text)?)
}

/// Reads and parses a configuration file; a missing path means all defaults.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    match path {
        None => validate(ConfigFile::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            parse(&text)
        }
    }
}

/// Checks a parsed file and derives the typed config.
pub fn validate(mut file: ConfigFile) -> Result<Config, ConfigError> {
    let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
    file.preemption = std::mem::take(&mut file.preemption)
        .resolve(&file.state_dir)
        .map_err(|(key, reason)| invalid(key, reason))?;
    let subnet = parse_subnet(&file.network.subnet).map_err(|r| invalid("network.subnet", r))?;
    if file.network.bridge.is_empty() || file.network.bridge.len() > 15 {
        return Err(invalid(
            "network.bridge",
            "must be 1 to 15 characters".into(),
        ));
    }
    if file.network.nft_table.is_empty()
        || !file
            .network
            .nft_table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid("network.nft_table", "must be [A-Za-z0-9_]+".into()));
    }
    for c in &file.network.egress_allow {
        parse_cidr(c).map_err(|r| invalid("network.egress_allow", format!("{c:?}: {r}")))?;
    }
    if file.containerd.namespace.is_empty() {
        return Err(invalid("containerd.namespace", "must not be empty".into()));
    }
    if file.cgroup.parent.is_empty() || file.cgroup.parent.contains("..") {
        return Err(invalid(
            "cgroup.parent",
            "must be a relative cgroup name".into(),
        ));
    }
    if !(1..=300).contains(&file.idle.sample_seconds) {
        return Err(invalid("idle.sample_seconds", "must be 1 to 300".into()));
    }
    if !(file.idle.cpu_percent.is_finite() && file.idle.cpu_percent > 0.0) {
        return Err(invalid("idle.cpu_percent", "must be above 0".into()));
    }
    if !(file.idle.stall_percent.is_finite() && file.idle.stall_percent > 0.0) {
        return Err(invalid("idle.stall_percent", "must be above 0".into()));
    }
    if file.workspace.prepared > 64 {
        return Err(invalid("workspace.prepared", "at most 64".into()));
    }
    for (key, v) in [
        (
            "workspace.clone_timeout_seconds",
            file.workspace.clone_timeout_seconds,
        ),
        (
            "workspace.command_timeout_seconds",
            file.workspace.command_timeout_seconds,
        ),
    ] {
        if !(1..=86_400).contains(&v) {
            return Err(invalid(key, "1 to 86400 seconds".into()));
        }
    }
    if file.workspace.uid == 0 {
        return Err(invalid(
            "workspace.uid",
            "workspaces never run as root".into(),
        ));
    }
    let sec = &file.security;
    if sec.userns_base == 0 {
        return Err(invalid(
            "security.userns_base",
            "must not be 0: root inside would be root on the node".into(),
        ));
    }
    let userns = crate::idmap::Ranges {
        base: sec.userns_base,
        size: sec.userns_size,
    };
    if sec.userns_size <= file.workspace.uid.max(file.workspace.gid) || userns.count() < 64 {
        return Err(invalid(
            "security.userns_size",
            "must cover the workspace user, and 64 ranges of it must fit below 2^32 after userns_base".into(),
        ));
    }
    let control_socket = file
        .control_socket
        .clone()
        .unwrap_or_else(|| file.state_dir.join("agent.sock"));
    Ok(Config {
        file,
        subnet,
        control_socket,
        userns,
    })
}

/// Parses an IPv4 or IPv6 CIDR ("10.1.0.0/16", "fd00::/8").
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = s.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| "not an IP address")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or(format!("prefix must be 0 to {max}"))?;
    Ok((addr, prefix))
}

/// Parses "a.b.c.d/n" with n in 8..=30 and no host bits set.
pub fn parse_subnet(s: &str) -> Result<Subnet, String> {
    let (addr, prefix) = s.split_once('/').ok_or("expected CIDR form a.b.c.d/n")?;
    let base: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("bad prefix {prefix:?}"))?;
    if !(8..=30).contains(&prefix) {
        return Err("prefix must be between 8 and 30".into());
    }
    let mask = u32::MAX << (32 - prefix);
    if u32::from(base) & !mask != 0 {
        return Err("host bits set in the subnet address".into());
    }
    Ok(Subnet { base, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.file.containerd.namespace, "berth");
        assert_eq!(
            c.control_socket,
            PathBuf::from("/var/lib/berth/agent/agent.sock")
        );
        assert_eq!(c.subnet.gateway(), Ipv4Addr::new(10, 213, 0, 1));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse("[network]\nbrige = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("brige"), "{e}");
        let e = parse("statedir = \"/x\"").unwrap_err().to_string();
        assert!(e.contains("statedir"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[network]\nsubnet = \"10.0.0.1/24\"", "network.subnet"),
            ("[network]\nsubnet = \"10.0.0.0/31\"", "network.subnet"),
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"",
                "network.bridge",
            ),
            ("[network]\nnft_table = \"a b\"", "network.nft_table"),
            ("[workspace]\nuid = 0", "workspace.uid"),
            (
                "[security]\nuserns_base = 4294000000",
                "security.userns_size",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn subnet_hosts_stop_before_broadcast() {
        let s = parse_subnet("10.1.2.0/30").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(s.host(0), Some(Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(s.host(1), None);
        assert_eq!(s.index(Ipv4Addr::new(10, 1, 2, 2)), Some(0));
        assert_eq!(s.index(Ipv4Addr::new(10, 1, 2, 1)), None);
        assert_eq!(s.index(Ipv4Addr::new(10, 1, 2, 3)), None);
    }
}
