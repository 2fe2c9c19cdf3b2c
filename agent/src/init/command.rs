//! A lifecycle command in the specification's three forms: a string (run
//! by a shell), an array (run as it is, no shell) and an object whose
//! values (strings or arrays) run in parallel, all of which must succeed.

/// One lifecycle command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
    /// Named commands that run at the same time.
    Parallel(Vec<(String, Command)>),
}

impl Command {
    /// Reads the value of `key`; an empty command (`""`, `[]`, `{}`) is none.
    pub fn parse(key: &str, v: &serde_json::Value) -> Result<Option<Self>, String> {
        Ok(match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) if s.trim().is_empty() => None,
            serde_json::Value::String(s) => Some(Command::Shell(s.clone())),
            serde_json::Value::Array(a) => {
                let argv = argv(a).ok_or("an array command must be strings")?;
                (!argv.is_empty()).then_some(Command::Exec(argv))
            }
            serde_json::Value::Object(o) => {
                let mut parts = Vec::new();
                for (name, v) in o {
                    let part = match v {
                        serde_json::Value::String(s) => Command::Shell(s.clone()),
                        serde_json::Value::Array(a) => {
                            Command::Exec(argv(a).ok_or(format!("{key}.{name}: must be strings"))?)
                        }
                        _ => return Err(format!("{name}: must be a string or an array")),
                    };
                    parts.push((name.clone(), part));
                }
                (!parts.is_empty()).then_some(Command::Parallel(parts))
            }
            _ => return Err("must be a string, an array or an object".into()),
        })
    }

    /// The programs to run, each with its name (the step's own for a single
    /// command): all of them start together.
    pub fn programs(&self, step: &str) -> Vec<(String, Vec<String>)> {
        match self {
            Command::Shell(s) => vec![(step.into(), shell(s))],
            Command::Exec(argv) => vec![(step.into(), argv.clone())],
            Command::Parallel(parts) => parts
                .iter()
                .flat_map(|(name, c)| c.programs(&format!("{step}.{name}")))
                .collect(),
        }
    }

    /// How the command reads in a status.
    pub fn describe(&self) -> String {
        match self {
            Command::Shell(s) => s.clone(),
            Command::Exec(argv) => argv.join(" "),
            Command::Parallel(parts) => parts
                .iter()
                .map(|(n, c)| format!("{n}: {}", c.describe()))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// `sh -c` of a command line.
pub fn shell(line: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), line.into()]
}

fn argv(a: &[serde_json::Value]) -> Option<Vec<String>> {
    a.iter().map(|v| v.as_str().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_forms() {
        let c = Command::parse("k", &json!("npm ci")).unwrap().unwrap();
        assert_eq!(c.programs("s"), [("s".into(), shell("npm ci"))]);
        let c = Command::parse("k", &json!(["npm", "ci"])).unwrap().unwrap();
        assert_eq!(c.programs("s")[0].1, ["npm", "ci"]);
        let c = Command::parse("k", &json!({"a": "x", "b": ["y", "z"]}))
            .unwrap()
            .unwrap();
        let p = c.programs("s");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], ("s.a".into(), shell("x")));
        assert_eq!(p[1], ("s.b".into(), vec!["y".to_string(), "z".into()]));
        assert_eq!(c.describe(), "a: x; b: y z");
        for empty in [json!(""), json!([]), json!({}), json!(null)] {
            assert_eq!(Command::parse("k", &empty), Ok(None));
        }
        for bad in [json!(3), json!([1]), json!({"a": 1}), json!(true)] {
            assert!(Command::parse("k", &bad).is_err(), "{bad}");
        }
    }
}
