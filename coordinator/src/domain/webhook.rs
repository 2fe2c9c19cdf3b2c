//! Git push webhooks (docs/prebuilds.md), pure: which repositories start
//! prebuilds on a push (the configuration's `[[prebuilds.repos]]`), what a
//! GitHub or GitLab push event says, and whether its signature is the
//! repository's secret's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A repository whose pushes start prebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedRepo {
    /// The URL workspaces are created with (what the prebuild is of).
    pub url: String,
    /// Branches a push to starts a prebuild; others are ignored.
    pub branches: Vec<String>,
    /// The webhook's secret: GitHub signs the body with it (HMAC-SHA256),
    /// GitLab sends it as a token.
    pub secret: String,
    pub image: Option<String>,
    pub tier: Option<String>,
    /// Owner of the workspaces its pull requests get (None: no such workspaces).
    pub pull_request_owner: Option<String>,
}

/// The prebuild settings of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrebuildPolicy {
    pub repos: Vec<WatchedRepo>,
    /// Ready prebuilds kept per repository and branch (older ones go).
    pub keep: usize,
    /// Registry repository (host[:port]/path) prebuild layers are pushed
    /// to, so other nodes can pull them; None: each stays on its node.
    pub registry: Option<String>,
    /// Nodes asked to pull a new prebuild ahead of demand.
    pub pull_ahead: usize,
}

impl Default for PrebuildPolicy {
    fn default() -> Self {
        Self {
            repos: Vec::new(),
            keep: 3,
            registry: None,
            pull_ahead: 2,
        }
    }
}

/// Where a webhook comes from, by its event header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    GitHub,
    GitLab,
}

/// A push, as the event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The repository's URLs the event names (clone URL, web URL, ...).
    pub urls: Vec<String>,
    pub branch: String,
    /// The commit pushed (all zeros: the branch was deleted).
    pub commit: String,
}

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the body is not a push event: {0}")]
    Invalid(String),
    #[error("no [[prebuilds.repos]] entry is this repository")]
    UnknownRepo,
    #[error("the signature is not the repository's secret's")]
    BadSignature,
}

/// `https://git.example/a/b.git`, `https://git.example/a/b` and
/// `git.example/a/b/` name the same repository.
pub fn same_repo(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> String {
        let u = u.split_once("://").map_or(u, |(_, rest)| rest);
        u.trim_end_matches('/')
            .trim_end_matches(".git")
            .to_ascii_lowercase()
    }
    norm(a) == norm(b)
}

/// Reads a push event's body; `None` for another kind of event (a ping)
/// or a push that is not to a branch (a tag).
pub fn parse(source: Source, event: &str, body: &[u8]) -> Result<Option<Push>, Refused> {
    let is_push = match source {
        Source::GitHub => event == "push",
        Source::GitLab => event == "Push Hook",
    };
    if !is_push {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Refused::Invalid(e.to_string()))?;
    let text = |p: &str| v.pointer(p).and_then(|s| s.as_str()).map(String::from);
    let git_ref = text("/ref").ok_or_else(|| Refused::Invalid("no \"ref\"".into()))?;
    let commit = text("/after").ok_or_else(|| Refused::Invalid("no \"after\"".into()))?;
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || !(4..=64).contains(&commit.len()) {
        return Err(Refused::Invalid(format!(
            "\"after\" {commit:?} is not a commit"
        )));
    }
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(None);
    };
    let pointers: &[&str] = match source {
        Source::GitHub => &[
            "/repository/clone_url",
            "/repository/html_url",
            "/repository/url",
        ],
        Source::GitLab => &[
            "/project/git_http_url",
            "/project/web_url",
            "/repository/git_http_url",
            "/repository/homepage",
        ],
    };
    let urls: Vec<String> = pointers.iter().filter_map(|p| text(p)).collect();
    if urls.is_empty() {
        return Err(Refused::Invalid("no repository URL".into()));
    }
    Ok(Some(Push {
        urls,
        branch: branch.to_string(),
        commit: commit.to_ascii_lowercase(),
    }))
}

/// Whether `signature` (GitHub's `X-Hub-Signature-256: sha256=<hex>`, or
/// GitLab's `X-Gitlab-Token`) is `secret`'s for `body`; compared in
/// constant time.
pub fn verify(source: Source, secret: &str, body: &[u8], signature: &str) -> bool {
    match source {
        Source::GitHub => {
            let Some(hex_sig) = signature.strip_prefix("sha256=") else {
                return false;
            };
            let Ok(sig) = hex::decode(hex_sig) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        }
        Source::GitLab => {
            // The same comparison, of the token's MAC under a fixed key,
            // so its time does not depend on where the strings differ.
            let tag = |s: &str| {
                Hmac::<Sha256>::new_from_slice(b"berth-gitlab-token")
                    .ok()
                    .map(|mut m| {
                        m.update(s.as_bytes());
                        m.finalize().into_bytes()
                    })
            };
            let want = tag(secret);
            !secret.is_empty() && want.is_some() && want == tag(signature)
        }
    }
}

/// What to do about a push: the repository it is to and whether its
/// branch is one a prebuild is kept of.
pub fn route<'a>(
    policy: &'a PrebuildPolicy,
    push: &Push,
) -> Result<(&'a WatchedRepo, bool), Refused> {
    let repo = repo_of(policy, &push.urls)?;
    let watched = repo.branches.contains(&push.branch);
    Ok((repo, watched))
}

/// The configured repository an event's `urls` name.
pub fn repo_of<'a>(
    policy: &'a PrebuildPolicy,
    urls: &[String],
) -> Result<&'a WatchedRepo, Refused> {
    policy
        .repos
        .iter()
        .find(|r| urls.iter().any(|u| same_repo(u, &r.url)))
        .ok_or(Refused::UnknownRepo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(body);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    }

    #[test]
    fn github_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign("s3cret", body);
        assert!(verify(Source::GitHub, "s3cret", body, &good));
        for bad in [
            sign("other", body),
            good.replace("sha256=", "sha1="),
            "sha256=zz".into(),
            String::new(),
        ] {
            assert!(!verify(Source::GitHub, "s3cret", body, &bad), "{bad}");
        }
        assert!(
            !verify(Source::GitHub, "s3cret", b"{}", &good),
            "another body"
        );
        assert!(verify(Source::GitLab, "tok", body, "tok"));
        assert!(!verify(Source::GitLab, "tok", body, "tok2"));
        assert!(!verify(Source::GitLab, "", body, ""));
    }

    #[test]
    fn push_events_are_read() {
        let gh = br#"{"ref":"refs/heads/main","after":"ABCDEF0123","repository":{"clone_url":"https://g.example/a/b.git","html_url":"https://g.example/a/b"}}"#;
        let p = parse(Source::GitHub, "push", gh).unwrap().unwrap();
        assert_eq!(p.branch, "main");
        assert_eq!(p.commit, "abcdef0123");
        assert_eq!(p.urls.len(), 2);
        let gl = br#"{"object_kind":"push","ref":"refs/heads/dev","after":"0123abcd","project":{"git_http_url":"http://gl.example/g/p.git"}}"#;
        let p = parse(Source::GitLab, "Push Hook", gl).unwrap().unwrap();
        assert_eq!(
            (p.branch.as_str(), p.urls[0].as_str()),
            ("dev", "http://gl.example/g/p.git")
        );
        // Not a push, or not to a branch: nothing to do.
        assert_eq!(parse(Source::GitHub, "ping", b"{}").unwrap(), None);
        let tag = br#"{"ref":"refs/tags/v1","after":"0123abcd","repository":{"clone_url":"x"}}"#;
        assert_eq!(parse(Source::GitHub, "push", tag).unwrap(), None);
        for bad in [
            &b"not json"[..],
            br#"{"after":"0123abcd"}"#,
            br#"{"ref":"refs/heads/m","after":"../x","repository":{"clone_url":"x"}}"#,
            br#"{"ref":"refs/heads/m","after":"0123abcd"}"#,
        ] {
            assert!(parse(Source::GitHub, "push", bad).is_err());
        }
    }

    #[test]
    fn pushes_are_routed_to_their_repository_and_branches() {
        let policy = PrebuildPolicy {
            repos: vec![WatchedRepo {
                url: "http://g.example/a/b.git".into(),
                branches: vec!["main".into()],
                secret: "s".into(),
                image: None,
                tier: None,
                pull_request_owner: None,
            }],
            ..Default::default()
        };
        let push = |url: &str, branch: &str| Push {
            urls: vec![url.into()],
            branch: branch.into(),
            commit: "abcd".into(),
        };
        assert!(
            route(&policy, &push("https://G.example/a/b/", "main"))
                .unwrap()
                .1
        );
        assert!(
            !route(&policy, &push("http://g.example/a/b", "dev"))
                .unwrap()
                .1
        );
        assert_eq!(
            route(&policy, &push("http://g.example/a/c", "main")).unwrap_err(),
            Refused::UnknownRepo
        );
    }
}
