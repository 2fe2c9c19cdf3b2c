//! The resource tiers workspaces are created from (the configuration's, or
//! the three built in), and the bounds any workspace's resources keep to.

pub use berth_proto::api::Tier;

/// The tiers of a coordinator, in the order the configuration lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers(Vec<Tier>);

impl Default for Tiers {
    fn default() -> Self {
        let t = |name: &str, cpu: u32, mem_mib: u64, disk_gib: u64| Tier {
            name: name.into(),
            cpu_millis: cpu,
            memory_bytes: mem_mib << 20,
            disk_bytes: disk_gib << 30,
            pids: 4096,
            nested_userns: false,
            egress_allow: Vec::new(),
            idle_timeout_seconds: berth_proto::api::tier_defaults::idle_timeout(),
            idle_warning_seconds: berth_proto::api::tier_defaults::idle_warning(),
            max_lifetime_seconds: 0,
            max_keepalive_seconds: berth_proto::api::tier_defaults::max_keepalive(),
            stopped_ttl_seconds: 0,
            max_idle_timeout_seconds: 0,
        };
        Self(vec![
            t("small", 1000, 2048, 10),
            t("medium", 2000, 4096, 30),
            t("large", 4000, 8192, 60),
        ])
    }
}

impl Tiers {
    /// Tiers in this order (the configuration file's, validated).
    pub fn new(tiers: Vec<Tier>) -> Self {
        Self(tiers)
    }

    /// The tier named `name`.
    pub fn get(&self, name: &str) -> Option<&Tier> {
        self.0.iter().find(|t| t.name == name)
    }

    /// Every tier.
    pub fn all(&self) -> Vec<Tier> {
        self.0.clone()
    }

    /// The tier a create names none of: `small` if there is one, else the first.
    pub fn default_name(&self) -> &str {
        self.get("small")
            .or(self.0.first())
            .map_or("small", |t| t.name.as_str())
    }
}

/// Bounds a workspace's resources must stay within (the API's own).
pub mod bounds {
    pub const CPU_MILLIS: std::ops::RangeInclusive<u32> = 10..=64_000;
    pub const MEMORY_BYTES: std::ops::RangeInclusive<u64> = (16 << 20)..=(256 << 30);
    pub const DISK_BYTES: std::ops::RangeInclusive<u64> = (16 << 20)..=(1 << 40);
    pub const PIDS: std::ops::RangeInclusive<u32> = 16..=65_536;
}
