//! Project detection for a repository without devcontainer.json: from the
//! names of the files at its top, the kind of project and the command that
//! makes it ready (dependencies installed). Pure, tested on tables.

/// What a repository looks like, and how to get it ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// `node`, `python`, `go`, `rust`, `ruby`, `php`, `static` or `none`.
    pub kind: &'static str,
    /// The files that decided it.
    pub because: Vec<&'static str>,
    /// A shell command line run once after the clone (onCreate), if any.
    pub command: Option<&'static str>,
}

/// One rule: all of `needs` present (any of `any` if given) → the verdict.
struct Rule {
    kind: &'static str,
    needs: &'static [&'static str],
    command: Option<&'static str>,
}

/// In order: the first rule whose files are all there wins, so a lock file
/// decides the package manager before the bare manifest does.
const RULES: &[Rule] = &[
    Rule {
        kind: "node",
        needs: &["package.json", "pnpm-lock.yaml"],
        command: Some("pnpm install --frozen-lockfile"),
    },
    Rule {
        kind: "node",
        needs: &["package.json", "yarn.lock"],
        command: Some("yarn install --frozen-lockfile"),
    },
    Rule {
        kind: "node",
        needs: &["package.json", "package-lock.json"],
        command: Some("npm ci --no-audit --no-fund"),
    },
    Rule {
        kind: "node",
        needs: &["package.json"],
        command: Some("npm install --no-audit --no-fund"),
    },
    Rule {
        kind: "python",
        needs: &["requirements.txt"],
        command: Some("python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -r requirements.txt"),
    },
    Rule {
        kind: "python",
        needs: &["pyproject.toml"],
        command: Some("python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -e ."),
    },
    Rule {
        kind: "go",
        needs: &["go.mod"],
        command: Some("go mod download"),
    },
    Rule {
        kind: "rust",
        needs: &["Cargo.toml"],
        command: Some("cargo fetch"),
    },
    Rule {
        kind: "ruby",
        needs: &["Gemfile"],
        command: Some("bundle install"),
    },
    Rule {
        kind: "php",
        needs: &["composer.json"],
        command: Some("composer install --no-interaction"),
    },
    Rule {
        kind: "static",
        needs: &["index.html"],
        command: None,
    },
];

/// Detects the project from the names of the repository's top-level files.
pub fn detect<S: AsRef<str>>(files: &[S]) -> Detected {
    let has = |f: &str| files.iter().any(|x| x.as_ref() == f);
    RULES
        .iter()
        .find(|r| r.needs.iter().all(|f| has(f)))
        .map_or(
            Detected {
                kind: "none",
                because: vec![],
                command: None,
            },
            |r| Detected {
                kind: r.kind,
                because: r.needs.to_vec(),
                command: r.command,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_on_a_table_of_repositories() {
        let table: &[(&[&str], &str, Option<&str>)] = &[
            (&["package.json", "package-lock.json", "README.md"], "node", Some("npm ci --no-audit --no-fund")),
            (&["package.json", "yarn.lock"], "node", Some("yarn install --frozen-lockfile")),
            (&["package.json", "pnpm-lock.yaml", "package-lock.json"], "node", Some("pnpm install --frozen-lockfile")),
            (&["package.json"], "node", Some("npm install --no-audit --no-fund")),
            (&["requirements.txt", "setup.py"], "python", Some("python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -r requirements.txt")),
            (&["pyproject.toml"], "python", Some("python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -e .")),
            (&["go.mod", "go.sum", "main.go"], "go", Some("go mod download")),
            (&["Cargo.toml", "Cargo.lock", "src"], "rust", Some("cargo fetch")),
            (&["Gemfile", "Gemfile.lock"], "ruby", Some("bundle install")),
            (&["composer.json"], "php", Some("composer install --no-interaction")),
            (&["index.html", "style.css"], "static", None),
            // A Node front end beside a Python back end: the first rule wins.
            (&["requirements.txt", "package.json"], "node", Some("npm install --no-audit --no-fund")),
            (&["README.md", "LICENSE"], "none", None),
            (&[], "none", None),
            // A lock file alone is not a project.
            (&["yarn.lock"], "none", None),
        ];
        for (files, kind, command) in table {
            let d = detect(files);
            assert_eq!((d.kind, d.command), (*kind, *command), "{files:?}");
            assert!(d.because.iter().all(|f| files.contains(f)), "{files:?}");
        }
    }
}
