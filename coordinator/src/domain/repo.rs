//! The repository a workspace is made from, checked before anything is
//! stored, and the host a git credential is kept for. Pure.

use crate::error::{Error, Result};
use berth_proto::api::Repo;

fn bad(why: impl Into<String>) -> Error {
    Error::invalid("invalid_repo", why)
}

/// The host (with its port, if the URL names one) of an http(s) URL: what
/// a user's git credentials are keyed by.
pub fn host_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Checks a repository of a create request.
pub fn check(r: &Repo) -> Result<()> {
    if r.url.len() > 2048 {
        return Err(bad("url: at most 2048 characters"));
    }
    let u = url::Url::parse(&r.url).map_err(|e| bad(format!("url {:?}: {e}", r.url)))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad(format!(
            "url: {}:// is not supported; give an http(s) URL",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("url: no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "url: credentials in the URL would be kept in the clone's .git/config; add them with `berth git-credential add`",
        ));
    }
    if u.path().trim_matches('/').is_empty() {
        return Err(bad("url: no repository path"));
    }
    if let Some(b) = &r.branch {
        branch(b)?;
    }
    if let Some(c) = &r.commit {
        let ok = (4..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(bad(format!("commit {c:?}: 4 to 64 hex digits")));
        }
    }
    if let Some(cmd) = &r.init_command {
        if cmd.len() > 4096 || cmd.contains('\0') {
            return Err(bad("init_command: at most 4096 characters, no NUL"));
        }
    }
    Ok(())
}

/// A branch name git would take (`git check-ref-format --branch`, in short).
fn branch(b: &str) -> Result<()> {
    let ok = !b.is_empty()
        && b.len() <= 255
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("@{")
        && !b.contains("/.")
        && b != "@"
        && !b
            .chars()
            .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("branch {b:?} is not a valid branch name")))
    }
}

/// Checks the host of a git credential: a host name or address, with an
/// optional port, as repository URLs name it.
pub fn credential_host(h: &str) -> Result<String> {
    let bad = || {
        Error::invalid(
            "invalid_git_host",
            format!("host {h:?}: a host name such as git.example or git.example:8443"),
        )
    };
    if h.is_empty() || h.len() > 253 + 6 {
        return Err(bad());
    }
    let parsed = host_of(&format!("https://{h}/")).ok_or_else(bad)?;
    // What the URL parser made of it must be what was given (no path, no user).
    let given = h.to_ascii_lowercase();
    if parsed != given && parsed != given.trim_end_matches(":443") {
        return Err(bad());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> Repo {
        Repo {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn urls() {
        assert!(check(&repo("https://git.example/team/api.git")).is_ok());
        assert!(check(&repo("http://10.0.0.2:8080/r.git")).is_ok());
        for bad_url in [
            "git@git.example:team/api.git",
            "ssh://git.example/api.git",
            "file:///etc/passwd",
            "https://user:tok@git.example/api.git",
            "https://tok@git.example/api.git",
            "https://git.example",
            "https://git.example/",
            "not a url",
        ] {
            let e = check(&repo(bad_url)).unwrap_err();
            assert_eq!(e.code, "invalid_repo", "{bad_url}");
        }
        assert_eq!(
            host_of("https://Git.Example/a").as_deref(),
            Some("git.example")
        );
        assert_eq!(host_of("http://h:8080/a").as_deref(), Some("h:8080"));
    }

    #[test]
    fn branches_and_commits() {
        let with = |b: Option<&str>, c: Option<&str>| Repo {
            url: "https://h/r".into(),
            branch: b.map(String::from),
            commit: c.map(String::from),
            ..Default::default()
        };
        for ok in ["main", "feature/x", "release-1.2", "a_b"] {
            assert!(check(&with(Some(ok), None)).is_ok(), "{ok}");
        }
        for no in [
            "", "-x", "a..b", "a b", "a~1", "a//b", "x/", "@", "a:b", "a\u{7f}",
        ] {
            assert!(check(&with(Some(no), None)).is_err(), "{no:?}");
        }
        assert!(check(&with(None, Some("0123abcd"))).is_ok());
        for no in ["abc", "xyz1", &"a".repeat(65)] {
            assert!(check(&with(None, Some(no))).is_err(), "{no}");
        }
    }

    #[test]
    fn credential_hosts() {
        assert_eq!(credential_host("git.example").unwrap(), "git.example");
        assert_eq!(
            credential_host("Git.Example:8443").unwrap(),
            "git.example:8443"
        );
        assert_eq!(credential_host("10.1.2.3:8080").unwrap(), "10.1.2.3:8080");
        for no in [
            "",
            "https://git.example",
            "git.example/x",
            "u@git.example",
            "a b",
        ] {
            assert!(credential_host(no).is_err(), "{no}");
        }
    }
}
