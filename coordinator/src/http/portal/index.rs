//! `/w/index`: the public home index (no sign-in). It lists the running
//! workspaces whose owners made a preview public, each with its project's
//! name and description, read from the workspace itself through the file
//! API (as its user, beneath /workspace): `package.json`, else
//! `pyproject.toml` (`[project]`), else the README's first heading and
//! paragraph; the workspace's name when none says. Nothing of a workspace
//! without a public preview is shown.

use super::page;
use crate::domain::lifecycle::State;
use crate::domain::workspace::WorkspaceRow;
use crate::error::Result;
use crate::http::AppState;
use crate::service::files::FileRead;
use crate::store::WorkspaceFilter;
use axum::extract::State as AxState;
use axum::response::Response;
use maud::{html, DOCTYPE};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Most bytes of a project file read.
const PROJECT_FILE_MAX: u64 = 64 << 10;

/// A project's name and description.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Project {
    pub name: String,
    pub description: String,
}

/// What `package.json`, `pyproject.toml` or a README says, by file name.
pub(super) fn project_of(file: &str, text: &str) -> Option<Project> {
    let p = match file {
        "package.json" => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            Project {
                name: v["name"].as_str()?.to_string(),
                description: v["description"].as_str().unwrap_or("").to_string(),
            }
        }
        "pyproject.toml" => {
            let v: toml::Value = toml::from_str(text).ok()?;
            let project = v.get("project").or_else(|| v.get("tool")?.get("poetry"))?;
            Project {
                name: project.get("name")?.as_str()?.to_string(),
                description: project
                    .get("description")
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .to_string(),
            }
        }
        _ => {
            let mut lines = text.lines().map(str::trim);
            let name = lines
                .find(|l| l.starts_with("# "))?
                .trim_start_matches("# ")
                .to_string();
            let description = lines
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(" ");
            Project { name, description }
        }
    };
    let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    Some(Project {
        name: cut(&p.name, 100),
        description: cut(&p.description, 300),
    })
}

/// The project a running workspace describes, within a second per file.
async fn project(s: &AppState, w: &WorkspaceRow) -> Option<Project> {
    for file in ["package.json", "pyproject.toml", "README.md"] {
        let read = tokio::time::timeout(Duration::from_secs(1), async {
            match s.svc.file_read(w.clone(), file).await.ok()? {
                FileRead::File { entry, body } if entry.size <= PROJECT_FILE_MAX => {
                    let mut text = String::new();
                    body.take(PROJECT_FILE_MAX)
                        .read_to_string(&mut text)
                        .await
                        .ok()?;
                    Some(text)
                }
                _ => None,
            }
        })
        .await
        .ok()
        .flatten();
        if let Some(p) = read.and_then(|t| project_of(file, &t)) {
            return Some(p);
        }
    }
    None
}

/// `/w/index`.
pub(super) async fn index_page(AxState(s): AxState<AppState>) -> Result<Response> {
    let running = s
        .svc
        .workspaces(&WorkspaceFilter {
            state: Some(State::Running),
            ..Default::default()
        })
        .await?;
    let mut shown = Vec::new();
    for w in running {
        let ports = s.svc.public_ports(&w).await?;
        if let Some(port) = ports.first().copied() {
            let p = project(&s, &w).await.unwrap_or_else(|| Project {
                name: w.name.clone(),
                description: String::new(),
            });
            shown.push((w, port, p));
        }
    }
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Workspaces you can visit · Berth" }
                link rel="stylesheet" href="/w/assets/portal.css";
            }
            body {
                header.top { a.brand href="/w/" { "Berth" } nav { a href="/w/login" { "Sign in" } } }
                main {
                    h1 { "Workspaces you can visit" }
                    ul #index.cards {
                        @for (w, port, p) in &shown {
                            li.card {
                                span.icon aria-hidden="true" { (p.name.chars().next().unwrap_or('?').to_uppercase().to_string()) }
                                div {
                                    a href={"/w/" (w.id) "/" (port) "/"} { strong { (p.name) } }
                                    p { (p.description) }
                                    small { (w.owner) " · " (w.name) " · port " (port) }
                                }
                            }
                        }
                        @if shown.is_empty() { li { "No workspace has a public preview now." } }
                    }
                }
            }
        }
    };
    Ok(page(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_say_their_name_and_description() {
        let p = project_of("package.json", r#"{"name":"shop","description":"A shop"}"#).unwrap();
        assert_eq!(
            (p.name.as_str(), p.description.as_str()),
            ("shop", "A shop")
        );
        let p = project_of(
            "pyproject.toml",
            "[project]\nname = \"api\"\ndescription = \"An API\"\n",
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.description.as_str()), ("api", "An API"));
        let p = project_of("README.md", "# Notes\n\nKeeps notes.\nFast.\n\n## More\n").unwrap();
        assert_eq!(
            (p.name.as_str(), p.description.as_str()),
            ("Notes", "Keeps notes. Fast.")
        );
        assert!(project_of("package.json", "{not json").is_none());
        assert!(project_of("package.json", r#"{"description":"no name"}"#).is_none());
        assert!(project_of("README.md", "no heading").is_none());
    }
}
