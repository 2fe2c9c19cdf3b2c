//! The coordinator's configuration: `Config`, what it runs with (from its
//! flags and its file), and the configuration file (TOML, `--config`): for
//! now the resource tiers workspaces are created from, with what each grants
//! beyond the security defaults. The file is parsed strictly (unknown keys
//! are errors) and validated by a pure function; every error names its key.

use crate::domain::backup::Policy as BackupPolicy;
mod admin;
mod oidc;

use crate::domain::quota::Limits;
use crate::domain::report::CostPolicy;
use crate::domain::tier::{bounds, Tier, Tiers};
use crate::domain::webhook::{PrebuildPolicy, WatchedRepo};
use crate::link::quic::LinkConfig;
use crate::service::Timing;
use admin::{validate_cost, validate_quotas};
pub use admin::{CostFile, QuotasFile};
use berth_proto::units::parse_size;
pub use oidc::{GroupFile, OidcFile};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a coordinator needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite store and the first admin token live.
    pub data_dir: PathBuf,
    /// `sqlite:///...` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub api_listen: SocketAddr,
    /// HTTPS for the API, and where its certificate comes from (None: plain HTTP).
    pub api_tls: Option<crate::http::tls::Source>,
    pub link: LinkConfig,
    pub timing: Timing,
    /// This coordinator's name in placement records.
    pub id: String,
    /// Wildcard domain of previews: `{port}-{workspace}.{domain}`.
    pub preview_domain: Option<String>,
    /// Image of a workspace created without one.
    pub default_image: Option<String>,
    /// The resource tiers (from the configuration file, or the built-in three).
    pub tiers: Tiers,
    /// The key users' secrets are sealed with; default `<data_dir>/secrets.key`.
    pub secrets_key_file: Option<PathBuf>,
    /// Prebuilds kept, and the repositories whose pushes start them.
    pub prebuilds: PrebuildPolicy,
    /// Where workspaces are backed up, and how often.
    pub backups: BackupPolicy,
    /// Prices, and how often usage is sampled.
    pub cost: CostPolicy,
    /// Every user's default limits (an admin sets one user's).
    pub quotas: Limits,
    /// Sign-in with an OpenID Connect provider, when configured.
    pub oidc: Option<crate::domain::oidc::OidcPolicy>,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Replaces the built-in tiers (small, medium, large) when present.
    #[serde(default)]
    pub tiers: Option<Vec<TierFile>>,
    /// Prebuilds: what is kept, which repositories' pushes start one.
    #[serde(default)]
    pub prebuilds: Option<PrebuildsFile>,
    /// Backups: where, how often.
    #[serde(default)]
    pub backups: Option<BackupsFile>,
    /// Prices for the cost reports.
    #[serde(default)]
    pub cost: Option<CostFile>,
    /// Every user's default limits.
    #[serde(default)]
    pub quotas: Option<QuotasFile>,
    /// Sign-in with an OpenID Connect provider.
    #[serde(default)]
    pub oidc: Option<OidcFile>,
}

/// The `[backups]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsFile {
    /// Root of the workspaces' restic repositories: an absolute path (on
    /// each node; default /var/lib/berth/backups) or `s3:URL`.
    pub repository: Option<String>,
    /// Minutes between backups of a running workspace (default 5).
    pub interval_minutes: Option<f64>,
    /// Environment restic gets for the store (AWS_ACCESS_KEY_ID, ...).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Backups running at once (default 4).
    pub parallel: Option<usize>,
    /// The local-path repository is one shared mount on every node (NFS):
    /// a workspace can then move to another node from its backup, as with
    /// S3 (default false).
    pub shared_path: Option<bool>,
    /// A delete waits for the backup of the workspace stopped (default
    /// true; `false`: deletes are immediate and lose what the newest
    /// backup does not hold).
    pub before_delete: Option<bool>,
    /// What a prune keeps (defaults 10, 7, 4), how often one runs per
    /// workspace (default 1440 minutes), and how long a deleted
    /// workspace's backups stay (default 30 days; 0: forever).
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub prune_interval_minutes: Option<f64>,
    pub keep_deleted_days: Option<f64>,
}

/// The `[prebuilds]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuildsFile {
    /// Ready prebuilds kept per repository and branch (default 3).
    pub keep: Option<usize>,
    /// Registry repository the layers are pushed to, e.g.
    /// "registry.internal:5000/berth/prebuilds" (default: none; a
    /// prebuild is then used only on the node that built it).
    pub registry: Option<String>,
    /// Nodes asked to pull a new prebuild ahead of demand (default 2).
    pub pull_ahead: Option<usize>,
    #[serde(default)]
    pub repos: Vec<WatchedRepoFile>,
}

/// One `[[prebuilds.repos]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedRepoFile {
    pub url: String,
    pub branches: Vec<String>,
    /// The webhook's secret (as set in the git host's webhook settings).
    pub webhook_secret: String,
    pub image: Option<String>,
    pub tier: Option<String>,
    /// The user who owns the workspace each pull request of it gets (its
    /// git credential clones); unset: pull-request events are ignored.
    pub pull_request_owner: Option<String>,
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
    /// The idle policy (docs/idle.md), in seconds.
    #[serde(default = "berth_proto::api::tier_defaults::idle_timeout")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "berth_proto::api::tier_defaults::idle_warning")]
    pub idle_warning_seconds: u64,
    #[serde(default)]
    pub max_lifetime_seconds: u64,
    #[serde(default = "berth_proto::api::tier_defaults::max_keepalive")]
    pub max_keepalive_seconds: u64,
    #[serde(default)]
    pub stopped_ttl_seconds: u64,
    #[serde(default)]
    pub max_idle_timeout_seconds: u64,
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
    pub prebuilds: PrebuildPolicy,
    pub backups: BackupPolicy,
    pub cost: CostPolicy,
    pub quotas: Limits,
    pub oidc: Option<crate::domain::oidc::OidcPolicy>,
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
    let tiers = match file.tiers {
        Some(t) => validate_tiers(t)?,
        None => Tiers::default(),
    };
    let prebuilds = match file.prebuilds {
        Some(p) => validate_prebuilds(p, &tiers)?,
        None => PrebuildPolicy::default(),
    };
    let backups = match file.backups {
        Some(b) => validate_backups(b)?,
        None => BackupPolicy::default(),
    };
    let cost = match file.cost {
        Some(c) => validate_cost(c)?,
        None => CostPolicy::default(),
    };
    let quotas = match file.quotas {
        Some(q) => validate_quotas(q)?,
        None => Limits::default(),
    };
    let oidc = file.oidc.map(oidc::validate_oidc).transpose()?;
    Ok(FileConfig {
        tiers,
        prebuilds,
        backups,
        cost,
        quotas,
        oidc,
    })
}

fn validate_backups(b: BackupsFile) -> Result<BackupPolicy, ConfigError> {
    let d = BackupPolicy::default();
    let repository = b.repository.unwrap_or(d.repository);
    crate::domain::backup::check_repository(&repository)
        .map_err(|e| invalid("backups.repository", e))?;
    let minutes = b.interval_minutes.unwrap_or(5.0);
    if !(0.05..=1440.0).contains(&minutes) {
        return Err(invalid("backups.interval_minutes", "must be 0.05 to 1440"));
    }
    if let Some(k) = b
        .env
        .keys()
        .find(|k| !berth_proto::api::STORE_ENV.contains(&k.as_str()))
    {
        return Err(ConfigError::Invalid {
            key: format!("backups.env.{k}"),
            reason: format!("one of {:?}", berth_proto::api::STORE_ENV),
        });
    }
    let parallel = b.parallel.unwrap_or(d.parallel);
    if !(1..=64).contains(&parallel) {
        return Err(invalid("backups.parallel", "must be 1 to 64"));
    }
    let keep_last = b.keep_last.unwrap_or(d.keep_last);
    if !(1..=10_000).contains(&keep_last) {
        return Err(invalid(
            "backups.keep_last",
            "must be 1 to 10000 (the newest is always kept)",
        ));
    }
    let prune_minutes = b.prune_interval_minutes.unwrap_or(1440.0);
    if !(0.05..=525_600.0).contains(&prune_minutes) {
        return Err(invalid(
            "backups.prune_interval_minutes",
            "must be 0.05 to 525600",
        ));
    }
    let keep_days = b.keep_deleted_days.unwrap_or(30.0);
    if !(0.0..=3650.0).contains(&keep_days) {
        return Err(invalid(
            "backups.keep_deleted_days",
            "must be 0 (forever) to 3650",
        ));
    }
    Ok(BackupPolicy {
        repository,
        env: b.env,
        interval_ms: (minutes * 60_000.0) as i64,
        parallel,
        shared_path: b.shared_path.unwrap_or(d.shared_path),
        before_delete: b.before_delete.unwrap_or(d.before_delete),
        keep_last,
        keep_daily: b.keep_daily.unwrap_or(d.keep_daily),
        keep_weekly: b.keep_weekly.unwrap_or(d.keep_weekly),
        prune_every_ms: (prune_minutes * 60_000.0) as i64,
        keep_deleted_ms: (keep_days * 86_400_000.0) as i64,
        ..d
    })
}

fn validate_prebuilds(p: PrebuildsFile, tiers: &Tiers) -> Result<PrebuildPolicy, ConfigError> {
    let keep = p.keep.unwrap_or(PrebuildPolicy::default().keep);
    if !(1..=100).contains(&keep) {
        return Err(invalid("prebuilds.keep", "must be 1 to 100"));
    }
    let registry = match p.registry {
        Some(r) => {
            let parsed = berth_proto::image_ref::Reference::parse(&r)
                .map_err(|e| invalid("prebuilds.registry", &e.reason))?;
            if parsed.digest.is_some()
                || r.contains('@')
                || r.rsplit('/').next().is_some_and(|l| l.contains(':'))
            {
                return Err(invalid(
                    "prebuilds.registry",
                    "a repository (host[:port]/path), without a tag or digest",
                ));
            }
            Some(r)
        }
        None => None,
    };
    let pull_ahead = p.pull_ahead.unwrap_or(PrebuildPolicy::default().pull_ahead);
    if pull_ahead > 100 {
        return Err(invalid("prebuilds.pull_ahead", "must be 0 to 100"));
    }
    let mut repos = Vec::new();
    for (i, r) in p.repos.into_iter().enumerate() {
        let bad = |k: &str, reason: String| ConfigError::Invalid {
            key: format!("prebuilds.repos[{i}].{k}"),
            reason,
        };
        let repo = |branch: Option<&String>| berth_proto::api::Repo {
            url: r.url.clone(),
            branch: branch.cloned(),
            ..Default::default()
        };
        crate::domain::repo::check(&repo(None)).map_err(|e| bad("url", e.to_string()))?;
        if r.branches.is_empty() {
            return Err(bad("branches", "at least one branch".into()));
        }
        for b in &r.branches {
            crate::domain::repo::check(&repo(Some(b)))
                .map_err(|e| bad("branches", e.to_string()))?;
        }
        if r.webhook_secret.len() < 16 {
            return Err(bad("webhook_secret", "at least 16 characters".into()));
        }
        if let Some(img) = &r.image {
            crate::domain::validate::image(img).map_err(|e| bad("image", e.to_string()))?;
        }
        if let Some(t) = &r.tier {
            if tiers.get(t).is_none() {
                return Err(bad("tier", format!("no tier named {t:?}")));
            }
        }
        if let Some(owner) = &r.pull_request_owner {
            crate::domain::validate::user_name(owner)
                .map_err(|e| bad("pull_request_owner", e.to_string()))?;
        }
        repos.push(WatchedRepo {
            url: r.url,
            branches: r.branches,
            secret: r.webhook_secret,
            image: r.image,
            tier: r.tier,
            pull_request_owner: r.pull_request_owner,
        });
    }
    Ok(PrebuildPolicy {
        repos,
        keep,
        registry,
        pull_ahead,
    })
}

fn validate_tiers(tiers: Vec<TierFile>) -> Result<Tiers, ConfigError> {
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
        crate::domain::validate::tier_name(&t.name).map_err(|e| bad("name", e))?;
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
        within(
            t.idle_warning_seconds <= t.idle_timeout_seconds || t.idle_timeout_seconds == 0,
            "idle_warning_seconds",
            "at most idle_timeout_seconds".into(),
        )?;
        for (k, v) in [
            ("idle_timeout_seconds", t.idle_timeout_seconds),
            ("max_lifetime_seconds", t.max_lifetime_seconds),
            ("max_keepalive_seconds", t.max_keepalive_seconds),
            ("stopped_ttl_seconds", t.stopped_ttl_seconds),
            ("max_idle_timeout_seconds", t.max_idle_timeout_seconds),
        ] {
            within(v <= 366 * 86_400, k, "at most a year".into())?;
        }
        out.push(Tier {
            name: t.name,
            cpu_millis: t.cpu_millis,
            memory_bytes,
            disk_bytes,
            pids: t.pids,
            nested_userns: t.nested_userns,
            egress_allow: t.egress_allow,
            idle_timeout_seconds: t.idle_timeout_seconds,
            idle_warning_seconds: t.idle_warning_seconds,
            max_lifetime_seconds: t.max_lifetime_seconds,
            max_keepalive_seconds: t.max_keepalive_seconds,
            stopped_ttl_seconds: t.stopped_ttl_seconds,
            max_idle_timeout_seconds: t.max_idle_timeout_seconds,
        });
    }
    Ok(Tiers::new(out))
}

pub(crate) fn invalid(key: &str, reason: &str) -> ConfigError {
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
    fn the_prebuild_registry_is_a_repository() {
        let c = parse(
            "[prebuilds]\nregistry = \"reg.internal:5000/berth/prebuilds\"\npull_ahead = 0\n",
        )
        .unwrap();
        assert_eq!(
            (c.prebuilds.registry.as_deref(), c.prebuilds.pull_ahead),
            (Some("reg.internal:5000/berth/prebuilds"), 0)
        );
        let none = parse("").unwrap().prebuilds;
        assert_eq!((none.registry, none.pull_ahead), (None, 2));
        for bad in [
            "registry = \"reg.internal:5000/berth/prebuilds:v1\"",
            "registry = \"reg.internal:5000/p@sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
            "registry = \"Not A Reference\"",
            "pull_ahead = 1000",
        ] {
            let e = parse(&format!("[prebuilds]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("prebuilds."), "{bad}: {e}");
        }
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
