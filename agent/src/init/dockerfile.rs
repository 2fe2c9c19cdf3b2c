//! Dockerfiles, read for Berth's run-and-commit builder: the instructions
//! it supports (`FROM`, `ARG`, `ENV`, `WORKDIR`, `USER`, `COPY`, `ADD` from
//! the context, `LABEL`, `EXPOSE`, `SHELL`, `RUN`) with `\` continuations,
//! comments and variable substitution; anything else is refused with its
//! line. Pure.

use std::collections::BTreeMap;

/// A refusal or a mistake, at a line of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

impl DockerfileError {
    pub fn code(&self) -> &'static str {
        "dockerfile_invalid"
    }
}

fn err(line: usize, message: impl Into<String>) -> DockerfileError {
    DockerfileError {
        line,
        message: message.into(),
    }
}

/// A `RUN`'s command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Run by the stage's `SHELL` (default `/bin/sh -c`).
    Shell(String),
    Exec(Vec<String>),
}

/// One instruction, with its arguments substituted where Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
    /// `COPY` or `ADD` of context files (`ADD` of a URL or an archive is refused).
    Copy {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
    },
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Shell(Vec<String>),
    Run(Run),
    /// An `ARG` inside a stage: its value from the build args or its default.
    Arg(String, Option<String>),
}

/// A stage: its base and its steps, each with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub base: String,
    pub name: Option<String>,
    pub steps: Vec<(usize, Step)>,
}

/// The logical lines of a Dockerfile (continuations joined, comments and
/// blank lines dropped), each with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let entry = current.get_or_insert_with(|| (n, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// Substitutes `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alt}`
/// from `vars`; `\$` is a literal `$`. Unknown names are empty.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let Some(end) = chars[i..].iter().position(|c| *c == '}') else {
                out.extend(&chars[i..]);
                break;
            };
            let inner: String = chars[i + 2..i + end].iter().collect();
            let value = match inner.split_once(":-") {
                Some((name, default)) => vars
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .unwrap_or_else(|| default.into()),
                None => match inner.split_once(":+") {
                    Some((name, alt)) => match vars.get(name).is_some_and(|v| !v.is_empty()) {
                        true => alt.into(),
                        false => String::new(),
                    },
                    None => vars.get(&inner).cloned().unwrap_or_default(),
                },
            };
            out.push_str(&value);
            i += end + 1;
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            out.push_str(vars.get(&name).map_or("", String::as_str));
            i += 1 + name.chars().count();
        }
    }
    out
}

/// Splits words on white space, honouring double and single quotes.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') if chars.peek().is_some_and(|n| *n == '"' || *n == '\\') => {
                cur.extend(chars.next());
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `KEY=VALUE ...` pairs, or the old `KEY VALUE` form.
fn pairs(line: usize, what: &str, args: &str) -> Result<Vec<(String, String)>, DockerfileError> {
    let w = words(args);
    if w.is_empty() {
        return Err(err(line, format!("{what} needs KEY=VALUE")));
    }
    if !w[0].contains('=') {
        let (k, v) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(line, format!("{what} needs KEY=VALUE")))?;
        return Ok(vec![(k.into(), words(v.trim()).join(" "))]);
    }
    w.into_iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| err(line, format!("{what}: {p:?} is not KEY=VALUE")))
        })
        .collect()
}

/// A JSON array of strings (the exec form), if `args` is one.
fn json_array(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// Parses a Dockerfile into its stages, substituting `ARG`s given in
/// `args` (the build's) or by default. A `--target` picks the stage the
/// build ends at; without one the last stage is the result.
pub fn parse(text: &str, args: &BTreeMap<String, String>) -> Result<Vec<Stage>, DockerfileError> {
    let mut stages: Vec<Stage> = Vec::new();
    // ARGs before the first FROM may only be used in FROM lines.
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    // Variables in scope in the current stage (ARG and ENV).
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (line, text) in logical_lines(text) {
        let (instr, rest) = text
            .split_once(char::is_whitespace)
            .map_or((text.as_str(), ""), |(a, b)| (a, b.trim()));
        let instr = instr.to_ascii_uppercase();
        if instr != "FROM" && instr != "ARG" && stages.is_empty() {
            return Err(err(line, format!("{instr} before the first FROM")));
        }
        let sub = |s: &str, vars: &BTreeMap<String, String>| substitute(s, vars);
        let step = match instr.as_str() {
            "FROM" => {
                let w = words(rest);
                let w: Vec<&str> = w.iter().map(String::as_str).collect();
                if w.iter().any(|a| a.starts_with("--")) {
                    return Err(err(line, "FROM options (such as --platform) are not supported"));
                }
                let (base, name) = match w.as_slice() {
                    [base] => (*base, None),
                    [base, as_, name] if as_.eq_ignore_ascii_case("as") => (*base, Some(*name)),
                    _ => return Err(err(line, "FROM takes an image and an optional AS name")),
                };
                let base = sub(base, &global);
                if base.is_empty() {
                    return Err(err(line, "FROM names no image"));
                }
                let base = match stages.iter().find(|s| s.name.as_deref() == Some(base.as_str())) {
                    // FROM an earlier stage: continue from where it ended.
                    Some(_) => format!("stage:{base}"),
                    None => base,
                };
                stages.push(Stage {
                    base,
                    name: name.map(str::to_ascii_lowercase),
                    steps: Vec::new(),
                });
                vars = BTreeMap::new();
                continue;
            }
            "ARG" => {
                let (name, default) = match rest.split_once('=') {
                    Some((n, d)) => (n.trim(), Some(words(d).join(" "))),
                    None => (rest.trim(), None),
                };
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(err(line, "ARG takes one NAME[=default]"));
                }
                let value = args.get(name).cloned().or(default.clone());
                if stages.is_empty() {
                    global.insert(name.into(), value.unwrap_or_default());
                    continue;
                }
                // Inside a stage an ARG without a value takes the global one.
                let value = value.or_else(|| global.get(name).cloned());
                if let Some(v) = &value {
                    vars.insert(name.into(), v.clone());
                }
                Step::Arg(name.into(), value)
            }
            "ENV" => {
                let p: Vec<(String, String)> = pairs(line, "ENV", rest)?
                    .into_iter()
                    .map(|(k, v)| (k, sub(&v, &vars)))
                    .collect();
                for (k, v) in &p {
                    vars.insert(k.clone(), v.clone());
                }
                Step::Env(p)
            }
            "LABEL" => Step::Label(
                pairs(line, "LABEL", rest)?
                    .into_iter()
                    .map(|(k, v)| (k, sub(&v, &vars)))
                    .collect(),
            ),
            "WORKDIR" => {
                let d = sub(rest, &vars);
                if d.is_empty() {
                    return Err(err(line, "WORKDIR needs a path"));
                }
                Step::Workdir(d)
            }
            "USER" => {
                let u = sub(rest, &vars);
                if u.is_empty() || u.contains(char::is_whitespace) {
                    return Err(err(line, "USER takes one user[:group]"));
                }
                Step::User(u)
            }
            "EXPOSE" => Step::Expose(words(&sub(rest, &vars))),
            "SHELL" => Step::Shell(
                json_array(rest)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| err(line, "SHELL takes a JSON array"))?,
            ),
            "RUN" => {
                if rest.trim_start().starts_with("--") {
                    return Err(err(line, "RUN options (--mount, --network …) are not supported"));
                }
                if rest.contains("<<") && rest.split("<<").nth(1).is_some_and(|h| {
                    h.trim_start().starts_with(|c: char| c.is_ascii_uppercase() || c == '-' || c == '"' || c == '\'')
                }) {
                    return Err(err(line, "heredocs are not supported"));
                }
                match json_array(rest) {
                    Some(argv) if argv.is_empty() => return Err(err(line, "RUN [] runs nothing")),
                    Some(argv) => Step::Run(Run::Exec(argv)),
                    None if rest.trim().is_empty() => return Err(err(line, "RUN needs a command")),
                    None => Step::Run(Run::Shell(rest.to_string())),
                }
            }
            "COPY" | "ADD" => copy(line, &instr, rest, &vars)?,
            other => {
                return Err(err(
                    line,
                    format!("{other} is not supported (FROM, ARG, ENV, WORKDIR, USER, COPY, ADD, LABEL, EXPOSE, SHELL and RUN are)"),
                ))
            }
        };
        if let Some(stage) = stages.last_mut() {
            stage.steps.push((line, step));
        }
    }
    if stages.is_empty() {
        return Err(err(1, "no FROM"));
    }
    Ok(stages)
}

fn copy(
    line: usize,
    instr: &str,
    rest: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Step, DockerfileError> {
    let mut w: Vec<String> = match json_array(rest) {
        Some(a) => a,
        None => words(rest),
    };
    let mut chown = None;
    while w.first().is_some_and(|a| a.starts_with("--")) {
        let opt = w.remove(0);
        match opt.split_once('=') {
            Some(("--chown", v)) => chown = Some(substitute(v, vars)),
            Some(("--from", _)) => {
                return Err(err(line, format!("{instr} --from is not supported")))
            }
            _ => return Err(err(line, format!("{instr} option {opt} is not supported"))),
        }
    }
    if w.len() < 2 {
        return Err(err(
            line,
            format!("{instr} needs a source and a destination"),
        ));
    }
    let dest = substitute(&w.pop().unwrap_or_default(), vars);
    let sources: Vec<String> = w.iter().map(|s| substitute(s, vars)).collect();
    for s in &sources {
        if instr == "ADD" && (s.contains("://") || s.starts_with("git@")) {
            return Err(err(line, format!("ADD of a URL ({s}) is not supported")));
        }
        if instr == "ADD"
            && [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2"]
                .iter()
                .any(|x| s.ends_with(x))
        {
            return Err(err(
                line,
                format!("ADD of an archive ({s}) is not supported"),
            ));
        }
        if s.split('/').any(|p| p == "..") {
            return Err(err(line, format!("{s} leaves the build context")));
        }
    }
    if sources.len() > 1 && !dest.ends_with('/') {
        return Err(err(line, "several sources need a destination ending in /"));
    }
    Ok(Step::Copy {
        sources,
        dest,
        chown,
    })
}

/// The stages a build of `target` (or of the last stage) needs, in order,
/// ending with the target.
pub fn chain<'a>(
    stages: &'a [Stage],
    target: Option<&str>,
) -> Result<Vec<&'a Stage>, DockerfileError> {
    let mut i = match target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| err(1, format!("no stage named {t:?} (build.target)")))?,
    };
    let mut out = vec![&stages[i]];
    while let Some(prev) = stages[i].base.strip_prefix("stage:") {
        i = stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(prev))
            .ok_or_else(|| err(1, format!("no stage named {prev:?}")))?;
        out.push(&stages[i]);
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_args() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn a_three_step_dockerfile() {
        let text = "# syntax comment\nARG BASE=127.0.0.1:5000/dev:latest\nFROM ${BASE}\nENV GREETING=\"hello world\" \\\n    OTHER=x\nWORKDIR /opt/$OTHER\nCOPY --chown=1000:1000 app.sh /opt/\nRUN echo $GREETING > /opt/greeting \\\n && chmod 0644 /opt/greeting\nRUN [\"/bin/sh\", \"-c\", \"true\"]\nUSER 1000\nLABEL team=api\nEXPOSE 3000/tcp\nSHELL [\"/bin/bash\", \"-c\"]\n";
        let stages = parse(text, &no_args()).unwrap();
        assert_eq!(stages.len(), 1);
        let s = &stages[0];
        assert_eq!(s.base, "127.0.0.1:5000/dev:latest");
        let steps: Vec<&Step> = s.steps.iter().map(|(_, st)| st).collect();
        assert_eq!(
            steps[0],
            &Step::Env(vec![
                ("GREETING".into(), "hello world".into()),
                ("OTHER".into(), "x".into())
            ])
        );
        assert_eq!(steps[1], &Step::Workdir("/opt/x".into()));
        assert_eq!(
            steps[2],
            &Step::Copy {
                sources: vec!["app.sh".into()],
                dest: "/opt/".into(),
                chown: Some("1000:1000".into())
            }
        );
        // RUN keeps its variables for the shell; continuations are joined.
        assert_eq!(
            steps[3],
            &Step::Run(Run::Shell(
                "echo $GREETING > /opt/greeting && chmod 0644 /opt/greeting".into()
            ))
        );
        assert_eq!(
            steps[4],
            &Step::Run(Run::Exec(vec![
                "/bin/sh".into(),
                "-c".into(),
                "true".into()
            ]))
        );
        assert_eq!(
            s.steps[3].0, 8,
            "the line of a continued instruction is its first"
        );
        assert_eq!(steps[5], &Step::User("1000".into()));
        // A build arg wins over the default.
        let args = BTreeMap::from([("BASE".to_string(), "other:1".to_string())]);
        assert_eq!(parse(text, &args).unwrap()[0].base, "other:1");
    }

    #[test]
    fn refusals_give_their_line() {
        let table: &[(&str, usize, &str)] = &[
            ("FROM a\nCMD [\"x\"]", 2, "CMD is not supported"),
            ("FROM a\nRUN true\nENTRYPOINT x", 3, "ENTRYPOINT"),
            ("FROM a\nHEALTHCHECK NONE", 2, "HEALTHCHECK"),
            ("FROM a\nVOLUME /data", 2, "VOLUME"),
            ("FROM a\nONBUILD RUN x", 2, "ONBUILD"),
            ("FROM a\nADD https://x/y.tgz /", 2, "URL"),
            ("FROM a\nADD a.tar.gz /", 2, "archive"),
            ("FROM a\nCOPY --from=b x /", 2, "--from"),
            ("FROM a\nCOPY ../secret /", 2, "leaves the build context"),
            (
                "FROM a\nRUN --mount=type=cache,target=/x true",
                2,
                "RUN options",
            ),
            ("FROM a\nRUN <<EOF\necho\nEOF", 2, "heredocs"),
            ("RUN true", 1, "before the first FROM"),
            ("FROM --platform=linux/arm64 a", 1, "FROM options"),
            ("FROM a\nCOPY x", 2, "source and a destination"),
            ("FROM a\nCOPY x y /d", 2, "ending in /"),
            ("FROM a\nSHELL /bin/bash", 2, "JSON array"),
            ("# nothing", 1, "no FROM"),
        ];
        for (text, line, msg) in table {
            let e = parse(text, &no_args()).unwrap_err();
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.to_string().contains(msg), "{text}: {e}");
            assert!(e
                .to_string()
                .starts_with(&format!("Dockerfile line {line}:")));
        }
    }

    #[test]
    fn stages_and_targets() {
        let text =
            "FROM a AS base\nRUN one\nFROM base AS dev\nRUN two\nFROM b AS prod\nRUN three\n";
        let stages = parse(text, &no_args()).unwrap();
        let names = |c: Vec<&Stage>| {
            c.iter()
                .map(|s| s.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(chain(&stages, None).unwrap()), ["prod"]);
        assert_eq!(names(chain(&stages, Some("dev")).unwrap()), ["base", "dev"]);
        assert_eq!(stages[1].base, "stage:base");
        assert!(chain(&stages, Some("nope")).is_err());
    }

    #[test]
    fn substitution() {
        let vars = BTreeMap::from([
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]);
        assert_eq!(
            substitute("$A-${A}-${B:-d}-${E:-e}-${A:+y}-${B:+z}-\\$A-$", &vars),
            "x-x-d-e-y--$A-$"
        );
        assert_eq!(words(r#"a "b c" 'd e' f\ "#), ["a", "b c", "d e", "f\\"]);
        assert_eq!(
            pairs(1, "ENV", "K some value").unwrap(),
            [("K".to_string(), "some value".to_string())]
        );
    }
}
