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

/// Checks a dotfiles repository's URL (as a repository's, with its own
/// code).
pub fn check_dotfiles(url: &str) -> Result<()> {
    let r = Repo {
        url: url.to_string(),
        ..Repo::default()
    };
    check(&r).map_err(|e| Error::invalid("invalid_dotfiles", e.to_string()))
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
    // What the schema's pattern says (after the parser's refusals, which
    // say more).
    let rest = r
        .url
        .strip_prefix("https://")
        .or_else(|| r.url.strip_prefix("http://"));
    if let Some(rest) = rest {
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path_char = |b: u8| b.is_ascii_alphanumeric() || b"._~/-".contains(&b);
        let last_ok = path
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"_~-".contains(&b));
        if !is_host(host) || path.len() < 2 || !path.bytes().all(path_char) || !last_ok {
            return Err(bad(format!(
                "url {:?}: http(s)://HOST[:PORT]/PATH, the path of letters, digits and ._~/-",
                r.url
            )));
        }
    }
    if u.path().trim_matches('/').is_empty() {
        return Err(bad("url: no repository path"));
    }
    if let Some(b) = &r.branch {
        branch(b)?;
    }
    if let Some(c) = &r.commit {
        let ok = (4..=64).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(bad(format!("commit {c:?}: 4 to 64 hex digits")));
        }
    }
    if let Some(cmd) = &r.init_command {
        if cmd.chars().count() > 4096 || cmd.contains('\0') {
            return Err(bad("init_command: at most 4096 characters, no NUL"));
        }
    }
    Ok(())
}

/// A branch name git would take (`git check-ref-format --branch`, in short).
/// A branch as the API's pattern describes it: components of letters,
/// digits and `_+-` separated by single `/` or `.`, not starting with `-`
/// (stricter than git's rules, which a pattern cannot state).
fn branch(b: &str) -> Result<()> {
    let sep = |c: char| c == '/' || c == '.';
    let ok = !b.is_empty()
        && b.len() <= 255
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-./".contains(c))
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(sep)
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("/.")
        && !b.contains("./");
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "branch {b:?}: letters, digits and _+- in parts separated by / or ."
        )))
    }
}

/// Whether `h` is `host[:port]` as the API's patterns describe it: an IPv4
/// address in dotted decimal, or DNS labels (letters, digits, `-`) whose last
/// starts with a letter; a port 1 to 65535 without leading zeros. Any case.
fn is_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && !p.starts_with('0')
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    let labels: Vec<&str> = host.split('.').collect();
    let octet = |l: &&str| {
        !l.is_empty()
            && l.len() <= 3
            && l.bytes().all(|b| b.is_ascii_digit())
            && (l.len() == 1 || !l.starts_with('0'))
            && l.parse::<u32>().is_ok_and(|n| n <= 255)
    };
    let ipv4 = labels.len() == 4 && labels.iter().all(octet);
    let label = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let dns = labels.iter().all(label)
        && labels
            .last()
            .is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic());
    port_ok && (ipv4 || dns)
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
    if h.is_empty() || h.len() > 253 + 6 || !is_host(h) {
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
        for ok in ["main", "feature/x", "release-1.2", "a_b", "a/-b", "v1+x"] {
            assert!(check(&with(Some(ok), None)).is_ok(), "{ok}");
        }
        for no in [
            "", "-x", "a..b", "a b", "a~1", "a//b", "x/", "@", "a:b", "a\u{7f}", "a#b", "ü", "a./b",
        ] {
            assert!(check(&with(Some(no), None)).is_err(), "{no:?}");
        }
        assert!(check(&with(None, Some("0123abcd"))).is_ok());
        for no in ["abc", "xyz1", "ABCD", &"a".repeat(65)] {
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
            "250.250.250.250*",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "123",
            "h:0",
            "h:65536",
            "h:080",
            "-a.example",
            "a.example-",
        ] {
            assert!(credential_host(no).is_err(), "{no}");
        }
    }
}
