//! The coordinator's configuration file (TOML, `--config`): for now the
//! resource tiers workspaces are created from, with what each grants beyond
//! the security defaults. Parsed strictly (unknown keys are errors) and
//! validated by a pure function; every error names its key.

use berth_proto::units::parse_size;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A resource tier: a workspace's default resources and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Tier {
    pub name: String,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
    /// Workspaces of this tier may create nested user namespaces (rootless
    /// tools inside); refused by seccomp otherwise.
    pub nested_userns: bool,
    /// Private IPv4 ranges its workspaces may reach beyond the egress
    /// policy (DNS and the internet); cloud metadata never.
    pub egress_allow: Vec<String>,
}

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
        };
        Self(vec![
            t("small", 1000, 2048, 10),
            t("medium", 2000, 4096, 30),
            t("large", 4000, 8192, 60),
        ])
    }
}

impl Tiers {
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

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Replaces the built-in tiers (small, medium, large) when present.
    #[serde(default)]
    pub tiers: Option<Vec<TierFile>>,
}

/// One `[[tiers]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub name: String,
    pub cpu_millis: u32,
    /// A size: "2GiB", "512MiB" or bytes.
    pub memory: String,
    pub disk: String,
    #[serde(default = "default_pids")]
    pub pids: u32,
    #[serde(default)]
    pub nested_userns: bool,
    #[serde(default)]
    pub egress_allow: Vec<String>,
}

fn default_pids() -> u32 {
    4096
}

/// A configuration error naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub tiers: Tiers,
}

/// Reads and validates a configuration file; no path means the defaults.
pub fn load(path: Option<&std::path::Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates a configuration file's text.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    validate(toml::from_str(text)?)
}

/// Checks a parsed file and derives the typed configuration.
pub fn validate(file: ConfigFile) -> Result<FileConfig, ConfigError> {
    let Some(tiers) = file.tiers else {
        return Ok(FileConfig::default());
    };
    if tiers.is_empty() {
        return Err(invalid("tiers", "at least one tier"));
    }
    let mut out: Vec<Tier> = Vec::new();
    for (i, t) in tiers.into_iter().enumerate() {
        let key = |k: &str| format!("tiers[{i}].{k}");
        let bad = |k: &str, reason: String| ConfigError::Invalid {
            key: key(k),
            reason,
        };
        crate::validate::tier_name(&t.name).map_err(|e| bad("name", e))?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(bad("name", format!("{:?} is listed twice", t.name)));
        }
        let memory_bytes = parse_size(&t.memory).map_err(|e| bad("memory", e))?;
        let disk_bytes = parse_size(&t.disk).map_err(|e| bad("disk", e))?;
        let within = |ok: bool, k: &str, range: String| match ok {
            true => Ok(()),
            false => Err(bad(k, format!("must be {range}"))),
        };
        within(
            bounds::CPU_MILLIS.contains(&t.cpu_millis),
            "cpu_millis",
            "10 to 64000".into(),
        )?;
        within(
            bounds::MEMORY_BYTES.contains(&memory_bytes),
            "memory",
            "16MiB to 256GiB".into(),
        )?;
        within(
            bounds::DISK_BYTES.contains(&disk_bytes),
            "disk",
            "16MiB to 1TiB".into(),
        )?;
        within(bounds::PIDS.contains(&t.pids), "pids", "16 to 65536".into())?;
        if t.egress_allow.len() > 64 {
            return Err(bad("egress_allow", "at most 64 ranges".into()));
        }
        for c in &t.egress_allow {
            berth_proto::net::parse_ipv4_cidr(c).map_err(|e| bad("egress_allow", e))?;
        }
        out.push(Tier {
            name: t.name,
            cpu_millis: t.cpu_millis,
            memory_bytes,
            disk_bytes,
            pids: t.pids,
            nested_userns: t.nested_userns,
            egress_allow: t.egress_allow,
        });
    }
    Ok(FileConfig { tiers: Tiers(out) })
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_and_no_tiers_mean_the_built_in_three() {
        assert_eq!(load(None).unwrap().tiers, Tiers::default());
        assert_eq!(parse("").unwrap().tiers, Tiers::default());
        let names: Vec<String> = Tiers::default().all().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["small", "medium", "large"]);
        assert_eq!(Tiers::default().default_name(), "small");
    }

    #[test]
    fn tiers_replace_the_defaults_with_their_policy() {
        let c = parse(
            r#"
[[tiers]]
name = "lab"
cpu_millis = 2000
memory = "4GiB"
disk = "20GiB"
nested_userns = true
egress_allow = ["10.20.0.0/16"]

[[tiers]]
name = "tiny"
cpu_millis = 100
memory = "256MiB"
disk = "1GiB"
"#,
        )
        .unwrap();
        let lab = c.tiers.get("lab").unwrap();
        assert_eq!((lab.memory_bytes, lab.pids), (4 << 30, 4096));
        assert!(lab.nested_userns);
        assert_eq!(lab.egress_allow, ["10.20.0.0/16"]);
        assert!(!c.tiers.get("tiny").unwrap().nested_userns);
        assert!(c.tiers.get("small").is_none());
        assert_eq!(c.tiers.default_name(), "lab");
    }

    #[test]
    fn bad_values_name_their_key() {
        let tier = |extra: &str| {
            format!("[[tiers]]\nname = \"t\"\ncpu_millis = 500\nmemory = \"1GiB\"\ndisk = \"1GiB\"\n{extra}")
        };
        for (text, key) in [
            ("tiers = []".to_string(), "tiers"),
            (
                tier("egress_allow = [\"10.0.0.1/8\"]"),
                "tiers[0].egress_allow",
            ),
            (tier("pids = 1"), "tiers[0].pids"),
            (tier("nested = true"), "nested"),
            (
                tier("").replace("cpu_millis = 500", "cpu_millis = 5"),
                "tiers[0].cpu_millis",
            ),
            (
                tier("").replace("\"1GiB\"\ndisk", "\"lots\"\ndisk"),
                "tiers[0].memory",
            ),
            (
                tier("").replace("name = \"t\"", "name = \"T!\""),
                "tiers[0].name",
            ),
            (format!("{}\n{}", tier(""), tier("")), "tiers[1].name"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
