//! Pull-request webhooks (docs/prebuilds.md), pure: what a GitHub
//! `pull_request` or GitLab `Merge Request Hook` event says, and the name
//! of the workspace a pull request gets.

use super::webhook::{Refused, Source};

/// What happened to the pull request, as far as its workspace goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Opened or reopened: it gets a workspace.
    Open,
    /// New commits on its branch.
    Update,
    /// Closed or merged: its workspace goes.
    Close,
}

/// A pull (merge) request event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The target repository's URLs the event names.
    pub urls: Vec<String>,
    pub number: u64,
    pub action: Action,
    /// Its branch and head commit.
    pub branch: String,
    pub commit: String,
    /// The branch it is to be merged into.
    pub base: String,
    /// Its branch is in another repository (a fork).
    pub from_fork: bool,
}

/// Whether the event header names a pull-request event.
pub fn is_event(source: Source, event: &str) -> bool {
    match source {
        Source::GitHub => event == "pull_request",
        Source::GitLab => event == "Merge Request Hook",
    }
}

/// Reads a pull-request event's body; `None` for an action that does not
/// concern its workspace (labelled, edited, approved, ...).
pub fn parse(source: Source, body: &[u8]) -> Result<Option<PullRequest>, Refused> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refused::Invalid(e.to_string()))?;
    let text = |p: &str| v.pointer(p).and_then(|s| s.as_str()).map(String::from);
    let need = |p: &str| text(p).ok_or_else(|| Refused::Invalid(format!("no {p}")));
    let (action, number, branch, commit, base, from_fork, pointers) = match source {
        Source::GitHub => (
            need("/action")?,
            v.pointer("/number").and_then(|n| n.as_u64()),
            need("/pull_request/head/ref")?,
            need("/pull_request/head/sha")?,
            need("/pull_request/base/ref")?,
            text("/pull_request/head/repo/full_name") != text("/pull_request/base/repo/full_name"),
            &[
                "/repository/clone_url",
                "/repository/html_url",
                "/repository/url",
            ][..],
        ),
        Source::GitLab => (
            need("/object_attributes/action")?,
            v.pointer("/object_attributes/iid").and_then(|n| n.as_u64()),
            need("/object_attributes/source_branch")?,
            need("/object_attributes/last_commit/id")?,
            need("/object_attributes/target_branch")?,
            v.pointer("/object_attributes/source_project_id")
                != v.pointer("/object_attributes/target_project_id"),
            &["/project/git_http_url", "/project/web_url"][..],
        ),
    };
    let number = number.ok_or_else(|| Refused::Invalid("no pull request number".into()))?;
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || !(4..=64).contains(&commit.len()) {
        return Err(Refused::Invalid(format!("{commit:?} is not a commit")));
    }
    let action = match action.as_str() {
        "opened" | "reopened" | "open" | "reopen" => Action::Open,
        "synchronize" | "update" => Action::Update,
        "closed" | "close" | "merge" => Action::Close,
        _ => return Ok(None),
    };
    let urls: Vec<String> = pointers.iter().filter_map(|p| text(p)).collect();
    if urls.is_empty() {
        return Err(Refused::Invalid("no repository URL".into()));
    }
    Ok(Some(PullRequest {
        urls,
        number,
        action,
        branch,
        commit: commit.to_ascii_lowercase(),
        base,
        from_fork,
    }))
}

/// The workspace of pull request `number` of `repo_url`: `pr-N-REPO`, a
/// workspace name (at most 40 of a-z, 0-9 and '-').
pub fn workspace_name(repo_url: &str, number: u64) -> String {
    let repo = repo_url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit('/')
        .next()
        .unwrap_or("");
    let slug: String = repo
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("pr-{number}-{slug}");
    name.truncate(40);
    let name = name.trim_end_matches('-');
    let mut out = String::new();
    for c in name.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_and_gitlab_pull_requests_are_read() {
        let gh = |action: &str, head_repo: &str| {
            serde_json::json!({
                "action": action, "number": 42,
                "pull_request": {
                    "head": {"ref": "feature", "sha": "ABCDEF01", "repo": {"full_name": head_repo}},
                    "base": {"ref": "main", "repo": {"full_name": "a/b"}},
                },
                "repository": {"clone_url": "https://g.example/a/b.git"},
            })
            .to_string()
        };
        let p = parse(Source::GitHub, gh("opened", "a/b").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                p.number,
                p.action,
                p.branch.as_str(),
                p.commit.as_str(),
                p.base.as_str()
            ),
            (42, Action::Open, "feature", "abcdef01", "main")
        );
        assert!(!p.from_fork);
        assert!(
            parse(Source::GitHub, gh("reopened", "fork/b").as_bytes())
                .unwrap()
                .unwrap()
                .from_fork
        );
        for (action, want) in [
            ("synchronize", Some(Action::Update)),
            ("closed", Some(Action::Close)),
            ("labeled", None),
        ] {
            let got = parse(Source::GitHub, gh(action, "a/b").as_bytes()).unwrap();
            assert_eq!(got.map(|p| p.action), want, "{action}");
        }
        let gl = serde_json::json!({
            "object_kind": "merge_request",
            "project": {"git_http_url": "http://gl.example/g/p.git"},
            "object_attributes": {
                "action": "merge", "iid": 7, "source_branch": "fix", "target_branch": "main",
                "source_project_id": 1, "target_project_id": 1, "last_commit": {"id": "0123abcd"},
            },
        })
        .to_string();
        let p = parse(Source::GitLab, gl.as_bytes()).unwrap().unwrap();
        assert_eq!((p.number, p.action, p.from_fork), (7, Action::Close, false));
        assert!(is_event(Source::GitLab, "Merge Request Hook"));
        assert!(!is_event(Source::GitHub, "push"));
        for bad in [
            "not json".to_string(),
            gh("opened", "a/b").replace("ABCDEF01", "../x"),
            gh("opened", "a/b").replace("\"number\":42,", ""),
        ] {
            assert!(parse(Source::GitHub, bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn pull_request_workspaces_have_valid_names() {
        for (url, n, want) in [
            ("https://g.example/a/api.git", 42, "pr-42-api"),
            ("https://g.example/a/My_Repo/", 7, "pr-7-my-repo"),
            (
                "https://g.example/a/a-very-long-repository-name-that-goes-on.git",
                123456,
                "pr-123456-a-very-long-repository-name-th",
            ),
            ("https://g.example/a/x--", 1, "pr-1-x"),
        ] {
            let name = workspace_name(url, n);
            assert_eq!(name, want);
            assert!(
                crate::domain::validate::workspace_name(&name).is_ok(),
                "{name}"
            );
        }
    }
}
