//! Dev Container Features (the specification's `devcontainer-features.md`):
//! a feature's `devcontainer-feature.json` read into Berth's own types, the
//! environment its `install.sh` runs with, and the order features install
//! in. What would widen the sandbox (`privileged`, `capAdd`, `mounts`,
//! `securityOpt`, an `entrypoint`) is refused, as it is in
//! devcontainer.json. Pure: the agent fetches the artifact and runs the
//! script (`workspace::feature`).

use super::devcontainer::option_env_name;
use std::collections::BTreeMap;

/// The media type of a feature's layer (a tar of its folder).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";

/// What a feature says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub id: String,
    pub version: String,
    /// Option name → its default, as a string (booleans `true`/`false`).
    pub defaults: BTreeMap<String, String>,
    pub container_env: BTreeMap<String, String>,
    /// Feature ids (references without tag) this one installs after when
    /// they are in the same configuration.
    pub installs_after: Vec<String>,
    /// Feature ids this one needs.
    pub depends_on: Vec<String>,
    /// Keys read but not acted on, and why.
    pub warnings: Vec<String>,
}

/// A feature that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("devcontainer-feature.json: {0}")]
    Invalid(String),
    #[error("devcontainer-feature.json: {key} is not allowed: {why}")]
    Refused { key: String, why: String },
}

impl FeatureError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            FeatureError::Invalid(_) => "build_failed",
            FeatureError::Refused { .. } => "devcontainer_refused",
        }
    }
}

/// Keys that would give the workspace more than its tier allows.
const REFUSED: [(&str, &str); 5] = [
    ("privileged", "a workspace is never privileged"),
    (
        "capAdd",
        "capabilities beyond the security defaults are not granted",
    ),
    ("mounts", "host mounts are not offered"),
    ("securityOpt", "security options are fixed by the node"),
    ("entrypoint", "the workspace's init is Berth's own"),
];

/// Keys of the specification that need nothing from Berth.
const SILENT: [&str; 8] = [
    "name",
    "description",
    "documentationURL",
    "licenseURL",
    "keywords",
    "customizations",
    "legacyIds",
    "deprecated",
];

/// Reads a `devcontainer-feature.json`.
pub fn parse(text: &str) -> Result<Metadata, FeatureError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| FeatureError::Invalid(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| FeatureError::Invalid("not an object".into()))?;
    let mut m = Metadata::default();
    let bad = |k: &str, why: &str| FeatureError::Invalid(format!("{k}: {why}"));
    for (key, v) in obj {
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| k == key) {
            let harmless = matches!(v, serde_json::Value::Bool(false) | serde_json::Value::Null)
                || v.as_array().is_some_and(|a| a.is_empty());
            if !harmless {
                return Err(FeatureError::Refused {
                    key: key.clone(),
                    why: (*why).into(),
                });
            }
            continue;
        }
        match key.as_str() {
            "id" => {
                m.id = v
                    .as_str()
                    .ok_or_else(|| bad(key, "must be a string"))?
                    .into()
            }
            "version" => m.version = v.as_str().unwrap_or_default().into(),
            "options" => {
                let opts = v.as_object().ok_or_else(|| bad(key, "must be an object"))?;
                for (name, o) in opts {
                    let default = match &o["default"] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    m.defaults.insert(name.clone(), default);
                }
            }
            "containerEnv" => {
                let env = v.as_object().ok_or_else(|| bad(key, "must be an object"))?;
                for (k, v) in env {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(&format!("containerEnv.{k}"), "must be a string"))?;
                    m.container_env.insert(k.clone(), v.into());
                }
            }
            "installsAfter" => {
                m.installs_after = v
                    .as_array()
                    .ok_or_else(|| bad(key, "must be an array"))?
                    .iter()
                    .filter_map(|s| s.as_str().map(id_of))
                    .collect();
            }
            "dependsOn" => {
                m.depends_on = v
                    .as_object()
                    .ok_or_else(|| bad(key, "must be an object"))?
                    .keys()
                    .map(|k| id_of(k))
                    .collect();
            }
            "init" => {}
            k if SILENT.contains(&k) => {}
            k if k.ends_with("Command") => m.warnings.push(format!(
                "{k} of a feature is not run; put it in devcontainer.json"
            )),
            k => m
                .warnings
                .push(format!("{k} of a feature is not known; ignored")),
        }
    }
    if m.id.is_empty() {
        return Err(FeatureError::Invalid("id is missing".into()));
    }
    Ok(m)
}

/// A feature reference without its tag or digest: what `installsAfter`
/// and `dependsOn` name.
pub fn id_of(reference: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a port.
        Some((name, tag)) if !tag.contains('/') => name.to_string(),
        _ => without_digest.to_string(),
    }
}

/// The environment `install.sh` runs with: every option's default, the
/// configuration's values over them (already as environment names).
pub fn options_env(m: &Metadata, given: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = m
        .defaults
        .iter()
        .map(|(k, v)| (option_env_name(k), v.clone()))
        .collect();
    env.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The order features install in: as given (the configuration sorts them
/// by reference, the specification's tie-break), except that a feature comes
/// after those in the list it names in `installsAfter` or `dependsOn`.
/// `features` are (id, the ids it must follow). A `dependsOn` on a feature
/// that is not listed, or a cycle, is an error naming them.
pub fn order(features: &[(String, Vec<String>, Vec<String>)]) -> Result<Vec<usize>, FeatureError> {
    for (id, _, depends) in features {
        if let Some(missing) = depends
            .iter()
            .find(|d| !features.iter().any(|(f, _, _)| f == *d))
        {
            return Err(FeatureError::Invalid(format!(
                "{id} depends on {missing}: add it to the configuration's features"
            )));
        }
    }
    let mut done: Vec<usize> = Vec::new();
    while done.len() < features.len() {
        let next = (0..features.len()).find(|i| {
            let (_, after, depends) = &features[*i];
            !done.contains(i)
                && after.iter().chain(depends).all(|a| {
                    features
                        .iter()
                        .enumerate()
                        .all(|(j, (f, _, _))| f != a || done.contains(&j) || j == *i)
                })
        });
        match next {
            Some(i) => done.push(i),
            None => {
                let left: Vec<&str> = (0..features.len())
                    .filter(|i| !done.contains(i))
                    .map(|i| features[i].0.as_str())
                    .collect();
                return Err(FeatureError::Invalid(format!(
                    "the features {} wait for each other",
                    left.join(", ")
                )));
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        let m = parse(
            r#"{"id": "hello", "version": "1.2.0", "name": "Hello",
                "options": {"greeting": {"type": "string", "default": "hey"},
                            "loud": {"type": "boolean", "default": false},
                            "max-count": {"type": "string"}},
                "containerEnv": {"HELLO_HOME": "/opt/hello"},
                "installsAfter": ["127.0.0.1:5000/features/base:1"],
                "privileged": false, "capAdd": [],
                "postCreateCommand": "x", "future": 1}"#,
        )
        .unwrap();
        assert_eq!(m.id, "hello");
        assert_eq!(m.defaults["greeting"], "hey");
        assert_eq!(m.defaults["loud"], "false");
        assert_eq!(m.defaults["max-count"], "");
        assert_eq!(m.container_env["HELLO_HOME"], "/opt/hello");
        assert_eq!(m.installs_after, ["127.0.0.1:5000/features/base"]);
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        let given = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        let env = options_env(&m, &given);
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["LOUD"], "false");
        assert_eq!(env["MAX_COUNT"], "");
    }

    #[test]
    fn refusals_and_errors() {
        for (text, code) in [
            (r#"{"id": "x", "privileged": true}"#, "devcontainer_refused"),
            (
                r#"{"id": "x", "capAdd": ["SYS_PTRACE"]}"#,
                "devcontainer_refused",
            ),
            (
                r#"{"id": "x", "mounts": [{"source": "/", "target": "/host"}]}"#,
                "devcontainer_refused",
            ),
            (
                r#"{"id": "x", "entrypoint": "/x.sh"}"#,
                "devcontainer_refused",
            ),
            (r#"{"version": "1"}"#, "build_failed"),
            (r#"{"id": 3}"#, "build_failed"),
            ("not json", "build_failed"),
        ] {
            assert_eq!(parse(text).unwrap_err().code(), code, "{text}");
        }
    }

    #[test]
    fn ids() {
        for (r, id) in [
            (
                "ghcr.io/devcontainers/features/node:1",
                "ghcr.io/devcontainers/features/node",
            ),
            (
                "127.0.0.1:5000/features/hello:1",
                "127.0.0.1:5000/features/hello",
            ),
            (
                "127.0.0.1:5000/features/hello",
                "127.0.0.1:5000/features/hello",
            ),
            ("r.io/f/x@sha256:abc", "r.io/f/x"),
        ] {
            assert_eq!(id_of(r), id, "{r}");
        }
    }

    #[test]
    fn install_order() {
        let f = |id: &str, after: &[&str], deps: &[&str]| {
            (
                id.to_string(),
                after.iter().map(|s| s.to_string()).collect(),
                deps.iter().map(|s| s.to_string()).collect(),
            )
        };
        // As listed when nothing is said.
        assert_eq!(
            order(&[f("a", &[], &[]), f("b", &[], &[])]).unwrap(),
            [0, 1]
        );
        // installsAfter moves a feature behind one that is listed...
        assert_eq!(
            order(&[f("a", &["b"], &[]), f("b", &[], &[])]).unwrap(),
            [1, 0]
        );
        // ...and means nothing for one that is not.
        assert_eq!(
            order(&[f("a", &["z"], &[]), f("b", &[], &[])]).unwrap(),
            [0, 1]
        );
        assert_eq!(
            order(&[f("a", &[], &["c"]), f("b", &[], &[]), f("c", &[], &[])]).unwrap(),
            [1, 2, 0]
        );
        let e = order(&[f("a", &[], &["z"])]).unwrap_err();
        assert!(e.to_string().contains("a depends on z"), "{e}");
        let e = order(&[f("a", &["b"], &[]), f("b", &["a"], &[])]).unwrap_err();
        assert!(e.to_string().contains("a, b"), "{e}");
    }
}
