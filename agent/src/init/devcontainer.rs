//! `devcontainer.json`: the part of the Development Container
//! specification Berth honours, read from JSON with comments (jsonc-parser)
//! into its own types. What would run on the node or widen the sandbox is
//! refused with the key named; keys Berth does not know are ignored with a
//! warning, as the devcontainers CLI does. Pure: no file system, no clock.

use super::command::Command;
use std::collections::BTreeMap;

/// Where a repository keeps its configuration, in order of preference.
pub const PATHS: [&str; 2] = [".devcontainer/devcontainer.json", ".devcontainer.json"];

/// A parsed `devcontainer.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevContainer {
    pub image: Option<String>,
    pub build: Option<Build>,
    /// Feature references with their options, sorted by reference (the
    /// specification's tie-break; `init::feature::order` moves one behind those it names
    /// in `installsAfter` / `dependsOn`).
    pub features: Vec<Feature>,
    pub container_env: BTreeMap<String, String>,
    pub remote_env: BTreeMap<String, String>,
    pub remote_user: Option<String>,
    pub container_user: Option<String>,
    pub workspace_folder: Option<String>,
    pub forward_ports: Vec<u16>,
    /// Port → label (`portsAttributes.<port>.label`).
    pub port_labels: BTreeMap<u16, String>,
    pub host_requirements: HostRequirements,
    pub on_create: Option<Command>,
    pub update_content: Option<Command>,
    pub post_create: Option<Command>,
    pub post_start: Option<Command>,
    /// The step after which the workspace counts as running.
    pub wait_for: Step,
    /// Keys ignored, and why.
    pub warnings: Vec<String>,
}

/// `build`: a Dockerfile in the repository.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Build {
    /// The Dockerfile, relative to the configuration file's directory.
    pub dockerfile: String,
    /// The build context, relative to the configuration file's directory.
    pub context: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

/// A feature: its OCI reference and its options (as the environment its
/// `install.sh` sees: upper-case names).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub reference: String,
    pub options: BTreeMap<String, String>,
}

/// `hostRequirements`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostRequirements {
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
}

/// The lifecycle steps, in the order they run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    OnCreate,
    #[default]
    UpdateContent,
    PostCreate,
    PostStart,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::OnCreate,
        Step::UpdateContent,
        Step::PostCreate,
        Step::PostStart,
    ];

    /// The key's name in devcontainer.json.
    pub fn key(self) -> &'static str {
        match self {
            Step::OnCreate => "onCreateCommand",
            Step::UpdateContent => "updateContentCommand",
            Step::PostCreate => "postCreateCommand",
            Step::PostStart => "postStartCommand",
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }
}

impl DevContainer {
    /// The command of a step, if the file has one.
    pub fn command(&self, step: Step) -> Option<&Command> {
        match step {
            Step::OnCreate => self.on_create.as_ref(),
            Step::UpdateContent => self.update_content.as_ref(),
            Step::PostCreate => self.post_create.as_ref(),
            Step::PostStart => self.post_start.as_ref(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON with comments (the message names the line and column).
    #[error("devcontainer.json: {0}")]
    Syntax(String),
    /// A value of the wrong form.
    #[error("devcontainer.json: {key}: {why}")]
    Invalid { key: String, why: String },
    /// A key Berth will not honour: it would run on the node or widen the sandbox.
    #[error("devcontainer.json: {key} is not allowed: {why}")]
    Refused { key: String, why: String },
}

impl ConfigError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Syntax(_) | ConfigError::Invalid { .. } => "devcontainer_invalid",
            ConfigError::Refused { .. } => "devcontainer_refused",
        }
    }
}

/// Keys of the specification that do not apply to a Berth workspace and
/// are ignored without a warning.
const SILENT: [&str; 6] = [
    "$schema",
    "name",
    "customizations",
    "shutdownAction",
    "overrideCommand",
    "updateRemoteUserUID",
];

/// Capabilities a workspace's root has anyway (Docker's defaults): a
/// `capAdd` naming only these asks for nothing more.
const DEFAULT_CAPS: [&str; 13] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        why: why.into(),
    }
}

fn refused(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Refused {
        key: key.into(),
        why: why.into(),
    }
}

fn string(key: &str, v: &serde_json::Value) -> Result<String, ConfigError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(key, "must be a string"))
}

/// A map of strings (numbers and booleans are written as JSON writes them).
fn strings(key: &str, v: &serde_json::Value) -> Result<BTreeMap<String, String>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(key, "must be an object of strings"))?;
    obj.iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(invalid(&format!("{key}.{k}"), "must be a string")),
            };
            Ok((k.clone(), s))
        })
        .collect()
}

/// A size as the specification writes it: `8gb`, `512mb`, `32GB`, bytes.
pub fn size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// The environment name of a feature option: upper case, anything but
/// letters, digits and `_` replaced by `_` (as the specification does).
pub fn option_env_name(option: &str) -> String {
    let s: String = option
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '_' {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect();
    match s.starts_with(|c: char| c.is_ascii_digit()) {
        true => format!("_{s}"),
        false => s,
    }
}

fn port(key: &str, v: &serde_json::Value) -> Result<Option<u16>, ConfigError> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            // "service:port" names another container of a compose setup.
            Err(_) => return Ok(None),
        },
        _ => None,
    };
    match n.and_then(|n| u16::try_from(n).ok()).filter(|p| *p != 0) {
        Some(p) => Ok(Some(p)),
        None => Err(invalid(key, format!("{v} is not a port (1 to 65535)"))),
    }
}

/// Parses a devcontainer.json.
pub fn parse(text: &str) -> Result<DevContainer, ConfigError> {
    // JSON with comments and trailing commas, as VS Code reads it; none of
    // the parser's other leniencies (a missing comma is an error).
    let options = jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
    };
    let value: Option<serde_json::Value> = jsonc_parser::parse_to_serde_value(text, &options)
        .map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let Some(serde_json::Value::Object(obj)) = value else {
        return Err(ConfigError::Syntax("the file is not a JSON object".into()));
    };
    let mut d = DevContainer::default();
    for (key, v) in &obj {
        let k = key.as_str();
        match k {
            "image" => d.image = Some(string(k, v)?),
            "build" => d.build = Some(build(v)?),
            "dockerFile" => {
                // The older spelling of build.dockerfile.
                let b = d.build.get_or_insert_with(Build::default);
                b.dockerfile = string(k, v)?;
            }
            "context" => {
                let b = d.build.get_or_insert_with(Build::default);
                b.context = string(k, v)?;
            }
            "features" => d.features = features(v)?,
            "containerEnv" => d.container_env = strings(k, v)?,
            "remoteEnv" => d.remote_env = strings(k, v)?,
            "remoteUser" => d.remote_user = Some(string(k, v)?),
            "containerUser" => d.container_user = Some(string(k, v)?),
            "workspaceFolder" => {
                let f = string(k, v)?;
                if !f.starts_with('/') {
                    return Err(invalid(k, "must be an absolute path"));
                }
                d.workspace_folder = Some(f);
            }
            "forwardPorts" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| invalid(k, "must be a list of ports"))?;
                for p in list {
                    match port(k, p)? {
                        Some(p) => d.forward_ports.push(p),
                        None => d.warnings.push(format!(
                            "forwardPorts: {p} names another container; ignored"
                        )),
                    }
                }
            }
            "portsAttributes" => {
                let attrs = v
                    .as_object()
                    .ok_or_else(|| invalid(k, "must be an object"))?;
                for (p, a) in attrs {
                    let Ok(port) = p.parse::<u16>() else {
                        d.warnings
                            .push(format!("portsAttributes: {p:?} is not one port; ignored"));
                        continue;
                    };
                    if let Some(label) = a.get("label") {
                        d.port_labels
                            .insert(port, string(&format!("{k}.{p}.label"), label)?);
                    }
                }
            }
            "hostRequirements" => d.host_requirements = host_requirements(v)?,
            "waitFor" => {
                let s = string(k, v)?;
                d.wait_for = Step::parse(&s).ok_or_else(|| {
                    invalid(k, format!("{s:?} is not one of the lifecycle commands"))
                })?;
            }
            "initializeCommand" => {
                return Err(refused(
                    k,
                    "it would run on the node, outside the workspace",
                ))
            }
            "mounts" if v.as_array().is_some_and(|m| !m.is_empty()) => {
                return Err(refused(k, "host mounts would expose the node"))
            }
            "privileged" if v.as_bool() == Some(true) => {
                return Err(refused(k, "a privileged container is root on the node"))
            }
            "capAdd" => {
                let caps = v
                    .as_array()
                    .ok_or_else(|| invalid(k, "must be a list of capabilities"))?;
                for c in caps {
                    let name = string(k, c)?.to_ascii_uppercase();
                    let name = name.trim_start_matches("CAP_");
                    if !DEFAULT_CAPS.contains(&name) {
                        return Err(refused(
                            k,
                            format!("{name} is beyond the workspace's security defaults"),
                        ));
                    }
                }
            }
            "runArgs" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                return Err(refused(
                    k,
                    "container runtime arguments are not Berth's to pass",
                ))
            }
            "securityOpt" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                return Err(refused(k, "security options are set by the node"))
            }
            "dockerComposeFile" => {
                return Err(refused(
                    k,
                    "Docker Compose configurations are not supported",
                ))
            }
            "mounts" | "privileged" | "runArgs" | "securityOpt" => {}
            _ if Step::parse(k).is_some() => {
                let cmd = Command::parse(k, v).map_err(|why| invalid(k, why))?;
                match Step::parse(k) {
                    Some(Step::OnCreate) => d.on_create = cmd,
                    Some(Step::UpdateContent) => d.update_content = cmd,
                    Some(Step::PostCreate) => d.post_create = cmd,
                    Some(Step::PostStart) => d.post_start = cmd,
                    None => {}
                }
            }
            _ if SILENT.contains(&k) => {}
            _ => d
                .warnings
                .push(format!("{k} is not supported by Berth; ignored")),
        }
    }
    if d.image.is_some() && d.build.is_some() {
        return Err(invalid("image", "give either image or build, not both"));
    }
    if let Some(b) = &d.build {
        if b.dockerfile.is_empty() {
            return Err(invalid("build.dockerfile", "missing"));
        }
    }
    Ok(d)
}

fn build(v: &serde_json::Value) -> Result<Build, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("build", "must be an object"))?;
    let mut b = Build {
        context: ".".into(),
        ..Default::default()
    };
    for (key, v) in obj {
        let k = format!("build.{key}");
        match key.as_str() {
            "dockerfile" | "dockerFile" => b.dockerfile = string(&k, v)?,
            "context" => b.context = string(&k, v)?,
            "args" => b.args = strings(&k, v)?,
            "target" => b.target = Some(string(&k, v)?),
            "cacheFrom" | "options" => return Err(refused(&k, "build options are not supported")),
            _ => return Err(invalid(&k, "unknown build key")),
        }
    }
    Ok(b)
}

fn features(v: &serde_json::Value) -> Result<Vec<Feature>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("features", "must be an object"))?;
    obj.iter()
        .map(|(reference, opts)| {
            let k = format!("features.{reference}");
            let options = match opts {
                serde_json::Value::Object(_) => strings(&k, opts)?,
                // A bare value is the `version` option.
                serde_json::Value::String(s) => BTreeMap::from([("version".into(), s.clone())]),
                serde_json::Value::Bool(true) => BTreeMap::new(),
                _ => return Err(invalid(&k, "options must be an object")),
            };
            Ok(Feature {
                reference: reference.clone(),
                options: options
                    .into_iter()
                    .map(|(k, v)| (option_env_name(&k), v))
                    .collect(),
            })
        })
        .collect()
}

fn host_requirements(v: &serde_json::Value) -> Result<HostRequirements, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("hostRequirements", "must be an object"))?;
    let mut h = HostRequirements::default();
    for (key, v) in obj {
        let k = format!("hostRequirements.{key}");
        let bytes = || {
            v.as_str()
                .and_then(size)
                .ok_or_else(|| invalid(&k, format!("{v} is not a size such as \"8gb\"")))
        };
        match key.as_str() {
            "cpus" => {
                h.cpus = Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| invalid(&k, "must be a whole number"))?,
                )
            }
            "memory" => h.memory_bytes = Some(bytes()?),
            "storage" => h.storage_bytes = Some(bytes()?),
            "gpu" => {
                if v.as_bool() == Some(true) || v.is_object() {
                    return Err(refused(&k, "no node offers GPUs"));
                }
            }
            _ => return Err(invalid(&k, "unknown requirement")),
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"// A Node project.
    {
      "name": "api",
      "image": "127.0.0.1:5000/dev:latest", /* the team's image */
      "features": {
        "127.0.0.1:5000/features/hello:1": { "greeting": "hi", "max-count": 3 },
        "127.0.0.1:5000/features/bare:1": "2.0"
      },
      "containerEnv": { "MODE": "dev" },
      "remoteEnv": { "PATH": "${containerEnv:PATH}:/workspace/bin" },
      "remoteUser": "dev",
      "workspaceFolder": "/workspace/api",
      "forwardPorts": [3000, "db:5432"],
      "portsAttributes": { "3000": { "label": "App" }, "9000-9100": { "label": "x" } },
      "hostRequirements": { "cpus": 1, "memory": "1gb", "storage": "512mb" },
      "onCreateCommand": "echo create",
      "updateContentCommand": ["npm", "ci"],
      "postCreateCommand": { "a": "echo a", "b": ["echo", "b"] },
      "postStartCommand": "echo start",
      "waitFor": "postCreateCommand",
      "customizations": { "vscode": {} },
      "otherThing": 1,
    }"#;

    #[test]
    fn every_honoured_field_is_read() {
        let d = parse(FULL).unwrap();
        assert_eq!(d.image.as_deref(), Some("127.0.0.1:5000/dev:latest"));
        assert_eq!(d.features.len(), 2);
        assert_eq!(d.features[0].reference, "127.0.0.1:5000/features/bare:1");
        assert_eq!(d.features[0].options["VERSION"], "2.0");
        assert_eq!(d.features[1].options["GREETING"], "hi");
        assert_eq!(d.features[1].options["MAX_COUNT"], "3");
        assert_eq!(d.container_env["MODE"], "dev");
        assert_eq!(d.remote_user.as_deref(), Some("dev"));
        assert_eq!(d.workspace_folder.as_deref(), Some("/workspace/api"));
        assert_eq!(d.forward_ports, [3000]);
        assert_eq!(d.port_labels[&3000], "App");
        assert_eq!(
            d.host_requirements,
            HostRequirements {
                cpus: Some(1),
                memory_bytes: Some(1 << 30),
                storage_bytes: Some(512 << 20)
            }
        );
        assert_eq!(d.on_create, Some(Command::Shell("echo create".into())));
        assert_eq!(
            d.update_content,
            Some(Command::Exec(vec!["npm".into(), "ci".into()]))
        );
        assert!(matches!(d.post_create, Some(Command::Parallel(ref p)) if p.len() == 2));
        assert_eq!(d.wait_for, Step::PostCreate);
        // Unknown keys and unusable entries are warnings, not errors.
        assert!(
            d.warnings.iter().any(|w| w.starts_with("otherThing")),
            "{:?}",
            d.warnings
        );
        assert!(d.warnings.iter().any(|w| w.contains("db:5432")));
        assert!(d.warnings.iter().any(|w| w.contains("9000-9100")));
        assert!(!d.warnings.iter().any(|w| w.contains("customizations")));
    }

    #[test]
    fn refusals_name_their_key() {
        for (text, key, code) in [
            (
                r#"{"initializeCommand": "rm -rf /"}"#,
                "initializeCommand",
                "devcontainer_refused",
            ),
            (
                r#"{"mounts": ["source=/,target=/host,type=bind"]}"#,
                "mounts",
                "devcontainer_refused",
            ),
            (
                r#"{"privileged": true}"#,
                "privileged",
                "devcontainer_refused",
            ),
            (
                r#"{"capAdd": ["SYS_ADMIN"]}"#,
                "capAdd",
                "devcontainer_refused",
            ),
            (
                r#"{"runArgs": ["--network=host"]}"#,
                "runArgs",
                "devcontainer_refused",
            ),
            (
                r#"{"dockerComposeFile": "x.yml"}"#,
                "dockerComposeFile",
                "devcontainer_refused",
            ),
            (
                r#"{"hostRequirements": {"gpu": true}}"#,
                "hostRequirements.gpu",
                "devcontainer_refused",
            ),
            (r#"{"waitFor": "never"}"#, "waitFor", "devcontainer_invalid"),
            (
                r#"{"forwardPorts": [70000]}"#,
                "forwardPorts",
                "devcontainer_invalid",
            ),
            (
                r#"{"image": "a", "build": {"dockerfile": "D"}}"#,
                "image",
                "devcontainer_invalid",
            ),
            (
                r#"{"workspaceFolder": "rel"}"#,
                "workspaceFolder",
                "devcontainer_invalid",
            ),
            (
                r#"{"postStartCommand": 3}"#,
                "postStartCommand",
                "devcontainer_invalid",
            ),
            (
                r#"{"hostRequirements": {"memory": "lots"}}"#,
                "hostRequirements.memory",
                "devcontainer_invalid",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code(), code, "{text}: {e}");
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        // What asks for nothing beyond the defaults is accepted.
        let d = parse(r#"{"capAdd": ["CAP_CHOWN", "kill"], "privileged": false, "mounts": []}"#);
        assert!(d.is_ok(), "{d:?}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = parse("{\n  \"image\": \"a\",\n  \"b\" 1\n}").unwrap_err();
        assert_eq!(e.code(), "devcontainer_invalid");
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("column"), "{e}");
        assert!(parse("[1]").is_err());
        let e = parse("{\n  \"image\": \"x\"\n  \"oops\": 1\n}").unwrap_err();
        assert!(e.to_string().contains("line 2"), "a missing comma: {e}");
        assert!(parse("{'image': 'x'}").is_err());
        // Comments and trailing commas are JSONC.
        assert!(parse("{\n // c\n \"image\": \"r/x:1\", /* c */\n}").is_ok());
    }

    #[test]
    fn builds_default_their_context() {
        let d =
            parse(r#"{"build": {"dockerfile": "Dockerfile", "args": {"V": 1}, "target": "dev"}}"#)
                .unwrap();
        let b = d.build.unwrap();
        assert_eq!(
            (
                b.dockerfile.as_str(),
                b.context.as_str(),
                b.args["V"].as_str()
            ),
            ("Dockerfile", ".", "1")
        );
        assert_eq!(b.target.as_deref(), Some("dev"));
    }

    #[test]
    fn sizes_and_option_names() {
        assert_eq!(size("8gb"), Some(8 << 30));
        assert_eq!(size("512MB"), Some(512 << 20));
        assert_eq!(size("1.5gb"), Some(3 << 29));
        assert_eq!(size("100"), Some(100));
        assert_eq!(size("x"), None);
        assert_eq!(option_env_name("max-count"), "MAX_COUNT");
        assert_eq!(option_env_name("9lives"), "_9LIVES");
    }
}
